//! 1xN pruning (Lin et al., "1xN Pattern for Pruning Convolutional Neural Networks", arXiv
//! 2105.14713, TPAMI 2022; official code `lmbxmu/1xN`): blocks of N consecutive output channels
//! sharing one input channel are pruned whole, after the output channels are rearranged by filter
//! L1 so that strong filters share blocks; the masked model is fine-tuned and then deployed in the
//! packed 1xN format, whose kernel broadcasts each kept input against N contiguous weights.
//!
//! # Use it on your model
//!
//! On any candle model, by its weights' names in the `VarMap` its `VarBuilder` was built from
//! ([`prune_weights`]: the layers share the variables, so the model is pruned in place; re-apply
//! [`WeightMasks::apply`] after each fine-tuning step), then packed for the 1xN kernels.
//! Rearrangement permutes channels across layers and needs the network's channel groups: on a
//! `compress_nn::Network` use [`MaskedNetwork`] and [`deploy`]. Examples:
//! `crates/onexn/examples/candle_cnn.rs` (a plain candle-nn CNN) and
//! `examples/examples/candle_transformers_resnet.rs` (candle-transformers' ResNet-18).
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use compress_core::sparse::PackedConv2d;
//! use onexn::{OneByN, Pattern, prunable_weights, prune_weights};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let conv = candle_nn::conv2d_no_bias(16, 32, 3, Default::default(), vb.pp("conv"))?;
//! let names = prunable_weights(&varmap, 4, &[])?; // ["conv.weight"]
//! let masks = prune_weights(&varmap, &names, Pattern::Block(OneByN::l1(4, false)), 0.5)?;
//! assert_eq!(masks.density()?, 0.5); // 64 of the 8 x 16 blocks of 4 filters x 9 taps pruned
//! let packed = PackedConv2d::new(masks.pack(&varmap, 4)?["conv.weight"].clone(), None, 1, 0)?;
//! let x = Tensor::randn(0f32, 1.0, (1, 16, 8, 8), &Device::Cpu)?;
//! let gap = (packed.forward(&x)? - conv.forward(&x)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(gap < 1e-4); // the packed kernel computes the pruned layer
//! # Ok(()) }
//! ```
//!
//! # Modules
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
pub mod weights;

pub use deploy::{PackedLayer, Target, mlp_targets, mobilenet_v2_targets, pack, rearrange};
pub use error::{OnexnError, Result};
pub use masked::{MaskedNetwork, mask_name};
pub use pattern::{BlockCriterion, LayerMask, OneByN, Pattern, kept_l1, layer_mask};
pub use weights::{WeightMasks, prunable_weights, prune_weights};
