//! CF-ViT: Coarse-to-Fine Vision Transformer (Chen et al., AAAI 2023, arXiv 2203.03821; official
//! code `ChenMnZ/CF-ViT`).
//!
//! # Use it on your model
//!
//! Implement [`TokenBackbone`] for your vision transformer (a patch embedding that takes both
//! resolutions, blocks that return their attention map, the norm and the classifier), wrap it in
//! [`CfVit::new`], train both stages with [`CfVit::forward_train`] and [`cf_loss`], and run
//! [`CfVit::infer`] with a confidence threshold. `crates/cf-vit/examples/conv_stem_vit.rs` does
//! this for a ViT with a convolutional stem. Here the zoo's ViT stands in for yours:
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarMap;
//! use cf_vit::{CfVit, CfVitConfig, Selection, Target, cf_loss};
//! use compress_nn::{Architecture, zoo::{Vit, VitConfig}};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = CfVitConfig::mini(); // coarse 4 x 4 patches, fine 8 x 8, of a 32-px image
//! let (varmap, dev) = (VarMap::new(), Device::Cpu);
//! let vb = compress_nn::init::seeded_builder(&varmap, 0, DType::F32, &dev);
//! let vit = Vit::build(&VitConfig::new(32, 4, 32, 2, 2, 64, 10)?.channels(1), vb.clone())?;
//! let model = CfVit::new(vit, cfg, vb, varmap.clone())?;
//! let x = Tensor::randn(0f32, 1.0, (2, 1, 32, 32), &dev)?;
//! let (y_c, y_f) = model.forward_train(&x, Selection::Informative, true)?;
//! let labels = Tensor::new(&[3u32, 7], &dev)?;
//! let _grads = cf_loss(&y_c, &y_f, Target::Hard(&labels, 0.1))?.backward()?;
//! let out = model.infer(&x, 0.9)?; // coarse logits where confident, fine elsewhere
//! assert_eq!((out.logits.dims(), out.exited.len()), (&[2, 10][..], 2));
//! # Ok(()) }
//! ```
//!
//! # Modules
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
pub use compress_nn::layers::resize;
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
