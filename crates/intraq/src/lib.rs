//! IntraQ: zero-shot quantization with synthetic images that keep intra-class heterogeneity
//! (Zhong et al., CVPR 2022, arXiv 2111.09136; official code `zysxmu/IntraQ`).
//!
//! # Use it on your model
//!
//! Build the network from `compress_nn::layers` (the quantizers sit in its `Conv2d`, `Linear` and
//! `Activation`; synthesis matches its BatchNorm statistics) as a `compress_nn::Network`, train
//! it, and call [`quantize`] with IntraQ's settings ([`IntraqSettings`]) and a fine-tuning
//! recipe ([`FinetuneConfig`]); [`export_weights`] writes the student's integer weights. A network
//! that goes through no quantization site is refused with an error naming its type.
//! `crates/intraq/examples/digit_cnn.rs` runs it end to end on a CNN of its own. The calls:
//!
//! ```no_run
//! # use compress_nn::{Network, zoo::{ResNetCifar, ResNetCifarConfig}};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let teacher = Network::<ResNetCifar>::new(ResNetCifarConfig::new(20, 10)?, 0, &candle_core::Device::Cpu)?;
//! # let test = compress_data::embedded::mnist_5k_digits(None, Some(10))?.1;
//! // `teacher`: your trained full-precision network; `test`: labelled data, evaluated only.
//! let settings = intraq::IntraqSettings::official(4, 4, [3, 32, 32], 10); // W4A4, CIFAR-10's loop
//! let recipe = intraq::FinetuneConfig::mini();
//! let q = intraq::quantize(&teacher, &settings, &recipe, &test, 0, std::path::Path::new("runs"))?;
//! println!("W4A4: {:.1} % calibrated, {:?} % fine-tuned", q.calibrated_top1, q.evals);
//! let codes = intraq::export_weights(compress_nn::Model::varmap(&q.student), 4)?; // QuantizedTensor per weight
//! # Ok(()) }
//! ```
//!
//! # Modules
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
pub mod method;
pub mod metrics;
pub mod net;
pub mod paper;
pub mod paper_run;
pub mod reproduce;
pub mod synthesis;

pub use error::{IntraqError, Result};
pub use finetune::{FinetuneConfig, calibrate, finetune, lr_at_epoch};
pub use method::{IntraqSettings, Quantization, export_weights, quantize, sites, unquantized_weights};
pub use metrics::intra_class_cosine_distance;
pub use net::DigitCnn;
pub use synthesis::{Intraq, IntraqTerms};
