//! DDTB: Dynamic Dual Trainable Bounds for ultra-low-bit super-resolution networks (Zhong et al.,
//! ECCV 2022, arXiv 2203.03844; official code `zysxmu/DDTB`).
//!
//! Status: the method's building blocks, tested against the spec's worked examples: the
//! dual-bound activation quantizer with its phases ([`DualBoundActQuant`]), the 2-bit dynamic
//! gate ([`DynamicGate`]), dynamic-intensity statistics and selection ([`intensity`]), PAMS'
//! symmetric activation quantizer ([`PamsActQuant`]) and the learning-rate schedule
//! ([`schedule`]). The quantized EDSR/RDN/SRResNet builders, the trainer and
//! `cargo xtask reproduce ddtb` are not written yet.

pub mod act_quant;
pub mod error;
pub mod gate;
pub mod intensity;
pub mod pams;
pub mod schedule;

pub use act_quant::{BoundInit, DualBoundActQuant, Phase};
pub use error::{DdtbError, Result};
pub use gate::DynamicGate;
pub use intensity::{RangeStats, dynamic_intensity, select_dynamic};
pub use pams::PamsActQuant;
