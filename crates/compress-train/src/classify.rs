//! Training and evaluating classifiers.

use crate::engine::{Engine, Hooks, TrainConfig, progress};
use crate::error::Result;
use crate::loss::cross_entropy;
use crate::metrics::topk_correct;
use crate::optim::ParamGroup;
use crate::record::Run;
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use compress_data::batch::{Batcher, Dataset};
use compress_nn::Model;
use serde_json::json;

/// Top-1 and top-5 accuracy (%) of `net` on `data`, in eval mode.
pub fn evaluate<M: Model + ?Sized, D: Dataset>(net: &M, data: &D, batch: usize) -> Result<(f64, f64)> {
    let b = Batcher::new(batch, false, 0, net.device().clone())?;
    let (mut t1, mut t5, mut n) = (0usize, 0usize, 0usize);
    for batch in b.epoch(data, 0, 0)? {
        let batch = batch?;
        let logits = net.forward_t(&batch.images, false)?;
        t1 += topk_correct(&logits, &batch.labels, 1)?;
        t5 += topk_correct(&logits, &batch.labels, 5)?;
        n += batch.indices.len();
    }
    Ok((100.0 * t1 as f64 / n as f64, 100.0 * t5 as f64 / n as f64))
}

/// The `top1` of every epoch record of a history (NaN where a record has none).
pub fn top1_curve(history: &[serde_json::Value]) -> Vec<f64> {
    history.iter().map(|h| h["top1"].as_f64().unwrap_or(f64::NAN)).collect()
}

/// What a training loop optimises and measures: a method's loss on a batch (it may depend on
/// the epoch, e.g. a schedule of phases) and its evaluation after each epoch.
pub trait Objective {
    /// Every variable (what the optimizer and checkpoints hold).
    fn varmap(&self) -> &VarMap;
    /// Where the variables live.
    fn device(&self) -> &Device;
    /// The scalar loss of a training batch in `epoch` (0-based).
    fn loss(&self, images: &Tensor, labels: &Tensor, epoch: usize) -> Result<Tensor>;
    /// [`Objective::loss`] told which batch of the epoch this is (0-based, the same after a
    /// resume): a loss that draws random numbers per batch derives them from `(epoch, batch)`.
    fn loss_at(&self, images: &Tensor, labels: &Tensor, epoch: usize, _batch: usize) -> Result<Tensor> {
        self.loss(images, labels, epoch)
    }
    /// Measurements after `epoch` (a JSON object merged into the epoch's record).
    fn evaluate(&self, epoch: usize) -> Result<serde_json::Value>;
    /// The optimizer's parameter groups (`None`: those `cfg` implies, as for a plain network).
    fn groups(&self, _cfg: &TrainConfig) -> Result<Option<Vec<ParamGroup>>> {
        Ok(None)
    }
    /// Rewrites a batch's gradients before they accumulate and reach the optimizer (e.g. a
    /// straight-through estimator applied outside the graph).
    fn route_gradients(&self, _grads: &mut GradStore) -> Result<()> {
        Ok(())
    }
}

/// Cross-entropy training of a classifier, evaluated by top-1 / top-5 on `test`.
struct Classifier<'a, M: ?Sized, Te> {
    net: &'a M,
    test: &'a Te,
    smoothing: f64,
}

impl<M: Model + ?Sized, Te: Dataset> Objective for Classifier<'_, M, Te> {
    fn varmap(&self) -> &VarMap {
        self.net.varmap()
    }
    fn device(&self) -> &Device {
        self.net.device()
    }
    fn loss(&self, images: &Tensor, labels: &Tensor, _epoch: usize) -> Result<Tensor> {
        Ok(cross_entropy(&self.net.forward_t(images, true)?, labels, self.smoothing)?)
    }
    fn evaluate(&self, _epoch: usize) -> Result<serde_json::Value> {
        let (top1, top5) = evaluate(self.net, self.test, 256)?;
        Ok(json!({"top1": top1, "top5": top5}))
    }
}

/// Trains `net` on `train` with cross-entropy, evaluating on `test` after every epoch and
/// checkpointing at every epoch end (and every `checkpoint_every` steps). With `resume`, it
/// continues from the newest checkpoint of `run` and ends as an uninterrupted run would.
/// Returns the per-epoch records (`epoch`, `loss`, `top1`, `top5`, `lr`, `seconds`).
pub fn fit<M: Model + ?Sized, Tr: Dataset, Te: Dataset>(
    net: &M,
    train: &Tr,
    test: &Te,
    cfg: &TrainConfig,
    run: &mut Run,
    resume: bool,
    hooks: &mut dyn Hooks,
) -> Result<Vec<serde_json::Value>> {
    fit_objective(&Classifier { net, test, smoothing: cfg.label_smoothing }, train, cfg, run, resume, hooks)
}

/// The loop of [`fit`] for any [`Objective`]: shuffled batches (last partial batch dropped),
/// accumulation, the non-finite stop, checkpoints, resume; each epoch's record holds `epoch`,
/// `step`, `loss`, `lr`, `seconds` and the objective's evaluation.
pub fn fit_objective<O: Objective + ?Sized, Tr: Dataset>(
    obj: &O,
    train: &Tr,
    cfg: &TrainConfig,
    run: &mut Run,
    resume: bool,
    hooks: &mut dyn Hooks,
) -> Result<Vec<serde_json::Value>> {
    let mut e = match obj.groups(cfg)? {
        Some(groups) => Engine::with_groups(obj.varmap(), groups, cfg, run, resume, obj.device())?,
        None => Engine::new(obj.varmap(), cfg, run, resume, obj.device())?,
    };
    let batcher = Batcher::new(cfg.batch_size, true, cfg.seed, obj.device().clone())?.drop_last(true);
    while e.state.epoch < cfg.epochs {
        let epoch = e.state.epoch;
        hooks.on_epoch_start(epoch, obj.varmap())?;
        let names: Vec<String> = e.opt.groups().iter().map(|g| g.name.clone()).collect();
        for name in names {
            if let Some(scale) = hooks.lr_scale(&name, epoch) {
                e.opt.set_lr_scale(&name, scale)?;
            }
        }
        let start = std::time::Instant::now();
        let n = batcher.num_batches(train.len());
        let pb = progress(run.quiet, n as u64, &format!("epoch {}/{}", epoch + 1, cfg.epochs));
        pb.set_position(e.state.next_batch as u64);
        let first = e.state.next_batch;
        for (i, batch) in batcher.epoch(train, epoch as u64, first)?.enumerate() {
            let batch = batch?;
            let loss = obj.loss_at(&batch.images, &batch.labels, epoch, first + i)?;
            let stepped = e.micro_batch_routed(&loss, run, &|g| obj.route_gradients(g))?;
            e.state.loss_sum += f64::from(loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?);
            e.state.loss_count += 1;
            pb.inc(1);
            if stepped {
                e.state.next_batch = first + i + 1;
                hooks.after_step(e.state.step, obj.varmap())?;
                if cfg.log_every > 0 && e.state.step.is_multiple_of(cfg.log_every) {
                    run.log(&json!({"epoch": epoch, "step": e.state.step, "loss": e.epoch_loss(), "lr": e.lr()}))?;
                }
                e.after_step(run)?;
            }
        }
        e.apply()?;
        pb.finish_and_clear();
        let train_seconds = start.elapsed().as_secs_f64();
        let mut rec = json!({
            "epoch": epoch, "step": e.state.step, "loss": e.epoch_loss(),
            "lr": e.lr(), "seconds": train_seconds,
        });
        if let (Some(r), serde_json::Value::Object(m)) = (rec.as_object_mut(), obj.evaluate(epoch)?) {
            r.extend(m);
        }
        e.end_epoch(rec, run)?;
    }
    Ok(e.state.history)
}
