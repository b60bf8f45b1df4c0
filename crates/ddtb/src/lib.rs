//! DDTB: Dynamic Dual Trainable Bounds for ultra-low-bit super-resolution networks (Zhong et al.,
//! ECCV 2022, arXiv 2203.03844; official code `zysxmu/DDTB`).
//!
//! The dual-bound activation quantizer with its phases ([`DualBoundActQuant`]), the 2-bit
//! dynamic gate ([`DynamicGate`]), dynamic-intensity selection ([`intensity`]), PAMS' baseline
//! quantizer ([`PamsActQuant`]); quantized EDSR / RDN / SRResNet with the paper's placement
//! ([`models`]); the training recipe and the paper's table ([`config`]); quantization-aware
//! training with distillation ([`trainer`]); `cargo xtask reproduce ddtb` ([`reproduce`]) and
//! the step-cost measurement ([`overhead`]).

pub mod act_quant;
pub mod config;
pub mod error;
pub mod gate;
pub mod intensity;
pub mod models;
pub mod overhead;
pub mod pams;
pub mod reproduce;
pub mod schedule;
pub mod scheme;
pub mod trainer;

pub use act_quant::{BoundInit, DualBoundActQuant, Phase};
pub use config::{Arm, DdtbConfig, PAPER_TABLE, PaperRow};
pub use error::{DdtbError, Result};
pub use gate::DynamicGate;
pub use intensity::{RangeStats, dynamic_intensity, select_dynamic};
pub use models::{QuantSr, SrArch, SrOutput};
pub use pams::PamsActQuant;
pub use scheme::{ActQuant, ActScheme, QuantConv2d, QuantScheme};
