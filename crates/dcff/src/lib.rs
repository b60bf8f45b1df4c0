//! DCFF: training compact CNNs by dynamic-coded filter fusion (Lin et al., "Training Compact
//! CNNs for Image Classification using Dynamic-coded Filter Fusion", arXiv 2107.06916; official
//! code `lmbxmu/DCFF`).
//!
//! Every prunable convolution keeps its `C` filters as parameters; the forward pass uses
//! `m = int(C (1 - r))` fused filters `Phi W`, where `Phi` holds the inter-similarity proxies
//! of the `m` most distinctive filters. A temperature rising from 1 to 1e4 makes the proxies
//! one-hot, and the compact model is read off at the end.
//!
//! # Use it on your model
//!
//! Declare the network's structure (here with `compress_nn::stack::Stack`; any
//! `compress_nn::ArchConfig` with [`compress_prune::LayerwiseRates`] works), wrap it in [`Dcff`],
//! train with any optimizer over [`Dcff::trainable_vars`] calling [`Dcff::begin_epoch`] at each
//! epoch start, and [`Dcff::extract`] the compact network. `crates/dcff/examples/residual_cnn.rs`
//! trains a CNN with a residual block of its own this way.
//!
//! ```
//! use candle_core::{Device, ModuleT, Tensor};
//! use candle_nn::{Optimizer, VarBuilder};
//! use compress_nn::layers::{Activation, ConvBn, ConvSpec, Linear, global_avg_pool};
//! use compress_nn::stack::{Stack, StackConfig};
//! use dcff::{Dcff, DcffSettings};
//!
//! #[derive(Debug)]
//! struct Net { conv: ConvBn, fc: Linear }
//! impl compress_nn::Architecture for Net {
//!     type Config = StackConfig;
//!     fn build(cfg: &StackConfig, vb: VarBuilder) -> candle_core::Result<Self> {
//!         let c = cfg.width("conv")?;
//!         let conv = ConvBn::new(1, c, ConvSpec::same(3), Activation::Relu, vb.pp("conv"), vb.pp("bn"))?;
//!         Ok(Self { conv, fc: Linear::new(c, cfg.width("fc")?, true, vb.pp("fc"))? })
//!     }
//! }
//! impl ModuleT for Net {
//!     fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
//!         candle_core::Module::forward(&self.fc, &global_avg_pool(&self.conv.forward_t(x, train)?)?)
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = Stack::new([1, 8, 8]).conv("conv", 8).norm("bn").output("fc", 3).bias().build()?;
//! let settings = DcffSettings::uniform(&cfg, 0.5, 2); // rate 0.5 everywhere, T: 1 -> 1e4
//! let dcff = Dcff::<Net>::new(cfg, &settings, 0, &Device::Cpu)?;
//! let mut sgd = candle_nn::SGD::new(dcff.trainable_vars()?, 0.01)?;
//! let x = Tensor::ones((4, 1, 8, 8), candle_core::DType::F32, &Device::Cpu)?;
//! for epoch in 0..2 {
//!     dcff.begin_epoch(epoch)?; // T(epoch), new proxies, the m most distinctive filters
//!     sgd.backward_step(&dcff.forward_t(&x, true)?.sqr()?.mean_all()?)?;
//! }
//! let compact = dcff.extract()?; // int(8 x (1 - 0.5)) = 4 filters, an ordinary `Network<Net>`
//! assert_eq!(compact.tensors()?["conv.weight"].dims(), [4, 1, 3, 3]);
//! # Ok(()) }
//! ```
//!
//! # Modules
//!
//! - [`temperature`]: `T(e)`; [`proxy`]: distances, proxies, KL scores ([`KlMode`]);
//! - [`fused`]: [`FusedNetwork`], the fused training-time network over any zoo model whose
//!   per-layer rates are known, and its extraction to a compact [`compress_nn::Network`];
//! - [`hooks`]: the per-epoch refresh as a training hook; [`presets`]: the paper's settings;
//! - [`reproduce`]: the mini experiment; [`paper`]: the paper profile (sizes, official
//!   schedules, training where the datasets are cached).

pub mod error;
pub mod fused;
pub mod hooks;
pub mod method;
pub mod paper;
pub mod presets;
pub mod proxy;
pub mod reproduce;
pub mod temperature;

pub use error::{DcffError, Result};
pub use fused::{EpochRefresh, FusedLayer, FusedNetwork, LayerRefresh};
pub use hooks::Refresher;
pub use method::{Dcff, DcffSettings};
pub use proxy::{FilterProxies, KlMode, filter_proxies};
pub use temperature::TemperatureSchedule;
