//! The loop machinery every trainer shares: configuration, optimizer set-up, resuming from the
//! newest checkpoint, gradient accumulation, the non-finite-loss stop, checkpoint cadence and
//! progress bars.

use crate::checkpoint::{self, LoopState};
use crate::error::{Result, TrainError};
use crate::optim::{Optimizer, OptimizerKind, all_params, decay_and_no_decay};
use crate::record::Run;
use crate::schedule::{Decay, Schedule};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

/// Everything a training run is configured by (written to the run's `config.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Epochs (classification) or evaluation rounds (SR).
    pub epochs: usize,
    /// Micro-batch size.
    pub batch_size: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    pub accumulate: usize,
    /// Update rule.
    pub optimizer: OptimizerKind,
    /// Weight decay.
    pub weight_decay: f64,
    /// Exempt biases and norm parameters from weight decay.
    pub no_decay_on_norm_and_bias: bool,
    /// Learning rate by optimizer step.
    pub schedule: Schedule,
    /// Label smoothing of the cross-entropy (classification).
    pub label_smoothing: f64,
    /// The run's seed: initialisation, shuffling, augmentation.
    pub seed: u64,
    /// Checkpoint every this many optimizer steps (0: only at epoch ends).
    pub checkpoint_every: u64,
    /// Log the loss every this many optimizer steps.
    pub log_every: u64,
    /// Stop (with a checkpoint) after this many optimizer steps: for testing resumption. Not
    /// part of the recorded configuration, so the resumed run matches the interrupted one.
    #[serde(skip)]
    pub stop_after_steps: Option<u64>,
}

impl TrainConfig {
    /// The small experiments' recipe: SGD with momentum 0.9 (no Nesterov), weight decay on every
    /// parameter, `decay` from `base_lr` without warm-up, no label smoothing, no checkpoints,
    /// a log line every 10 steps.
    pub fn sgd(epochs: usize, batch_size: usize, base_lr: f64, decay: Decay, weight_decay: f64, seed: u64) -> Self {
        Self {
            epochs,
            batch_size,
            accumulate: 1,
            optimizer: OptimizerKind::sgd(0.9, false),
            weight_decay,
            no_decay_on_norm_and_bias: false,
            schedule: Schedule { base_lr, decay, warmup_steps: 0, warmup_start: 1.0 },
            label_smoothing: 0.0,
            seed,
            checkpoint_every: 0,
            log_every: 10,
            stop_after_steps: None,
        }
    }

    /// Checks the configuration is possible.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.accumulate == 0 || self.epochs == 0 {
            return Err(TrainError::Config("epochs, batch size and accumulation must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(TrainError::Config(format!("label smoothing {} is not in [0, 1)", self.label_smoothing)));
        }
        if self.schedule.base_lr.is_nan() || self.schedule.base_lr <= 0.0 {
            return Err(TrainError::Config("the learning rate must be positive".into()));
        }
        Ok(())
    }
}

/// Callbacks a method uses to act inside the loop (apply masks, update scores, clamp bounds,
/// switch phases). Every method has a default that does nothing.
pub trait Hooks {
    /// Before the first batch of `epoch`.
    fn on_epoch_start(&mut self, _epoch: usize, _vars: &VarMap) -> Result<()> {
        Ok(())
    }
    /// After optimizer step `step` (1-based) has updated the variables.
    fn after_step(&mut self, _step: u64, _vars: &VarMap) -> Result<()> {
        Ok(())
    }
    /// The learning-rate factor of parameter group `group` during `epoch` (`None`: unchanged),
    /// asked after [`Hooks::on_epoch_start`]: a group whose rate follows its own schedule.
    fn lr_scale(&self, _group: &str, _epoch: usize) -> Option<f64> {
        None
    }
}

/// Hooks that do nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl Hooks for NoHooks {}

/// Loop state plus optimizer over a model's variables.
pub struct Engine {
    /// The configuration.
    pub cfg: TrainConfig,
    /// Loop position and history.
    pub state: LoopState,
    /// The optimizer.
    pub opt: Optimizer,
    vars: VarMap,
    pending: Option<GradStore>,
    micro: usize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("cfg", &self.cfg).field("state", &self.state).finish()
    }
}

impl Engine {
    /// Sets up the optimizer over `vars`; with `resume`, restores the newest checkpoint of `run`.
    pub fn new(vars: &VarMap, cfg: &TrainConfig, run: &Run, resume: bool, device: &Device) -> Result<Self> {
        let groups = if cfg.no_decay_on_norm_and_bias {
            decay_and_no_decay(vars, cfg.weight_decay)?
        } else {
            all_params(vars, cfg.weight_decay)?
        };
        Self::with_groups(vars, groups, cfg, run, resume, device)
    }

    /// [`Engine::new`] with the method's own parameter groups (e.g. quantizer bounds at a higher
    /// learning rate); `vars` is still what checkpoints hold.
    pub fn with_groups(
        vars: &VarMap,
        groups: Vec<crate::optim::ParamGroup>,
        cfg: &TrainConfig,
        run: &Run,
        resume: bool,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut e = Self {
            cfg: cfg.clone(),
            state: LoopState {
                epoch: 0,
                next_batch: 0,
                step: 0,
                seed: cfg.seed,
                loss_sum: 0.0,
                loss_count: 0,
                history: Vec::new(),
            },
            opt: Optimizer::new(cfg.optimizer, groups)?,
            vars: vars.clone(),
            pending: None,
            micro: 0,
        };
        if resume && let Some(ck) = checkpoint::latest(&run.checkpoints(), device)? {
            let data = vars.data().lock().map_err(|_| TrainError::Config("VarMap lock poisoned".into()))?;
            for (name, var) in data.iter() {
                let t = ck
                    .model
                    .get(name)
                    .ok_or_else(|| TrainError::Config(format!("checkpoint {} lacks {name}", ck.dir.display())))?;
                var.set(t)?;
            }
            drop(data);
            e.opt.load_state(&ck.optimizer, ck.state.step)?;
            e.state = ck.state;
        }
        Ok(e)
    }

    /// Backpropagates one micro-batch's loss (scaled by `1 / accumulate`) and, every
    /// `accumulate` micro-batches, applies the optimizer. Returns true when a step was taken.
    /// A non-finite loss stops the run with [`TrainError::NonFinite`].
    pub fn micro_batch(&mut self, loss: &Tensor, run: &Run) -> Result<bool> {
        self.micro_batch_routed(loss, run, &|_| Ok(()))
    }

    /// [`Engine::micro_batch`] with the gradients rewritten by `route` before they accumulate:
    /// a method whose variables receive gradients the graph does not give them (OptG's
    /// straight-through scores).
    pub fn micro_batch_routed(
        &mut self,
        loss: &Tensor,
        run: &Run,
        route: &dyn Fn(&mut GradStore) -> Result<()>,
    ) -> Result<bool> {
        let value = loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        if !value.is_finite() {
            return Err(self.non_finite(format!("loss {value}"), run));
        }
        let scaled = if self.cfg.accumulate > 1 { (loss / self.cfg.accumulate as f64)? } else { loss.clone() };
        let mut grads = scaled.backward()?;
        route(&mut grads)?;
        self.pending = Some(match self.pending.take() {
            None => grads,
            Some(mut acc) => {
                for g in self.opt.groups() {
                    for (_, v) in &g.vars {
                        if let Some(new) = grads.get(v.as_tensor()) {
                            let sum = match acc.get(v.as_tensor()) {
                                Some(old) => (old + new)?,
                                None => new.clone(),
                            };
                            acc.insert(v.as_tensor(), sum);
                        }
                    }
                }
                acc
            }
        });
        self.micro += 1;
        if self.micro == self.cfg.accumulate { self.apply().map(|_| true) } else { Ok(false) }
    }

    /// Applies pending gradients (also at an epoch's end with fewer than `accumulate`).
    pub fn apply(&mut self) -> Result<()> {
        if let Some(g) = self.pending.take() {
            let lr = self.cfg.schedule.lr(self.state.step);
            self.opt.step(&g, lr)?;
            self.state.step += 1;
        }
        self.micro = 0;
        Ok(())
    }

    /// Learning rate of the next step.
    pub fn lr(&self) -> f64 {
        self.cfg.schedule.lr(self.state.step)
    }

    fn non_finite(&self, what: String, run: &Run) -> TrainError {
        let checkpoint = match checkpoint::list(&run.checkpoints()) {
            Ok(mut l) => l.pop(),
            Err(e) => return e,
        };
        TrainError::NonFinite { step: self.state.step, epoch: self.state.epoch, what, checkpoint }
    }

    /// Writes a checkpoint of the current position; weights that are not all finite stop the
    /// run instead ([`TrainError::NonFinite`]), so every kept checkpoint is one to resume from.
    pub fn checkpoint(&self, run: &Run) -> Result<std::path::PathBuf> {
        let data = self.vars.data().lock().map_err(|_| TrainError::Config("VarMap lock poisoned".into()))?;
        let model: std::collections::HashMap<String, Tensor> =
            data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        drop(data);
        let mut bad: Vec<&String> = Vec::new();
        for (name, t) in &model {
            if !t.to_dtype(candle_core::DType::F64)?.sum_all()?.to_scalar::<f64>()?.is_finite() {
                bad.push(name);
            }
        }
        if !bad.is_empty() {
            bad.sort();
            return Err(self.non_finite(
                format!("weights ({})", bad.iter().take(3).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")),
                run,
            ));
        }
        let (opt, _) = self.opt.state_tensors();
        checkpoint::save(&run.checkpoints(), &model, &opt.into_iter().collect(), &self.state)
    }

    /// Mean training loss of the epoch so far.
    pub fn epoch_loss(&self) -> f64 {
        self.state.loss_sum / self.state.loss_count.max(1) as f64
    }

    /// Closes an epoch: logs and keeps its record, moves to the next epoch, checkpoints.
    pub fn end_epoch(&mut self, record: serde_json::Value, run: &mut Run) -> Result<()> {
        run.log(&record)?;
        self.state.history.push(record);
        self.state.epoch += 1;
        self.state.next_batch = 0;
        self.state.loss_sum = 0.0;
        self.state.loss_count = 0;
        self.checkpoint(run)?;
        Ok(())
    }

    /// After a step: checkpoint on cadence, and stop if asked to.
    pub fn after_step(&self, run: &Run) -> Result<()> {
        let s = self.state.step;
        if self.cfg.checkpoint_every > 0 && s.is_multiple_of(self.cfg.checkpoint_every) {
            self.checkpoint(run)?;
        }
        if self.cfg.stop_after_steps == Some(s) {
            self.checkpoint(run)?;
            return Err(TrainError::Stopped(s));
        }
        Ok(())
    }
}

/// A progress bar with rate and ETA, hidden when `quiet`.
pub fn progress(quiet: bool, len: u64, what: &str) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    if let Ok(s) = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}") {
        pb.set_style(s);
    }
    pb.set_message(what.to_string());
    pb
}
