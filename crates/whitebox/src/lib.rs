//! White-Box: class-wise channel masks, a global vote and pruning to a FLOPs target (Zhang et
//! al., "Carrying out CNN Channel Pruning in a White Box", IEEE TNNLS 2022, arXiv 2104.11883;
//! official code `zyxxmu/White-Box`).
//!
//! 1. **Masks** ([`gate`]): a class-wise mask `M` (`K x C`) gates each masked layer's channels
//!    by sample, `G = D M` with `D[n, y_n] = 1` and `U[0, 1)` weights for the other classes;
//!    stage 1 trains the network and its masks with cross-entropy plus `lambda sum_l
//!    ||sum_k M_l||_2` ([`penalty`], [`masked`]).
//! 2. **Vote** ([`vote`](mod@vote)): every channel scores `|sum_k M[k, c]|`, one global threshold
//!    over all masks is raised until the pruned network's FLOPs reduction reaches the target,
//!    each layer keeping at least 30 %.
//! 3. **Inheritance** ([`inherit`](mod@inherit)): kept channels are copied and `t_c = sum_k M /
//!    2` is folded into the BatchNorms; the result is an ordinary network, fine-tuned as any.
//!
//! # Use it on your model
//!
//! Declare the network's structure (a `compress_nn::stack::Stack`: a mask sits after the
//! activation of every prunable conv with a BatchNorm; the zoo's VGG, CIFAR ResNets, ResNet-50
//! and MobileNetV2 have the official placements, [`layout`]), then call [`train_masks`] and
//! [`prune`]. `crates/whitebox/examples/own_cnn.rs` does it on a CNN of its own.
//!
//! ```
//! use candle_core::Device;
//! use compress_nn::Network;
//! use whitebox::{GateMode, MaskedNetwork, WhiteBoxSettings};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Section 9's network, declared with a Stack (any `Architecture` over a `StackConfig` works).
//! let net = Network::<whitebox::net::VggTiny>::new(whitebox::net::vgg_tiny()?, 0, &Device::Cpu)?;
//! let masked = MaskedNetwork::new(&net, 10, 0.01, GateMode::RandomOthers, 0)?;
//! assert_eq!(masked.slots().len(), 4); // one mask after each conv's ReLU
//! // ... train the network and masks (train_masks does); here, masks of distinct values:
//! let distinct = |m: &candle_core::Tensor| m.ones_like()?.cumsum(1)?.sin();
//! let m: Vec<_> = masked.masks().iter().map(distinct).collect::<Result<_, _>>()?;
//! masked.set_masks(&m)?;
//! // Vote to a 70 % FLOPs reduction and inherit:
//! let trained = whitebox::MaskTraining { slots: masked.slots().to_vec(), masks: masked.masks(), history: vec![] };
//! let pruned = whitebox::prune(&net, &trained, &WhiteBoxSettings::new(0.01, 0.7), 0)?;
//! assert!(pruned.plan.reduction >= 0.7);
//! assert_eq!(pruned.network.tensors()?["convs.3.weight"].dim(0)?, pruned.plan.widths["convs.3"]);
//! # Ok(()) }
//! ```
//!
//! # Modules
//!
//! - [`gate`]: `D`, `G = D M`, votes and fold factors; [`penalty`]: the sparsity term;
//! - [`layout`]: where each architecture's masks sit; [`masked`]: stage 1's network with masks;
//! - [`vote`](mod@vote): the global vote; [`inherit`](mod@inherit): fold and slice;
//!   [`method`]: the entry points;
//! - [`net`]: section 9's network; [`reproduce`]: the mini; [`paper`]: the paper profile.

pub mod error;
pub mod gate;
pub mod inherit;
pub mod layout;
pub mod masked;
pub mod method;
pub mod net;
pub mod paper;
pub mod penalty;
pub mod reproduce;
pub mod vote;

pub use error::{Result, WhiteBoxError};
pub use gate::{ClassWiseMask, GateMode, apply_gate, draw_d, fold_scale, votes};
pub use inherit::{fold, inherit};
pub use layout::{KeepRule, MaskSlot, RandomGroup, WhiteBoxLayout};
pub use masked::MaskedNetwork;
pub use method::{MaskTraining, Pruned, WhiteBoxSettings, counted_flops, prune, train_masks};
pub use penalty::mask_penalty;
pub use vote::{GlobalVoting, Keep, PrunePlan, VotePass, VotePool, keep_at, vote};
