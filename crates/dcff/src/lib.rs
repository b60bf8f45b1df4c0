//! DCFF: training compact CNNs by dynamic-coded filter fusion (Lin et al., "Training Compact
//! CNNs for Image Classification using Dynamic-coded Filter Fusion", arXiv 2107.06916; official
//! code `lmbxmu/DCFF`).
//!
//! Every prunable convolution keeps its `C` filters as parameters; the forward pass uses
//! `m = int(C (1 - r))` fused filters `Phi W`, where `Phi` holds the inter-similarity proxies
//! of the `m` most distinctive filters. A temperature rising from 1 to 1e4 makes the proxies
//! one-hot, and the compact model is read off at the end.
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
pub mod paper;
pub mod presets;
pub mod proxy;
pub mod reproduce;
pub mod temperature;

pub use error::{DcffError, Result};
pub use fused::{EpochRefresh, FusedLayer, FusedNetwork, LayerRefresh};
pub use hooks::Refresher;
pub use proxy::{FilterProxies, KlMode, filter_proxies};
pub use temperature::TemperatureSchedule;
