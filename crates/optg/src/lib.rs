//! OptG: supermask training with accumulated gradient-driven criteria, to ultra-high
//! unstructured sparsity (Zhang, Lin, Chen, Chao, Ji, "OptG: Optimizing Gradient-driven
//! Criteria in Network Sparsity", arXiv 2201.12826; official code `zyxxmu/OptG`).
//!
//! Every sparsified weight `W` has a score `S` (from 0) and a mask `M`. The forward pass uses
//! `W (.) M`; the straight-through backward gives `W` the gradient `G (.) M` and `S` the gradient
//! `G (.) W` for every entry ([`ste`]), so `S` accumulates the Taylor criterion over training,
//! kept and pruned weights alike. At each epoch start one global top-k over the raw scores of
//! every sparsified layer assigns the masks at `p_e = p sigma(beta (e - E / 2))`, and the scores'
//! rate follows the same sigmoid ([`schedule`], [`global`]).
//!
//! # Use it on your model
//!
//! Build the model from a `VarMap` (candle-nn's `VarBuilder::from_varmap`, or a zoo network),
//! implement `compress_nn::Model` for it (its map, device and `forward_t`), pick the weights
//! ([`sparsifiable_weights`]: every conv and linear weight), then [`train`].
//! `crates/optg/examples/own_mlp.rs` does it on a candle-nn network of its own; the sparse
//! result runs on the CSR kernels through [`deploy`].
//!
//! ```
//! use candle_core::{DType, Device, Tensor, Var};
//! use candle_nn::VarMap;
//! use optg::{Counting, Sparsified, sparsifiable_weights, threshold_masks};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let varmap = VarMap::new();
//! let w = Tensor::new(&[[0.5f32, -1.0, 2.0], [0.1, 0.3, -0.4]], &Device::Cpu)?;
//! varmap.data().lock().map_err(|_| "lock")?.insert("fc.weight".into(), Var::from_tensor(&w)?);
//! let sparse = Sparsified::new(&varmap, &sparsifiable_weights(&varmap, &[])?)?;
//! // Scores as training would leave them; half the entries go by one global threshold.
//! sparse.slots()[0].score.set(&Tensor::new(&[[0.9f32, -0.2, 0.5], [0.1, 0.3, -0.4]], &Device::Cpu)?)?;
//! sparse.set_masks(&threshold_masks(&sparse.scores()?, 0.5, Counting::Exact)?)?;
//! sparse.write_effective(false)?;
//! assert_eq!(sparse.sparsity()?, 0.5);
//! assert_eq!(w.dims(), sparse.slots()[0].model.dims());
//! # Ok(()) }
//! ```
//!
//! # Modules
//!
//! - [`schedule`]: `p_e`, `eta_W`, `eta_S`; [`global`]: the global mask assignment;
//! - [`ste`]: the straight-through gradients; [`sparsified`]: a model's weights under one budget;
//! - [`method`]: the criteria (OptG, GMP, Taylor) and [`train`]; [`deploy`]: CSR inference;
//!   [`flops`]: the MACs of a sparse network;
//! - [`reproduce`]: the mini; [`paper`]: the paper profile; [`bench`](mod@bench): sparse vs dense speed.

pub mod bench;
pub mod deploy;
pub mod error;
pub mod flops;
pub mod global;
pub mod method;
pub mod paper;
pub mod reproduce;
pub mod schedule;
pub mod sparsified;
pub mod ste;

pub use error::{OptgError, Result};
pub use global::{Counting, Masks, exact_masks, keep_count, threshold_masks};
pub use method::{Criterion, OptgSettings, Trained, assign, param_groups, taylor_scores, train};
pub use schedule::{SparsitySchedule, score_lr, sigmoid, weight_lr, weight_schedule};
pub use sparsified::{Slot, Sparsified, sparsifiable_weights};
pub use ste::{routed_gradients, supermask_weight};
