//! 1xN pruning (Lin et al., "1xN Pattern for Pruning Convolutional Neural Networks", arXiv
//! 2105.14713, TPAMI 2022; official code `lmbxmu/1xN`): blocks of N consecutive output channels
//! sharing one input channel are pruned whole, after the output channels are rearranged by filter
//! L1 so that strong filters share blocks; the masked model is fine-tuned and then deployed in the
//! packed 1xN format, whose kernel broadcasts each kept input against N contiguous weights.
//!
//! - [`pattern`]: the 1xN pattern (L1 or random blocks, rearrangement) and the weight / filter /
//!   kernel baselines, one layer at a time;
//! - [`masked`]: [`MaskedNetwork`], one-shot masks frozen through fine-tuning (masked
//!   gradients, frozen biases of masked layers), over any zoo model;
//! - [`deploy`]: physical rearrangement through the zoo's channel groups, packing, and the
//!   deployed model with packed kernels in place of the dense layers;
//! - [`reproduce`]: the spec's section 9 experiment (mini profile) with its speed check.
//!
//! Masks, the packed format and the kernels themselves live in `compress_core::sparse`.

pub mod bench;
pub mod deploy;
pub mod error;
pub mod masked;
pub mod pattern;
pub mod reproduce;

pub use deploy::{PackedLayer, Target, mlp_targets, mobilenet_v2_targets, pack, rearrange};
pub use error::{OnexnError, Result};
pub use masked::{MaskedNetwork, mask_name};
pub use pattern::{BlockCriterion, LayerMask, OneByN, Pattern, kept_l1, layer_mask};
