//! Training (section 2.7 and the CPU recipe of section 9): both stages on every image with
//! `CE(y_f) + KL(sg(p_f) || p_c)`, selection off until the last `select_epochs` epochs, AdamW
//! with a cosine schedule; the baseline is the same ViT trained on the fine tokens alone.

use crate::TokenBackbone;
use crate::budget::StageRecords;
use crate::error::Result;
use crate::loss::{Target, cf_loss};
use crate::model::CfVit;
use crate::regions::Selection;
use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarMap;
use compress_data::batch::{Batcher, Dataset};
use compress_train::classify::Objective;
use compress_train::engine::TrainConfig;
use compress_train::optim::OptimizerKind;
use compress_train::schedule::Schedule;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The training recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Epochs.
    pub epochs: usize,
    /// The last this many epochs run with selection on (section 2.7: epochs 201-300 of 300).
    pub select_epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// Cosine floor.
    pub min_lr: f64,
    /// Linear warm-up steps from `warmup_lr`.
    pub warmup_steps: u64,
    /// Warm-up start.
    pub warmup_lr: f64,
    /// AdamW decoupled weight decay (not on biases, norms, position tables, class token).
    pub weight_decay: f64,
    /// Label smoothing of the fine stage's cross-entropy.
    pub label_smoothing: f64,
}

impl TrainSettings {
    /// Section 9's validated settings: 24 epochs (selection on for the last 9), batch 64,
    /// AdamW 1e-3, weight decay 0.05, cosine to 1e-5 without warm-up, smoothing 0.1.
    pub fn mini() -> Self {
        Self {
            epochs: 24,
            select_epochs: 9,
            batch: 64,
            lr: 1e-3,
            min_lr: 1e-5,
            warmup_steps: 0,
            warmup_lr: 1e-6,
            weight_decay: 0.05,
            label_smoothing: 0.1,
        }
    }

    /// The epoch (0-based) from which selection is on.
    pub fn select_from(&self) -> usize {
        self.epochs.saturating_sub(self.select_epochs)
    }

    /// The engine's configuration for `steps_per_epoch` optimizer steps per epoch.
    pub fn engine_config(&self, steps_per_epoch: u64, seed: u64) -> TrainConfig {
        let total = steps_per_epoch * self.epochs as u64;
        let mut schedule = Schedule::cosine(self.lr, total, self.min_lr);
        if self.warmup_steps > 0 {
            schedule = schedule.with_warmup(self.warmup_steps, self.warmup_lr);
        }
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch,
            accumulate: 1,
            optimizer: OptimizerKind::adamw(),
            weight_decay: self.weight_decay,
            no_decay_on_norm_and_bias: true,
            schedule,
            label_smoothing: self.label_smoothing,
            seed,
            checkpoint_every: 0,
            log_every: 0,
            stop_after_steps: None,
        }
    }
}

/// Coarse and fine outcomes of every image of `data` (both stages on every image, eval mode),
/// the fine stage with `selection`.
pub fn stage_records<B: TokenBackbone, Ds: Dataset>(
    model: &CfVit<B>,
    data: &Ds,
    batch: usize,
    selection: Selection,
) -> Result<StageRecords> {
    let b = Batcher::new(batch, false, 0, model.device().clone())?;
    let mut r = StageRecords::default();
    for batch in b.epoch(data, 0, 0)? {
        let batch = batch?;
        let coarse = model.forward_coarse(&batch.images, false)?;
        let fine = model.forward_fine(&batch.images, &coarse, selection, false)?;
        let p = candle_nn::ops::softmax_last_dim(&coarse.logits.to_dtype(DType::F32)?)?;
        r.conf_coarse.extend(p.max(D::Minus1)?.to_vec1::<f32>()?);
        r.pred_coarse.extend(coarse.logits.argmax(D::Minus1)?.to_vec1::<u32>()?);
        r.pred_fine.extend(fine.argmax(D::Minus1)?.to_vec1::<u32>()?);
        r.labels.extend(batch.labels.to_dtype(DType::U32)?.to_vec1::<u32>()?);
    }
    Ok(r)
}

/// CF-ViT's objective: the joint loss, selection from `select_from`; evaluated by both stages'
/// top-1 on `test` (selection on).
pub struct CfObjective<'a, B: TokenBackbone, Te: Dataset> {
    /// The model.
    pub model: &'a CfVit<B>,
    /// Evaluation data.
    pub test: &'a Te,
    /// First epoch with selection on.
    pub select_from: usize,
    /// Label smoothing.
    pub smoothing: f64,
}

impl<B: TokenBackbone, Te: Dataset> std::fmt::Debug for CfObjective<'_, B, Te> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CfObjective").field("select_from", &self.select_from).finish()
    }
}

impl<B: TokenBackbone, Te: Dataset> Objective for CfObjective<'_, B, Te> {
    fn varmap(&self) -> &VarMap {
        self.model.varmap()
    }

    fn device(&self) -> &Device {
        self.model.device()
    }

    fn loss(&self, images: &Tensor, labels: &Tensor, epoch: usize) -> compress_train::Result<Tensor> {
        let selection = if epoch >= self.select_from { Selection::Informative } else { Selection::Off };
        let run = || -> Result<Tensor> {
            let (y_c, y_f) = self.model.forward_train(images, selection, true)?;
            Ok(cf_loss(&y_c, &y_f, Target::Hard(labels, self.smoothing))?)
        };
        run().map_err(to_train)
    }

    fn evaluate(&self, _epoch: usize) -> compress_train::Result<serde_json::Value> {
        let r = stage_records(self.model, self.test, 250, Selection::Informative).map_err(to_train)?;
        Ok(json!({"coarse_top1": r.coarse_top1(), "fine_top1": r.fine_top1(), "top1": r.fine_top1()}))
    }
}

fn to_train(e: crate::CfVitError) -> compress_train::TrainError {
    match e {
        crate::CfVitError::Train(t) => t,
        crate::CfVitError::Candle(c) => compress_train::TrainError::Candle(c),
        other => compress_train::error::method_err(other),
    }
}
