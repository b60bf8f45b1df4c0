//! OptG's entry point: [`train`] runs sparse training of any model whose weights were
//! [`Sparsified`], under [`OptgSettings`] (the method) and a `TrainConfig` (the recipe).
//!
//! Each epoch `e` starts with a global mask assignment at `p_e` ([`crate::schedule`]) from the
//! criterion's scores, then every step routes the gradients ([`crate::ste`]) and writes
//! `W (.) M` back. The optimizer is one SGD with two groups: `scores` (no weight decay, its rate
//! `eta_W sigma(beta (e - E / 2))`) and the rest (weights with every pruned entry, norms,
//! biases) with the recipe's decay. After the last epoch the masks are assigned at the target
//! from the final scores (the official evaluation).

use crate::error::{Result, config_err};
use crate::global::{Counting, exact_masks, threshold_masks};
use crate::schedule::SparsitySchedule;
use crate::sparsified::Sparsified;
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use compress_core::rng::SeededRng;
use compress_data::batch::{Batcher, Dataset};
use compress_nn::Model;
use compress_train::classify::{self, Objective};
use compress_train::loss::cross_entropy;
use compress_train::optim::{ParamGroup, trainable};
use compress_train::{Hooks, Run, TrainConfig};
use serde_json::json;

/// What ranks the weights at each assignment.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Criterion {
    /// OptG: trained scores, the accumulated `-sum_t eta_S (G (.) W)`; pruned weights keep
    /// their values and may re-enter.
    Supermask,
    /// GMP: `|W (.) M|`, exact global top-k; pruned weights zeroed for good.
    Magnitude,
    /// The instantaneous gradient-driven criterion `|G (.) W (.) M|`, `G` summed over `batches`
    /// fresh training batches on the current masked network; exact global top-k, pruned weights
    /// zeroed for good.
    Taylor {
        /// Fresh batches per assignment.
        batches: usize,
    },
}

impl Criterion {
    /// Whether pruned weights are zeroed for good (the baselines).
    pub fn zeroes_pruned(self) -> bool {
        !matches!(self, Criterion::Supermask)
    }

    /// A short name.
    pub fn tag(self) -> &'static str {
        match self {
            Criterion::Supermask => "optg",
            Criterion::Magnitude => "gmp",
            Criterion::Taylor { .. } => "taylor",
        }
    }
}

/// The method's settings (the training recipe is the `TrainConfig`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptgSettings {
    /// Target sparsity `p` over the sparsified weights.
    pub target: f64,
    /// Slope `beta` of the sparsity sigmoid (the official 1).
    pub beta: f64,
    /// The criterion.
    pub criterion: Criterion,
    /// Layer counts from `tau` (OptG only).
    pub counting: Counting,
}

impl OptgSettings {
    /// OptG at `target` with the official `beta = 1` and exact counts.
    pub fn new(target: f64) -> Self {
        Self { target, beta: 1.0, criterion: Criterion::Supermask, counting: Counting::Exact }
    }

    /// The same budget and schedule with another criterion.
    pub fn with_criterion(self, criterion: Criterion) -> Self {
        Self { criterion, ..self }
    }

    /// The sparsity schedule over `epochs`.
    pub fn schedule(&self, epochs: usize) -> SparsitySchedule {
        SparsitySchedule { target: self.target, beta: self.beta, epochs }
    }

    fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.target) {
            return Err(config_err(format!("target sparsity {} is not in [0, 1)", self.target)));
        }
        if !self.beta.is_finite() || self.beta <= 0.0 {
            return Err(config_err(format!("beta {} must be positive", self.beta)));
        }
        if let Criterion::Taylor { batches: 0 } = self.criterion {
            return Err(config_err("the Taylor criterion needs at least one batch"));
        }
        Ok(())
    }
}

/// `|G (.) W (.) M|` with `G` summed over `batches` fresh batches of `data` (stream `epoch` of
/// the run's Taylor batches) on the current masked network, in training mode.
pub fn taylor_scores<M: Model + ?Sized, D: Dataset>(
    net: &M,
    sparse: &Sparsified,
    data: &D,
    batches: usize,
    batch_size: usize,
    seed: u64,
    epoch: usize,
) -> Result<Vec<Vec<f32>>> {
    let seed = SeededRng::new(seed).child("optg/taylor").seed();
    let b = Batcher::new(batch_size, true, seed, net.device().clone())?.drop_last(true);
    let mut sums: Vec<Option<Tensor>> = vec![None; sparse.slots().len()];
    for batch in b.epoch(data, epoch as u64, 0)?.take(batches) {
        let batch = batch?;
        let grads = cross_entropy(&net.forward_t(&batch.images, true)?, &batch.labels, 0.0)?.backward()?;
        for (sum, s) in sums.iter_mut().zip(sparse.slots()) {
            if let Some(g) = grads.get(s.model.as_tensor()) {
                let g = g.detach();
                *sum = Some(match sum.take() {
                    Some(a) => (a + g)?,
                    None => g,
                });
            }
        }
    }
    sums.iter()
        .zip(sparse.slots())
        .map(|(g, s)| {
            let w = s.model.as_tensor();
            let score = match g {
                Some(g) => (g * w)?.abs()?,
                None => w.zeros_like()?,
            };
            Ok(score.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1()?)
        })
        .collect()
}

/// The baselines' scores with every already-pruned entry at `-inf`: a pruned weight (zero, so
/// scoring 0) must not win a tie at 0 against a kept one whose gradient is 0 (a dead unit) and
/// come back.
fn pruned_first(mut scores: Vec<Vec<f32>>, masks: &crate::Masks) -> Vec<Vec<f32>> {
    for (s, m) in scores.iter_mut().zip(masks) {
        for (v, m) in s.iter_mut().zip(m) {
            if *m == 0.0 {
                *v = f32::NEG_INFINITY;
            }
        }
    }
    scores
}

/// Assigns the masks at `rate` by the settings' criterion, writes `W (.) M` (zeroing pruned
/// weights for the baselines) and records the assignment as `epoch`'s. Returns the entries
/// whose mask changed.
#[allow(clippy::too_many_arguments)]
pub fn assign<M: Model + ?Sized, D: Dataset>(
    net: &M,
    sparse: &Sparsified,
    settings: &OptgSettings,
    rate: f64,
    epoch: usize,
    data: &D,
    batch_size: usize,
    seed: u64,
) -> Result<usize> {
    let masks = match settings.criterion {
        Criterion::Supermask => threshold_masks(&sparse.scores()?, rate, settings.counting)?,
        Criterion::Magnitude => exact_masks(&pruned_first(sparse.magnitudes()?, &sparse.masks()?), rate)?,
        Criterion::Taylor { batches } => {
            let scores = taylor_scores(net, sparse, data, batches, batch_size, seed, epoch)?;
            exact_masks(&pruned_first(scores, &sparse.masks()?), rate)?
        }
    };
    let changed = sparse.set_masks(&masks)?;
    sparse.write_effective(settings.criterion.zeroes_pruned())?;
    sparse.record_assignment(epoch, changed)?;
    Ok(changed)
}

/// The optimizer's groups: `scores` (OptG only; no decay) and the rest of the trainable
/// variables (the model variables of sparsified weights excluded: they are written, not
/// stepped), split into decayed weights and undecayed biases / norms when the recipe exempts
/// them.
pub fn param_groups(
    varmap: &VarMap,
    sparse: &Sparsified,
    settings: &OptgSettings,
    cfg: &TrainConfig,
) -> Result<Vec<ParamGroup>> {
    let mut scores = Vec::new();
    let (mut decay, mut no_decay) = (Vec::new(), Vec::new());
    let score_names: Vec<String> = sparse.slots().iter().map(|s| format!("optg.{}.score", s.name)).collect();
    for (name, var) in trainable(varmap)? {
        if sparse.is_model_var(&name) {
            continue;
        }
        if score_names.contains(&name) {
            scores.push((name, var));
        } else if cfg.no_decay_on_norm_and_bias && var.rank() < 2 {
            no_decay.push((name, var));
        } else {
            decay.push((name, var));
        }
    }
    let mut groups =
        vec![ParamGroup { name: "weights".into(), vars: decay, lr_scale: 1.0, weight_decay: cfg.weight_decay }];
    if !no_decay.is_empty() {
        groups.push(ParamGroup { name: "no_decay".into(), vars: no_decay, lr_scale: 1.0, weight_decay: 0.0 });
    }
    if settings.criterion == Criterion::Supermask {
        let factor = settings.schedule(cfg.epochs).factor(0);
        groups.push(ParamGroup { name: "scores".into(), vars: scores, lr_scale: factor, weight_decay: 0.0 });
    }
    Ok(groups)
}

struct SparseObjective<'a, M: ?Sized, Te> {
    net: &'a M,
    sparse: &'a Sparsified,
    settings: OptgSettings,
    test: &'a Te,
    smoothing: f64,
}

impl<M: Model + ?Sized, Te: Dataset> Objective for SparseObjective<'_, M, Te> {
    fn varmap(&self) -> &VarMap {
        self.net.varmap()
    }
    fn device(&self) -> &Device {
        self.net.device()
    }
    fn loss(&self, images: &Tensor, labels: &Tensor, _epoch: usize) -> compress_train::Result<Tensor> {
        Ok(cross_entropy(&self.net.forward_t(images, true)?, labels, self.smoothing)?)
    }
    fn evaluate(&self, _epoch: usize) -> compress_train::Result<serde_json::Value> {
        let (top1, top5) = classify::evaluate(self.net, self.test, 256)?;
        let (sparsity, changed) = (self.sparse.sparsity(), self.sparse.last_changes());
        let (sparsity, changed) = (sparsity.map_err(boxed)?, changed.map_err(boxed)?);
        Ok(json!({"top1": top1, "top5": top5, "sparsity": sparsity, "mask_changes": changed}))
    }
    fn groups(&self, cfg: &TrainConfig) -> compress_train::Result<Option<Vec<ParamGroup>>> {
        param_groups(self.net.varmap(), self.sparse, &self.settings, cfg).map(Some).map_err(boxed)
    }
    fn route_gradients(&self, grads: &mut GradStore) -> compress_train::Result<()> {
        self.sparse.route(grads, self.settings.criterion == Criterion::Supermask).map_err(boxed)
    }
}

fn boxed(e: crate::OptgError) -> compress_train::TrainError {
    match e {
        crate::OptgError::Train(t) => t,
        other => compress_train::TrainError::Config(other.to_string()),
    }
}

struct SparseHooks<'a, M: ?Sized, Tr> {
    net: &'a M,
    sparse: &'a Sparsified,
    settings: OptgSettings,
    schedule: SparsitySchedule,
    train: &'a Tr,
    batch_size: usize,
    seed: u64,
}

impl<M: Model + ?Sized, Tr: Dataset> Hooks for SparseHooks<'_, M, Tr> {
    fn on_epoch_start(&mut self, epoch: usize, _vars: &VarMap) -> compress_train::Result<()> {
        // A run resumed inside an epoch keeps the masks that epoch was given (checkpointed).
        if self.sparse.assigned_epoch().map_err(boxed)? == Some(epoch) {
            return Ok(());
        }
        let rate = self.schedule.rate(epoch);
        assign(self.net, self.sparse, &self.settings, rate, epoch, self.train, self.batch_size, self.seed)
            .map_err(boxed)?;
        Ok(())
    }
    fn after_step(&mut self, _step: u64, _vars: &VarMap) -> compress_train::Result<()> {
        self.sparse.write_effective(self.settings.criterion.zeroes_pruned()).map_err(boxed)
    }
    fn lr_scale(&self, group: &str, epoch: usize) -> Option<f64> {
        (group == "scores").then(|| self.schedule.factor(epoch))
    }
}

/// A finished sparse training.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Trained {
    /// Per-epoch records: `epoch`, `loss`, `lr`, `top1`, `top5`, `sparsity`, `mask_changes`.
    pub history: Vec<serde_json::Value>,
    /// Test top-1 (%) with the final masks (assigned at the target from the final scores).
    pub top1: f64,
    /// Realised sparsity of the final masks.
    pub sparsity: f64,
    /// Entries whose mask changed at the final assignment.
    pub final_changes: usize,
}

/// Sparse training of `net` (whose weights `sparse` holds, in `net`'s own `VarMap`) on `train`,
/// evaluated on `test` after every epoch and with the final masks. `cfg` is the recipe: epochs
/// `E` (also the sparsity schedule's), batch, SGD momentum, the weights' schedule (OptG's is
/// [`crate::schedule::weight_schedule`]), weight decay, label smoothing, seed, checkpoints. With
/// `resume` it continues from the newest checkpoint of `run`.
#[allow(clippy::too_many_arguments)]
pub fn train<M: Model + ?Sized, Tr: Dataset, Te: Dataset>(
    net: &M,
    sparse: &Sparsified,
    settings: &OptgSettings,
    cfg: &TrainConfig,
    train: &Tr,
    test: &Te,
    run: &mut Run,
    resume: bool,
) -> Result<Trained> {
    settings.validate()?;
    if !matches!(cfg.optimizer, compress_train::optim::OptimizerKind::Sgd { .. }) {
        return Err(config_err("OptG's supermask optimizer is SGD (scores and weights in two groups)"));
    }
    for s in sparse.slots() {
        let ours = net
            .varmap()
            .data()
            .lock()
            .map_err(|_| crate::OptgError::Poisoned)?
            .get(&s.name)
            .map(|v| v.as_tensor().id());
        if ours != Some(s.model.as_tensor().id()) {
            return Err(config_err(format!("{} was sparsified in another VarMap than the model's", s.name)));
        }
    }
    let schedule = settings.schedule(cfg.epochs);
    let obj = SparseObjective { net, sparse, settings: *settings, test, smoothing: cfg.label_smoothing };
    let mut hooks =
        SparseHooks { net, sparse, settings: *settings, schedule, train, batch_size: cfg.batch_size, seed: cfg.seed };
    let history = classify::fit_objective(&obj, train, cfg, run, resume, &mut hooks)?;
    let final_changes = assign(net, sparse, settings, settings.target, cfg.epochs, train, cfg.batch_size, cfg.seed)?;
    let top1 = classify::evaluate(net, test, 256)?.0;
    Ok(Trained { history, top1, sparsity: sparse.sparsity()?, final_changes })
}
