//! CF-ViT: Coarse-to-Fine Vision Transformer (Chen et al., AAAI 2023, arXiv 2203.03821; official
//! code `ChenMnZ/CF-ViT`).
//!
//! A ViT classifies a coarse grid of large patches first and stops when its confidence reaches
//! a threshold; otherwise the informative coarse patches (by class attention accumulated across
//! blocks, [`regions`]) are re-split into 2 x 2 fine patches, the coarse features are re-used
//! ([`reuse`]) and the same network classifies the longer sequence ([`model`]). Backbones:
//! DeiT and LV-ViT ([`backbone`]); the joint loss ([`loss`]); the accuracy / MACs curve
//! ([`budget`]); training ([`trainer`]); `cargo xtask reproduce cf-vit` ([`reproduce`]) and the
//! throughput measurement ([`throughput`]).

pub mod backbone;
pub mod budget;
pub mod build;
pub mod config;
pub mod error;
pub mod loss;
pub mod model;
pub mod paper;
pub mod regions;
pub mod reproduce;
pub mod resize;
pub mod reuse;
pub mod throughput;
pub mod trainer;

pub use backbone::{LvVit, LvVitConfig, Stage, TokenBackbone, vit_macs};
pub use budget::{BudgetPoint, StageRecords, budget_curve, eta_grid};
pub use config::CfVitConfig;
pub use error::{CfVitError, Result};
pub use loss::{Target, cf_loss};
pub use model::{CfVit, CoarseOut, Inference};
pub use regions::{ClassAttention, Selection, child_indices};
