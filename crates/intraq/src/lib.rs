//! IntraQ: zero-shot quantization with synthetic images that keep intra-class heterogeneity
//! (Zhong et al., CVPR 2022, arXiv 2111.09136; official code `zysxmu/IntraQ`).
//!
//! Stage 1 synthesises images from the full-precision teacher's BatchNorm statistics with
//! local object reinforcement, the marginal distance constraint and the soft inception loss
//! (`compress_synth`); stage 2 calibrates the activation ranges of the fake-quantized student
//! (`compress_core::quant::{asym, range}`) and fine-tunes it with distillation ([`finetune`]).
//! The section-9 network and its quantized form ([`net`]), intra-class diversity ([`metrics`])
//! and `cargo xtask reproduce intraq` ([`reproduce`]); the paper's settings ([`paper`]) and its
//! pipeline on pytorchcv teachers and the real test sets ([`paper_run`]).

pub mod error;
pub mod finetune;
pub mod metrics;
pub mod net;
pub mod paper;
pub mod paper_run;
pub mod reproduce;

pub use error::{IntraqError, Result};
pub use finetune::{FinetuneConfig, calibrate, finetune, lr_at_epoch};
pub use metrics::intra_class_cosine_distance;
pub use net::DigitCnn;
