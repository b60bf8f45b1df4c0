//! Filter pruning shared by the structured-pruning methods (DCFF, CLR-RNF, White-Box).
//!
//! - [`rates`]: the official `--cprate` rate lists (Python list expressions) and the kept-filter
//!   count `int(C (1 - r))`.
//! - [`layerwise`]: which convolutions a per-layer rate list addresses, in the official order, for
//!   the zoo's VGG, CIFAR ResNet and ImageNet ResNet; the compact config a rate list gives.
//! - [`select`]: kept indices from scores (top-k in ascending index order) and magnitude scores.
//! - [`reduction`]: cost of a config as the papers count it, and the reduction against a base.

pub mod error;
pub mod layerwise;
pub mod rates;
pub mod reduction;
pub mod select;
pub mod uniform;

pub use error::{PruneError, Result};
pub use layerwise::{LayerwiseRates, PrunableConv, compact_config, expand_resnet_cifar, expand_resnet50};
pub use rates::{kept_filters, parse_cprate, parse_cprate_at_most};
pub use reduction::{Reduction, measured_cost};
pub use select::{filter_l1, magnitude_kept, top_k};
pub use uniform::{UniformMatch, uniform_at_flops};
