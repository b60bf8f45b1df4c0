//! White-Box on any network in two calls: [`train_masks`] (stage 1: the network and its
//! class-wise masks trained together) and [`prune`] (stage 2: the global vote to the FLOPs
//! target, then the folded, physically narrower network). Fine-tuning (stage 3) is ordinary
//! training of the result.

use crate::error::Result;
use crate::gate::{GateMode, votes};
use crate::inherit::inherit;
use crate::layout::{MaskSlot, WhiteBoxLayout};
use crate::masked::MaskedNetwork;
use crate::vote::{GlobalVoting, PrunePlan, vote};
use candle_core::Tensor;
use compress_data::batch::Dataset;
use compress_nn::{Architecture, Network};
use compress_train::record::Run;
use compress_train::{NoHooks, TrainConfig, classify};

/// The method's settings (the training recipes of stages 1 and 3 are separate).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WhiteBoxSettings {
    /// `lambda` of the sparsity term.
    pub lambda: f64,
    /// How `D` weighs the other classes.
    pub mode: GateMode,
    /// The FLOPs reduction to reach (0.55 is ResNet-56's).
    pub target: f64,
    /// The vote.
    pub voting: GlobalVoting,
}

impl WhiteBoxSettings {
    /// The official method at `lambda` and `target`: random others, the official vote.
    pub fn new(lambda: f64, target: f64) -> Self {
        Self { lambda, mode: GateMode::RandomOthers, target, voting: GlobalVoting::default() }
    }
}

/// What stage 1 leaves: the masks, by slot.
#[derive(Debug, Clone)]
pub struct MaskTraining {
    /// The layout's slots.
    pub slots: Vec<MaskSlot>,
    /// Their trained values (`K x C`).
    pub masks: Vec<Tensor>,
    /// The per-epoch records.
    pub history: Vec<serde_json::Value>,
}

/// Stage 1: trains `net` (its variables in place) with `classes`-row masks on every slot, CE plus
/// the sparsity term, by `cfg` (the official recipe: SGD 0.1 constant, momentum 0.9, weight
/// decay on everything, masks included), recorded in `run`.
pub fn train_masks<A: Architecture, D: Dataset>(
    net: &Network<A>,
    classes: usize,
    settings: &WhiteBoxSettings,
    train: &D,
    cfg: &TrainConfig,
    run: &mut Run,
    resume: bool,
) -> Result<MaskTraining>
where
    A::Config: WhiteBoxLayout,
{
    let masked = MaskedNetwork::new(net, classes, settings.lambda, settings.mode, cfg.seed)?;
    let history = classify::fit_objective(&masked, train, cfg, run, resume, &mut NoHooks)?;
    Ok(MaskTraining { slots: masked.slots().to_vec(), masks: masked.masks(), history })
}

/// A pruned network with the decisions that made it.
#[derive(Debug)]
pub struct Pruned<A: Architecture> {
    /// The narrow network (folded, no masks).
    pub network: Network<A>,
    /// The vote.
    pub plan: PrunePlan,
    /// Every slot's channel scores `|sum_k M|`.
    pub scores: Vec<Vec<f32>>,
}

/// The papers' FLOPs of `cfg`, counted by a forward pass.
pub fn counted_flops<A: Architecture>(cfg: &A::Config) -> Result<u64> {
    Ok(compress_prune::measured_cost::<A>(cfg)?.pruning_flops())
}

/// Stage 2: votes on `net`'s trained masks to `settings.target` and returns the folded, pruned
/// network. `seed` draws the random groups' channels.
pub fn prune<A: Architecture>(
    net: &Network<A>,
    masks: &MaskTraining,
    settings: &WhiteBoxSettings,
    seed: u64,
) -> Result<Pruned<A>>
where
    A::Config: WhiteBoxLayout,
{
    let scores = masks.masks.iter().map(votes).collect::<Result<Vec<_>>>()?;
    let plan = vote(&net.config, &scores, settings.target, &settings.voting, &counted_flops::<A>, seed)?;
    let network = inherit(net, &masks.slots, &masks.masks, &plan.kept)?;
    Ok(Pruned { network, plan, scores })
}
