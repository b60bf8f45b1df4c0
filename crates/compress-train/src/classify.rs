//! Training and evaluating classifiers.

use crate::engine::{Engine, Hooks, TrainConfig, progress};
use crate::error::Result;
use crate::loss::cross_entropy;
use crate::metrics::topk_correct;
use crate::record::Run;
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
    let mut e = Engine::new(net.varmap(), cfg, run, resume, net.device())?;
    let batcher = Batcher::new(cfg.batch_size, true, cfg.seed, net.device().clone())?.drop_last(true);
    while e.state.epoch < cfg.epochs {
        let epoch = e.state.epoch;
        hooks.on_epoch_start(epoch, net.varmap())?;
        let start = std::time::Instant::now();
        let n = batcher.num_batches(train.len());
        let pb = progress(run.quiet, n as u64, &format!("epoch {}/{}", epoch + 1, cfg.epochs));
        pb.set_position(e.state.next_batch as u64);
        let first = e.state.next_batch;
        for (i, batch) in batcher.epoch(train, epoch as u64, first)?.enumerate() {
            let batch = batch?;
            let logits = net.forward_t(&batch.images, true)?;
            let loss = cross_entropy(&logits, &batch.labels, cfg.label_smoothing)?;
            let stepped = e.micro_batch(&loss, run)?;
            e.state.loss_sum += f64::from(loss.to_scalar::<f32>()?);
            e.state.loss_count += 1;
            pb.inc(1);
            if stepped {
                e.state.next_batch = first + i + 1;
                hooks.after_step(e.state.step, net.varmap())?;
                if cfg.log_every > 0 && e.state.step.is_multiple_of(cfg.log_every) {
                    run.log(&json!({"epoch": epoch, "step": e.state.step, "loss": e.epoch_loss(), "lr": e.lr()}))?;
                }
                e.after_step(run)?;
            }
        }
        e.apply()?;
        pb.finish_and_clear();
        let (top1, top5) = evaluate(net, test, 256)?;
        let rec = json!({
            "epoch": epoch, "step": e.state.step, "loss": e.epoch_loss(),
            "top1": top1, "top5": top5,
            "lr": e.lr(), "seconds": start.elapsed().as_secs_f64(),
        });
        e.end_epoch(rec, run)?;
    }
    Ok(e.state.history)
}
