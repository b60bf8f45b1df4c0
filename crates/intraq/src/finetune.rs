//! Stage 2 (spec 2.3): activation-range calibration, then fine-tuning of the fake-quantized
//! student on the synthetic images with `CE(Q(x), y) + alpha T^2 KL(softmax(t/T) || softmax(Q(x)/T))`,
//! SGD with Nesterov momentum and weight decay on every parameter, both networks in eval mode.

use crate::error::{IntraqError, Result};
use crate::reproduce::Arm;
use candle_core::{Device, Tensor};
use compress_core::quant::RangeRule;
use compress_core::rng::SeededRng;
use compress_data::batch::Dataset;
use compress_nn::Model;
use compress_nn::fake_quant::Quantized;
use compress_synth::crop::{CropBox, crop_resize, sample_box};
use compress_synth::{CondGenerator, GdfqTrainer, GenConfig, SyntheticSet};
use compress_train::engine::{Engine, TrainConfig};
use compress_train::harness::RunContext;
use compress_train::loss::{cross_entropy, distillation};
use compress_train::optim::{OptimizerKind, all_params};
use compress_train::record::Run;
use compress_train::schedule::{Decay, Schedule};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// What moves the activation ranges before fine-tuning (spec 2.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CalibSource {
    /// The synthetic images, `calib_batches` batches in order (the spec's alternative).
    Synthetic,
    /// The official code's: a GDFQ generator trained alongside (`CE + bns_weight L_BNS`, Adam
    /// 1e-3, betas 0.5 / 0.999), whose detached batches of `batch` images pass through the
    /// student, one per generator step, `calib_batches` steps in all.
    Generator {
        /// The generator's shape.
        config: GenConfig,
        /// Images per generator step (16).
        batch: usize,
        /// Adam learning rate (1e-3).
        lr: f64,
        /// Weight of `L_BNS` (0.1).
        bns_weight: f64,
    },
}

impl CalibSource {
    /// The official code's generator calibration for `config`.
    pub fn generator(config: GenConfig) -> Self {
        Self::Generator { config, batch: 16, lr: 1e-3, bns_weight: 0.1 }
    }
}

fn synthetic() -> CalibSource {
    CalibSource::Synthetic
}

/// The fine-tuning recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// Optimizer steps.
    pub steps: u64,
    /// Batch size.
    pub batch: usize,
    /// Initial learning rate.
    pub lr: f64,
    /// Steps at which the rate is multiplied by 0.1.
    pub milestones: Vec<u64>,
    /// Nesterov momentum.
    pub momentum: f64,
    /// Weight decay (every parameter, BN affine included).
    pub weight_decay: f64,
    /// KD weight alpha.
    pub kd_alpha: f64,
    /// KD temperature.
    pub kd_t: f64,
    /// Calibration batches (ranges running) before fine-tuning.
    pub calib_batches: usize,
    /// Where the calibration batches come from.
    #[serde(default = "synthetic")]
    pub calib: CalibSource,
    /// RandomResizedCrop area lower bound.
    pub crop_scale: f64,
    /// Random horizontal flips of the fine-tuning crops (not for digits).
    #[serde(default)]
    pub flip: bool,
    /// Evaluate on the real test set every this many steps.
    pub eval_every: u64,
}

impl FinetuneConfig {
    /// Section 9 with its validated learning rate: 600 steps of batch 64, lr 1e-5 (x0.1 at 400),
    /// Nesterov 0.9, wd 1e-4, alpha = T = 20, 20 calibration batches, crops of scale 0.5-1.
    pub fn mini() -> Self {
        Self {
            steps: 600,
            batch: 64,
            lr: 1e-5,
            milestones: vec![400],
            momentum: 0.9,
            weight_decay: 1e-4,
            kd_alpha: 20.0,
            kd_t: 20.0,
            calib_batches: 20,
            calib: CalibSource::Synthetic,
            crop_scale: 0.5,
            flip: false,
            eval_every: 100,
        }
    }

    /// The engine's view of the recipe.
    pub fn engine_config(&self, seed: u64) -> TrainConfig {
        TrainConfig {
            epochs: 1,
            batch_size: self.batch,
            accumulate: 1,
            optimizer: OptimizerKind::sgd(self.momentum, true),
            weight_decay: self.weight_decay,
            no_decay_on_norm_and_bias: false,
            schedule: Schedule {
                base_lr: self.lr,
                decay: Decay::MultiStep { milestones: self.milestones.clone(), gamma: 0.1 },
                warmup_steps: 0,
                warmup_start: 0.0,
            },
            label_smoothing: 0.0,
            seed,
            checkpoint_every: 100,
            log_every: 0,
            stop_after_steps: None,
        }
    }
}

/// The paper's per-epoch rate: `lr0 0.1^{#{m in milestones : e + 1 > m}}`.
pub fn lr_at_epoch(lr0: f64, milestones: &[u64], epoch: u64) -> f64 {
    lr0 * 0.1f64.powi(milestones.iter().filter(|&&m| epoch + 1 > m).count() as i32)
}

/// A batch of synthetic images (rows `idx`) with a fresh crop (and flip) each.
fn batch(
    set: &SyntheticSet,
    idx: &[usize],
    scale: f64,
    flip: bool,
    rng: &mut rand::rngs::StdRng,
) -> Result<(Tensor, Tensor)> {
    let dev = set.images.device();
    let ids = Tensor::from_vec(idx.iter().map(|&i| i as u32).collect::<Vec<u32>>(), idx.len(), dev)?;
    let x = set.images.index_select(&ids, 0)?;
    let (_, _, h, w) = x.dims4()?;
    let mut boxes: Vec<CropBox> = Vec::with_capacity(idx.len());
    let mut flips = Vec::with_capacity(idx.len());
    for _ in idx {
        boxes.push(sample_box(h, w, (scale, 1.0), (0.75, 4.0 / 3.0), rng));
        flips.push(flip && rng.random_bool(0.5));
    }
    let x = crop_resize(&x, &boxes, &flips, h)?;
    let y = Tensor::from_vec(idx.iter().map(|&i| set.labels[i]).collect::<Vec<u32>>(), idx.len(), dev)?;
    Ok((x, y))
}

/// Moves the student's activation ranges over `cfg.calib_batches` batches, then freezes them:
/// the synthetic images in order without augmentation, or a GDFQ generator's batches while it
/// trains against `teacher` (seeded by `seed`).
pub fn calibrate<M: Model, T: Model + ?Sized>(
    student: &Quantized<M>,
    teacher: &T,
    set: &SyntheticSet,
    cfg: &FinetuneConfig,
    seed: u64,
) -> Result<()> {
    match &cfg.calib {
        CalibSource::Synthetic => calibrate_on(student, set, cfg),
        CalibSource::Generator { config, batch, lr, bns_weight } => {
            let device = set.images.device();
            let g = CondGenerator::new(config.clone(), SeededRng::new(seed).child("generator").seed(), device)?;
            let mut trainer = GdfqTrainer::new(g, *lr, *bns_weight)?;
            let mut rng = SeededRng::new(seed).stream("generator", 0);
            student.quant.set_running(true)?;
            for _ in 0..cfg.calib_batches {
                let (x, _, _) = trainer.step(teacher, *batch, &mut rng)?;
                student.forward_t(&x, false)?;
            }
            Ok(student.quant.set_running(false)?)
        }
    }
}

fn calibrate_on<M: Model>(student: &Quantized<M>, set: &SyntheticSet, cfg: &FinetuneConfig) -> Result<()> {
    student.quant.set_running(true)?;
    let n = set.labels.len();
    for b in 0..cfg.calib_batches {
        let idx: Vec<u32> = (0..cfg.batch).map(|i| ((b * cfg.batch + i) % n) as u32).collect();
        let ids = Tensor::from_vec(idx, cfg.batch, set.images.device())?;
        student.forward_t(&set.images.index_select(&ids, 0)?, false)?;
    }
    Ok(student.quant.set_running(false)?)
}

/// Top-1 (%) on real data.
pub fn top1<M: Model + ?Sized, D: Dataset>(net: &M, data: &D) -> Result<f64> {
    Ok(compress_train::classify::evaluate(net, data, 250)?.0)
}

/// Fine-tunes `student` (calibrated, ranges frozen) against `teacher` on `set`; returns the
/// test top-1 after every `eval_every` steps. Checkpoints every 100 steps; with `resume` it
/// continues from `run`'s newest checkpoint (the ranges come from the same calibration).
#[allow(clippy::too_many_arguments)]
pub fn finetune<M: Model, T: Model + ?Sized, D: Dataset>(
    student: &Quantized<M>,
    teacher: &T,
    set: &SyntheticSet,
    test: &D,
    cfg: &FinetuneConfig,
    seed: u64,
    run: &mut Run,
    resume: bool,
    device: &Device,
) -> Result<Vec<f64>> {
    let tc = cfg.engine_config(seed);
    let groups = all_params(student.varmap(), cfg.weight_decay)?;
    let mut e = Engine::with_groups(student.varmap(), groups, &tc, run, resume, device)?;
    let rng = SeededRng::new(seed).child("finetune");
    let n = set.labels.len();
    let mut evals: Vec<f64> = e.state.history.iter().filter_map(|h| h["top1"].as_f64()).collect();
    while e.state.step < cfg.steps {
        let step = e.state.step;
        let mut r = rng.stream("batch", step);
        let idx: Vec<usize> = (0..cfg.batch).map(|_| r.random_range(0..n)).collect();
        let (x, y) = batch(set, &idx, cfg.crop_scale, cfg.flip, &mut r)?;
        let t = teacher.forward_t(&x, false)?.detach();
        let s = student.forward_t(&x, false)?;
        let loss = (cross_entropy(&s, &y, 0.0)? + (distillation(&s, &t, cfg.kd_t)? * cfg.kd_alpha)?)?;
        e.micro_batch(&loss, run)?;
        if e.state.step.is_multiple_of(cfg.eval_every) || e.state.step == cfg.steps {
            let acc = top1(student, test)?;
            evals.push(acc);
            let rec = serde_json::json!({"step": e.state.step, "top1": acc, "lr": e.lr()});
            run.log(&rec)?;
            e.state.history.push(rec);
        }
        e.after_step(run)?;
    }
    if evals.is_empty() {
        return Err(IntraqError::Config("fine-tuning ran no step".into()));
    }
    Ok(evals)
}

/// One quantized model's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuantOutcome {
    /// Synthesis arm.
    pub arm: Arm,
    /// `(w, a)` bits.
    pub bits: (u32, u32),
    /// Top-1 (%) after calibration, before fine-tuning.
    pub calibrated: f64,
    /// Top-1 (%) after each evaluation of fine-tuning (the last is the final model).
    pub evals: Vec<f64>,
}

impl QuantOutcome {
    /// Final top-1.
    pub fn last(&self) -> f64 {
        self.evals.last().copied().unwrap_or(f64::NAN)
    }
    /// Best of the evaluations.
    pub fn best(&self) -> f64 {
        self.evals.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
    /// The mean of the last [`SETTLED`] evaluations (all, if fewer): what the reports judge.
    /// At the mini's distillation temperature (T = 20) W4A4 swings by up to 57 points between
    /// evaluations 25 steps apart, whatever the learning rate (the `finetune_stability`
    /// example), so a single final evaluation is a draw from that swing, not a result.
    pub fn settled(&self) -> f64 {
        let tail = &self.evals[self.evals.len().saturating_sub(SETTLED)..];
        if tail.is_empty() { f64::NAN } else { tail.iter().sum::<f64>() / tail.len() as f64 }
    }
}

/// Evaluations averaged by [`QuantOutcome::settled`].
pub const SETTLED: usize = 3;

/// Stage 2 for every bit-width of one synthetic set: a fresh student per bit-width, calibrated
/// (top-1 measured), then fine-tuned with evaluations; runs are the context's arms
/// `<name>-w{w}a{a}-seed{seed}` and resume from their checkpoints.
#[derive(Debug, Clone)]
pub struct Stage2<'a> {
    /// `(w, a)` bit-widths (all layers).
    pub bits: &'a [(u32, u32)],
    /// The recipe.
    pub finetune: &'a FinetuneConfig,
    /// How activation ranges run.
    pub range_rule: RangeRule,
    /// Seed of calibration and fine-tuning.
    pub seed: u64,
    /// The synthesis arm the images came from (recorded in the outcomes).
    pub arm: Arm,
    /// Arm name prefix (within the context's `<method>/<profile>/`).
    pub name: String,
}

impl Stage2<'_> {
    /// Quantizes `fresh()` copies of the teacher at every bit-width.
    pub fn run<M: Model, T: Model + ?Sized, D: Dataset>(
        &self,
        fresh: impl Fn() -> Result<M>,
        teacher: &T,
        set: &SyntheticSet,
        test: &D,
        ctx: &RunContext,
    ) -> Result<Vec<QuantOutcome>> {
        let mut out = Vec::new();
        for &(w, a) in self.bits {
            let student = Quantized::new(fresh()?, w, a, self.range_rule)?;
            calibrate(&student, teacher, set, self.finetune, self.seed)?;
            let calibrated = top1(&student, test)?;
            let name = format!("{}-w{w}a{a}-seed{}", self.name, self.seed);
            let (mut run, resuming) = ctx.arm(&name, &self.finetune.engine_config(self.seed))?;
            let (seed, device) = (self.seed, ctx.device());
            let evals = finetune(&student, teacher, set, test, self.finetune, seed, &mut run, resuming, device)?;
            out.push(QuantOutcome { arm: self.arm, bits: (w, a), calibrated, evals });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod settled_tests {
    use super::*;

    #[test]
    fn settled_is_the_mean_of_the_last_three_evaluations() {
        let q = |evals: Vec<f64>| QuantOutcome { arm: Arm::IntraQ, bits: (4, 4), calibrated: 50.0, evals };
        let swing = q(vec![66.3, 66.1, 85.1, 22.9, 77.2, 39.0]);
        assert!((swing.settled() - (22.9 + 77.2 + 39.0) / 3.0).abs() < 1e-12);
        assert_eq!((swing.last(), swing.best()), (39.0, 85.1));
        assert_eq!(q(vec![10.0, 20.0]).settled(), 15.0);
        assert!(q(vec![]).settled().is_nan());
    }
}
