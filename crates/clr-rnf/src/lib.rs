//! CLR-RNF: one-shot, data-free filter pruning by computation-aware cross-layer ranking and
//! k-reciprocal nearest filters (Lin et al., "Pruning Networks with Cross-Layer Ranking &
//! k-Reciprocal Nearest Filters", IEEE TNNLS 2023, arXiv 2202.07190; official code
//! `lmbxmu/CLR-RNF`).
//!
//! 1. **CLR** fixes the structure: every candidate weight scores `|w| / f_l^lambda` (`f_l` the
//!    layer's FLOPs relative to the first), one global threshold keeps `int(N (1 - rho))` of
//!    them, and the share of a layer's weights that survives sets its filter count.
//! 2. **RNF** picks the filters: each filter recommends its `k` nearest (squared Euclidean); the
//!    kept set is the intersection of all lists, `k` grown from `m` until it holds `m`.
//! 3. The narrow network inherits the kept weights and is fine-tuned as any network.
//!
//! # Use it on your model
//!
//! Declare the network's structure (here with `compress_nn::stack::Stack`: every declared conv
//! is a candidate; the zoo's VGG, CIFAR ResNets and ResNet-50 have the official candidates and
//! factors) and call [`prune`]. `crates/clr-rnf/examples/own_cnn.rs` prunes and fine-tunes a
//! CNN of its own this way.
//!
//! ```
//! use candle_core::{Device, ModuleT, Tensor};
//! use candle_nn::VarBuilder;
//! use compress_nn::layers::{Activation, ConvBn, ConvSpec, Linear, global_avg_pool};
//! use compress_nn::stack::{Stack, StackConfig};
//! use compress_nn::Network;
//!
//! #[derive(Debug)]
//! struct Net { a: ConvBn, b: ConvBn, fc: Linear }
//! impl compress_nn::Architecture for Net {
//!     type Config = StackConfig;
//!     fn build(cfg: &StackConfig, vb: VarBuilder) -> candle_core::Result<Self> {
//!         let (a, b) = (cfg.width("a")?, cfg.width("b")?);
//!         Ok(Self {
//!             a: ConvBn::new(1, a, ConvSpec::same(3), Activation::Relu, vb.pp("a"), vb.pp("a_bn"))?,
//!             b: ConvBn::new(a, b, ConvSpec::same(3), Activation::Relu, vb.pp("b"), vb.pp("b_bn"))?,
//!             fc: Linear::new(b, cfg.width("fc")?, true, vb.pp("fc"))?,
//!         })
//!     }
//! }
//! impl ModuleT for Net {
//!     fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
//!         let h = self.b.forward_t(&self.a.forward_t(x, train)?, train)?;
//!         candle_core::Module::forward(&self.fc, &global_avg_pool(&h)?)
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = Stack::new([1, 8, 8]).conv("a", 8).norm("a_bn").conv("b", 16).norm("b_bn")
//!     .output("fc", 3).bias().build()?;
//! let net = Network::<Net>::new(cfg, 0, &Device::Cpu)?; // in practice: trained weights
//! let pruned = clr_rnf::prune(&net, &clr_rnf::ClrRnfSettings::new(0.5, 0.5), 0)?;
//! let w = pruned.network.tensors()?;
//! assert_eq!(w["a.weight"].dim(0)?, pruned.plan.widths["a"]);
//! assert!(pruned.plan.widths["b"] < 16); // "b" costs more FLOPs, so it is pruned harder
//! # Ok(()) }
//! ```
//!
//! # Modules
//!
//! - [`clr`]: scores, the global threshold, keep counts; [`candidates`]: which weights each
//!   architecture ranks and their FLOPs factors; [`plan`]: CLR on a network;
//! - [`rnf`]: k-reciprocal nearest filters and the graph-loss diagnostic; [`select`](mod@select): RNF, L1
//!   and random selection at given widths;
//! - [`inherit`]: the official and copy-all inheritance; [`method`]: the one-call entry point;
//! - [`reproduce`]: the mini experiment; [`paper`]: the paper profile; [`bench`](mod@bench): the speed line.

pub mod bench;
pub mod candidates;
pub mod clr;
pub mod error;
pub mod inherit;
pub mod method;
pub mod paper;
pub mod plan;
pub mod reproduce;
pub mod rnf;
pub mod select;

pub use candidates::{Candidate, ClrCandidates, Factor, flops_factors};
pub use clr::{ClrConfig, LayerPlan, Ranking, cross_layer_ranking};
pub use error::{ClrRnfError, Result};
pub use inherit::{InheritPolicy, shrink};
pub use method::{ClrRnfSettings, Pruned, prune};
pub use plan::{Plan, uniform_widths};
pub use rnf::{RnfResult, graph_loss, rnf_select};
pub use select::{Selected, Selection, select};
