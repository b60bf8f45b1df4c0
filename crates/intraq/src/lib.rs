//! IntraQ: zero-shot quantization with synthetic images that keep intra-class heterogeneity
//! (Zhong et al., CVPR 2022, arXiv 2111.09136; official code `zysxmu/IntraQ`).
//!
//! Stage 1 synthesises images from the full-precision teacher's BatchNorm statistics
//! (`compress_synth`'s loop) with IntraQ's own terms ([`synthesis`]: local object reinforcement,
//! the marginal distance constraint to class [`centres`], the soft inception loss of
//! [`losses`]); stage 2 calibrates the activation ranges of the fake-quantized student
//! (`compress_core::quant::{asym, range}`) and fine-tunes it with distillation ([`mod@finetune`]).
//! The section-9 network and its quantized form ([`net`]), intra-class diversity ([`metrics`])
//! and `cargo xtask reproduce intraq` ([`reproduce`]); the paper's settings ([`paper`]) and its
//! pipeline on pytorchcv teachers and the real test sets ([`paper_run`]).

pub mod centres;
pub mod error;
pub mod finetune;
pub mod losses;
pub mod metrics;
pub mod net;
pub mod paper;
pub mod paper_run;
pub mod reproduce;
pub mod synthesis;

pub use error::{IntraqError, Result};
pub use finetune::{FinetuneConfig, calibrate, finetune, lr_at_epoch};
pub use metrics::intra_class_cosine_distance;
pub use net::DigitCnn;
pub use synthesis::{Intraq, IntraqTerms};
