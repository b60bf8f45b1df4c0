//! DDTB: Dynamic Dual Trainable Bounds for ultra-low-bit super-resolution networks (Zhong et al.,
//! ECCV 2022, arXiv 2203.03844; official code `zysxmu/DDTB`).
//!
//! # Use it on your model
//!
//! Write your SR network once against a [`scheme::QuantScheme`] (an [`ActQuant`] at each
//! activation site, a [`QuantConv2d`] for each body conv), implement [`QuantSr`] for it and
//! [`SrNet`] for the code that builds it, train it in full precision, then call [`quantize`]
//! with DDTB's settings ([`DdtbSettings`]) and a training recipe ([`SrRecipe`]).
//! `crates/ddtb/examples/tiny_sr.rs` does this for a 2-block residual x2 network. Here the paper's
//! EDSR (an [`SrArch`], itself an [`SrNet`]) stands in for yours:
//!
//! ```
//! use candle_core::{DType, Device};
//! use compress_data::embedded::photos_12_first;
//! use compress_nn::zoo::EdsrConfig;
//! use ddtb::{DdtbSettings, SrArch, SrNet, SrRecipe, scheme::QuantScheme};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let net = SrArch::Edsr(EdsrConfig::new(2, 1, 8, 1.0)?);
//! let varmap = candle_nn::VarMap::new(); // your trained full-precision weights
//! net.build(&QuantScheme::full_precision(), compress_nn::init::seeded_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
//! let fp = compress_nn::model_tensors(&*varmap.data().lock().map_err(|_| "lock")?);
//! let pairs = photos_12_first("train", 2, Some(1))?;
//! let recipe = SrRecipe { iterations: 2, stage1_iterations: 1, calibration_batches: 1, batch: 2, lr_patch: 16, rounds: 1, ..SrRecipe::paper(16) };
//! let dir = tempfile::tempdir()?;
//! let mut run = compress_train::record::Run::create(dir.path(), "ddtb", &recipe, 0, "cpu")?;
//! run.quiet = true;
//! let (outcome, student) = ddtb::quantize(&net, &DdtbSettings::paper(2), &recipe, &fp, &pairs, &pairs, &mut run, &Device::Cpu)?;
//! assert_eq!(outcome.calibration.names.len(), student.act_quants().len()); // 3 sites per block
//! # Ok(()) }
//! ```
//!
//! # Modules
//!
//! The dual-bound activation quantizer with its phases ([`DualBoundActQuant`]), the 2-bit
//! dynamic gate ([`DynamicGate`]), dynamic-intensity selection ([`intensity`]), PAMS' baseline
//! quantizer ([`PamsActQuant`]); quantized EDSR / RDN / SRResNet with the paper's placement
//! ([`models`]); the training recipe and the paper's table ([`config`]); quantization-aware
//! training with distillation ([`trainer`]); `cargo xtask reproduce ddtb` ([`reproduce`]), its
//! `--profile diagnose` ([`diagnose`]: why W2A2 falls below bicubic on some images) and the
//! step-cost measurement ([`overhead`]).

pub mod act_quant;
pub mod config;
pub mod diagnose;
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
pub use config::{ArchDefaults, Arm, DdtbConfig, DdtbSettings, PAPER_TABLE, PaperRow, SrRecipe};
pub use error::{DdtbError, Result};
pub use gate::DynamicGate;
pub use intensity::{RangeStats, dynamic_intensity, select_dynamic};
pub use models::{QuantSr, SrArch, SrNet, SrOutput};
pub use pams::PamsActQuant;
pub use scheme::{ActQuant, ActScheme, QuantConv2d, QuantScheme};
pub use trainer::{Outcome, quantize};
