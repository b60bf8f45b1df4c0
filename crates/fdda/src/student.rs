//! The schedule of spec 2.5: the generator trains every iteration; the student's activation
//! ranges run during the first epochs; after the warm-up the fake-quantized student fine-tunes on
//! a real calibration batch plus the iteration's synthetic batch with
//! `CE(Q(x), y) + alpha T^2 KL(softmax(t / T) || softmax(Q / T))`, SGD Nesterov with weight decay
//! on every parameter and the per-step cosine rate, teacher and student in eval mode.

use crate::bits::{BitPolicy, student_quantizers};
use crate::centres::BnsCentres;
use crate::error::{Result, config_err};
use crate::generator::FddaGenerator;
use crate::losses::{cbns_loss, deep_start};
use crate::schedule::student_lr;
use candle_core::{DType, Tensor};
use compress_core::quant::RangeRule;
use compress_core::rng::SeededRng;
use compress_nn::fake_quant::{FakeQuant, with};
use compress_nn::half::{HalfModel, Precision};
use compress_nn::{Architecture, Model, Network};
use compress_synth::Teacher;
use compress_synth::crop::{CropBox, crop_resize, sample_box};
use compress_train::loss::{cross_entropy, distillation};
use compress_train::metrics::topk_correct;
use compress_train::optim::{Optimizer, OptimizerKind, all_params};
use rand::Rng;
use rand::seq::SliceRandom;
use std::sync::Arc;

/// What the activation ranges are calibrated on while they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RangeSource {
    /// The code: the iteration's (detached) random-label synthetic batch.
    Synthetic,
    /// The real calibration images (one batch per iteration), for every arm alike.
    Calibration,
}

/// The synthetic half's augmentation.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SynthAug {
    /// None (the last runnable version of the code).
    None,
    /// One RandomResizedCrop (area scale `scale..1`) and optional flip shared by the batch;
    /// teacher logits recomputed on the augmented batch (the latest code, as intended).
    PerBatchCrop {
        /// Lower bound of the crop's area fraction (0.5).
        scale: f64,
        /// Horizontal flip with probability 1/2.
        flip: bool,
    },
}

/// The student's recipe.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StudentSettings {
    /// Bit widths.
    pub policy: BitPolicy,
    /// How ranges average batch extrema (FDDA: plain EMA 0.9 from 0).
    pub rule: RangeRule,
    /// Iterations in all.
    pub iters: usize,
    /// Iterations per epoch (what the generator's epoch rules count in).
    pub iters_per_epoch: usize,
    /// Iterations before the first student update (generator only).
    pub warmup_iters: usize,
    /// Iterations whose batches move the activation ranges (frozen afterwards).
    pub calib_iters: usize,
    /// What the ranges see.
    pub ranges: RangeSource,
    /// Real images per student batch (16).
    pub real_batch: usize,
    /// RandomResizedCrop area scale of the real images (0.08 in the code; the digits: 0.5).
    pub real_crop: f64,
    /// Random flips of the real images.
    pub real_flip: bool,
    /// The synthetic half's augmentation.
    pub synth_aug: SynthAug,
    /// Synthetic images per student batch, the first of the generator's batch (`None`: all of
    /// it, as the code; a diagnostic knob).
    pub synth_batch: Option<usize>,
    /// Base rate, cosine over `t_max` student steps.
    pub lr: f64,
    /// The cosine's `T_max`.
    pub t_max: u64,
    /// Nesterov momentum.
    pub momentum: f64,
    /// Weight decay (every parameter).
    pub weight_decay: f64,
    /// KD weight alpha (20).
    pub kd_alpha: f64,
    /// KD temperature (20).
    pub kd_t: f64,
    /// Evaluate every this many iterations after the warm-up (and right before it).
    pub eval_every: usize,
    /// The precision of the teacher's passes (generator steps, distillation targets): `Bf16`
    /// halves their cost on a GPU; every loss and quantizer stays f32.
    #[serde(default)]
    pub teacher_precision: Precision,
}

/// The student's record.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StudentOutcome {
    /// `(iteration, top-1 %)` of every evaluation; the first is the calibrated, not yet
    /// fine-tuned student.
    pub evals: Vec<(usize, f64)>,
    /// Student steps taken.
    pub steps: u64,
}

impl StudentOutcome {
    /// The calibrated student before fine-tuning.
    pub fn calibrated(&self) -> f64 {
        self.evals.first().map_or(f64::NAN, |e| e.1)
    }

    /// The last evaluation.
    pub fn last(&self) -> f64 {
        self.evals.last().map_or(f64::NAN, |e| e.1)
    }

    /// The best evaluation (what the paper reports).
    pub fn best(&self) -> f64 {
        self.evals.iter().map(|e| e.1).fold(f64::NAN, f64::max)
    }

    /// The mean of the last `n` evaluations (a stable statistic: the final iterate swings).
    pub fn settled(&self, n: usize) -> f64 {
        let k = self.evals.len().min(n).max(1);
        self.evals.iter().rev().take(k).map(|e| e.1).sum::<f64>() / k as f64
    }
}

/// One real image per class (or more), `[N, C, H, W]`, and their labels.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// Images.
    pub images: Tensor,
    /// Labels `[N]` (u32).
    pub labels: Tensor,
}

impl Calibration {
    /// From `(image [C, H, W], class)` pairs.
    pub fn new(pairs: &[(Tensor, usize)]) -> Result<Self> {
        if pairs.is_empty() {
            return Err(config_err("an empty calibration set"));
        }
        let images = Tensor::stack(&pairs.iter().map(|p| p.0.clone()).collect::<Vec<_>>(), 0)?;
        let labels: Vec<u32> = pairs.iter().map(|p| p.1 as u32).collect();
        let n = labels.len();
        Ok(Self { labels: Tensor::from_vec(labels, n, images.device())?, images })
    }

    fn len(&self) -> usize {
        self.labels.dim(0).unwrap_or(0)
    }
}

/// A labelled test set held in memory, evaluated in batches.
#[derive(Debug, Clone)]
pub struct TestSet {
    /// Images `[N, C, H, W]`.
    pub images: Tensor,
    /// Labels `[N]` (u32).
    pub labels: Tensor,
}

impl TestSet {
    /// Every image and label of `data` (transforms applied, in order) on `device`.
    pub fn of(data: &impl compress_data::batch::Dataset, device: &candle_core::Device) -> Result<Self> {
        let b = compress_data::batch::Batcher::new(data.len(), false, 0, device.clone())?;
        let batch = b.epoch(data, 0, 0)?.next().ok_or_else(|| config_err("an empty dataset"))??;
        Ok(Self { images: batch.images, labels: batch.labels })
    }
}

fn evaluate<A: Architecture>(student: &Network<A>, q: &Arc<FakeQuant>, test: &TestSet) -> Result<f64> {
    let n = test.labels.dim(0)?;
    let mut correct = 0;
    for start in (0..n).step_by(256) {
        let len = 256.min(n - start);
        let x = test.images.narrow(0, start, len)?;
        let logits = with(q, || student.forward_t(&x, false))?;
        correct += topk_correct(&logits, &test.labels.narrow(0, start, len)?, 1)?;
    }
    Ok(100.0 * correct as f64 / n.max(1) as f64)
}

/// Crops (and flips) a batch per image (`shared`: one box and flip for the whole batch).
fn augment(x: &Tensor, scale: f64, flip: bool, shared: bool, rng: &mut rand::rngs::StdRng) -> Result<Tensor> {
    let (b, _, h, w) = x.dims4()?;
    let mut draw = || -> (CropBox, bool) {
        let bx = sample_box(h, w, (scale, 1.0), (0.75, 4.0 / 3.0), rng);
        (bx, flip && rng.random_bool(0.5))
    };
    let (boxes, flips): (Vec<CropBox>, Vec<bool>) = if shared {
        let (bx, f) = draw();
        (vec![bx; b], vec![f; b])
    } else {
        (0..b).map(|_| draw()).unzip()
    };
    Ok(crop_resize(x, &boxes, &flips, h)?)
}

/// Runs the schedule: `generator` (none: the calibration-only arm) trains every iteration, the
/// student (a copy of `teacher`'s weights, quantized by `settings.policy`) calibrates its ranges
/// and then fine-tunes. Random streams derive from `seed`. Returns the student, its quantizers
/// (run it under `compress_nn::fake_quant::with(&q, ..)`) and its record.
pub fn run_student<A: Architecture>(
    teacher: &Network<A>,
    mut generator: Option<&mut FddaGenerator>,
    calib: &Calibration,
    test: &TestSet,
    s: &StudentSettings,
    seed: u64,
) -> Result<(Network<A>, Arc<FakeQuant>, StudentOutcome)> {
    if s.real_batch == 0 || s.real_batch > calib.len() || s.iters_per_epoch == 0 || s.calib_iters > s.warmup_iters {
        return Err(config_err(format!(
            "real batch {} of {} calibration images, {} iterations per epoch, ranges for {} of {} warm-up iterations",
            s.real_batch,
            calib.len(),
            s.iters_per_epoch,
            s.calib_iters,
            s.warmup_iters
        )));
    }
    let student = Network::<A>::from_tensors(teacher.config.clone(), &teacher.tensors()?, teacher.device())?;
    let q = student_quantizers(&student, s.policy, s.rule)?;
    let kind = OptimizerKind::sgd(s.momentum, true);
    let mut opt = Optimizer::new(kind, all_params(student.varmap(), s.weight_decay)?)?;
    let rng = SeededRng::new(seed);
    let mut order: Vec<usize> = Vec::new();
    let mut pass = 0u64;
    let mut real_batch = |i: usize| -> Result<(Tensor, Tensor)> {
        // Shuffled passes over the calibration set, the last partial batch dropped.
        if order.len() < s.real_batch {
            order = (0..calib.len()).collect();
            order.shuffle(&mut rng.stream("fdda/real-order", pass));
            order.truncate(calib.len() / s.real_batch * s.real_batch);
            pass += 1;
        }
        let idx: Vec<u32> = order.drain(..s.real_batch).map(|k| k as u32).collect();
        let idx = Tensor::from_vec(idx, s.real_batch, calib.images.device())?;
        let x = calib.images.index_select(&idx, 0)?;
        let x = augment(&x, s.real_crop, s.real_flip, false, &mut rng.stream("fdda/real-crop", i as u64))?;
        Ok((x, calib.labels.index_select(&idx, 0)?))
    };
    let half = match s.teacher_precision {
        Precision::F32 => None,
        p => Some(HalfModel::new(teacher, p.dtype())?),
    };
    let probed: &dyn Teacher = match &half {
        Some(h) => h,
        None => teacher,
    };
    let targets = |x: &Tensor| -> Result<Tensor> {
        Ok(match &half {
            Some(h) => h.forward_t(x, false)?,
            None => teacher.forward_t(x, false)?,
        })
    };
    let mut out = StudentOutcome { evals: Vec::new(), steps: 0 };
    for i in 0..s.iters {
        let epoch = i / s.iters_per_epoch;
        let synth = match generator.as_deref_mut() {
            Some(g) => Some(g.step(probed, epoch, &mut rng.stream("fdda/generator", i as u64))?),
            None => None,
        };
        if i < s.calib_iters {
            let x = match (s.ranges, &synth) {
                (RangeSource::Synthetic, Some((x, _, _))) => x.clone(),
                _ => real_batch(i)?.0,
            };
            with(&q, || student.forward_t(&x, false))?;
        }
        if i + 1 == s.calib_iters.max(1) {
            q.set_running(false)?;
        }
        if i < s.warmup_iters {
            if i + 1 == s.warmup_iters {
                out.evals.push((i + 1, evaluate(&student, &q, test)?));
            }
            continue;
        }
        let (xr, yr) = real_batch(i)?;
        let (x, y) = match &synth {
            Some((xs, ys, _)) => {
                let (xs, ys) = match s.synth_batch {
                    Some(n) if n > xs.dim(0)? => {
                        return Err(config_err(format!(
                            "{n} synthetic images per student batch, the generator makes {}",
                            xs.dim(0)?
                        )));
                    }
                    Some(n) => (xs.narrow(0, 0, n)?, ys.narrow(0, 0, n)?),
                    None => (xs.clone(), ys.clone()),
                };
                let xs = match s.synth_aug {
                    SynthAug::None => xs,
                    SynthAug::PerBatchCrop { scale, flip } => {
                        augment(&xs, scale, flip, true, &mut rng.stream("fdda/synth-crop", i as u64))?
                    }
                };
                (Tensor::cat(&[&xr, &xs], 0)?, Tensor::cat(&[&yr, &ys], 0)?)
            }
            None => (xr, yr),
        };
        let t = targets(&x)?.detach();
        let logits = with(&q, || student.forward_t(&x, false))?;
        let loss = (cross_entropy(&logits, &y, 0.0)? + (distillation(&logits, &t, s.kd_t)? * s.kd_alpha)?)?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            return Err(config_err(format!("non-finite student loss at iteration {i} (rate {})", s.lr)));
        }
        opt.step(&loss.backward()?, student_lr(out.steps, s.lr, s.t_max))?;
        out.steps += 1;
        let done = i + 1 - s.warmup_iters;
        if done.is_multiple_of(s.eval_every.max(1)) || i + 1 == s.iters {
            out.evals.push((i + 1, evaluate(&student, &q, test)?));
        }
    }
    Ok((student, q, out))
}

/// The mean C-BNS distance of fresh class batches (`batch` images of each class in `K`) to their
/// centres over the deep layers: how well a generator aligns with the calibration statistics.
pub fn cbns_distance<T: Teacher + ?Sized>(
    generator: &FddaGenerator,
    teacher: &T,
    centres: &BnsCentres,
    batch: usize,
    seed: u64,
) -> Result<f64> {
    let rng = SeededRng::new(seed);
    let dev = generator.generator.device().clone();
    let mut total = Vec::new();
    for (c, _) in centres.correct.iter().enumerate().filter(|(_, k)| **k) {
        let (z, _) = generator.generator.sample_inputs(batch, &mut rng.stream("fdda/distance", c as u64), &dev)?;
        let y = Tensor::from_vec(vec![c as u32; batch], batch, &dev)?;
        let out = teacher.forward_probe(&generator.generator.forward(&z, &y)?.detach())?;
        let start = generator.settings.deep_start.unwrap_or_else(|| deep_start(out.bn.len()));
        total.push(cbns_loss(&out.bn, centres, c, start)?.to_dtype(DType::F64)?.to_scalar::<f64>()?);
    }
    Ok(total.iter().sum::<f64>() / total.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{GeneratorSettings, LossWeights};
    use crate::net::{DigitCnn, digit_cnn};
    use candle_core::Device;
    use compress_synth::generator::Conditioning;
    use compress_synth::{CondGenerator, GenConfig};

    fn settings(iters: usize) -> StudentSettings {
        StudentSettings {
            policy: BitPolicy::Uniform { w: 3, a: 3 },
            rule: RangeRule::Plain,
            iters,
            iters_per_epoch: 2,
            warmup_iters: 6,
            calib_iters: 3,
            ranges: RangeSource::Synthetic,
            real_batch: 2,
            real_crop: 0.5,
            real_flip: false,
            synth_aug: SynthAug::PerBatchCrop { scale: 0.5, flip: true },
            synth_batch: None,
            lr: 1e-5,
            t_max: 4,
            momentum: 0.9,
            weight_decay: 1e-4,
            kd_alpha: 20.0,
            kd_t: 20.0,
            eval_every: 2,
            teacher_precision: Precision::F32,
        }
    }

    /// Section 8: the student is bit-identical to the teacher before the warm-up ends, and the
    /// activation ranges move only in the calibration iterations.
    #[test]
    fn warmup_leaves_the_student_and_ranges_move_only_while_calibrating() {
        let dev = Device::Cpu;
        let teacher = Network::<DigitCnn>::new(digit_cnn().unwrap(), 0, &dev).unwrap();
        let img = |k: usize| (Tensor::ones((1, 28, 28), DType::F32, &dev).unwrap() * (k as f64 / 5.0 - 1.0)).unwrap();
        let pairs: Vec<(Tensor, usize)> = (0..10).map(|k| (img(k), k)).collect();
        let mut centres = BnsCentres::compute(&teacher, &pairs, 10).unwrap();
        centres.correct[0] = true;
        let calib = Calibration::new(&pairs).unwrap();
        let test = TestSet { images: calib.images.clone(), labels: calib.labels.clone() };
        let gen_cfg = GenConfig {
            latent: 8,
            classes: 10,
            init_size: 7,
            channels: 1,
            inner_eps: 0.8,
            conditioning: Conditioning::CondBn,
            widths: [8, 6, 4],
        };
        let make = || {
            let g = CondGenerator::new(gen_cfg.clone(), 0, &dev).unwrap();
            let gs = GeneratorSettings {
                batch: 4,
                deep_start: Some(2),
                weights: LossWeights::code(),
                ..GeneratorSettings::code()
            };
            FddaGenerator::new(g, centres.clone(), gs).unwrap()
        };
        let (mut g, t) = (make(), teacher.tensors().unwrap());
        let (student, q, out) = run_student(&teacher, Some(&mut g), &calib, &test, &settings(6), 0).unwrap();
        let s = student.tensors().unwrap();
        for (k, v) in &t {
            let d = (v - &s[k]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(d, 0.0, "{k} moved during the warm-up");
        }
        assert_eq!((out.steps, out.evals.len()), (0, 1), "only the calibrated evaluation");
        assert!(q.snapshot().unwrap().iter().all(|r| r.updates() == 3 && !r.running));
        let (student, q, out) = run_student(&teacher, Some(&mut make()), &calib, &test, &settings(10), 0).unwrap();
        assert_eq!((out.steps, out.evals.len()), (4, 3));
        assert!(q.snapshot().unwrap().iter().all(|r| r.updates() == 3), "fine-tuning does not move the ranges");
        let moved = student
            .tensors()
            .unwrap()
            .iter()
            .any(|(k, v)| (v - &t[k]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
        assert!(moved);
        // The calibration-only arm needs no generator.
        let (_, _, a) = run_student(&teacher, None, &calib, &test, &settings(8), 1).unwrap();
        assert_eq!(a.steps, 2);
        // A part of the synthetic batch changes the student's steps; more than the batch is an error.
        let part = StudentSettings { synth_batch: Some(1), ..settings(10) };
        let (fewer, _, _) = run_student(&teacher, Some(&mut make()), &calib, &test, &part, 0).unwrap();
        let full = student.tensors().unwrap();
        let gap = |net: &Network<DigitCnn>| -> f32 {
            let t = net.tensors().unwrap();
            t.iter()
                .map(|(k, v)| (v - &full[k]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap())
                .fold(0f32, f32::max)
        };
        assert!(gap(&fewer) > 0.0, "1 of 4 synthetic images trains another student");
        let all = StudentSettings { synth_batch: Some(4), ..settings(10) };
        let (same, _, _) = run_student(&teacher, Some(&mut make()), &calib, &test, &all, 0).unwrap();
        assert_eq!(gap(&same), 0.0, "all 4 of 4 is the default");
        // The teacher's passes in half precision: another student, close to the f32 one.
        let f16 = StudentSettings { teacher_precision: Precision::F16, ..settings(10) };
        let (halved, _, h) = run_student(&teacher, Some(&mut make()), &calib, &test, &f16, 0).unwrap();
        assert_eq!((h.steps, h.evals.len()), (4, 3));
        let scale =
            full.values().map(|v| v.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()).fold(0f32, f32::max);
        let g = gap(&halved);
        assert!(g > 0.0 && g < 0.05 * scale, "f16 teacher passes moved the student by {g} of {scale}");
        let over = StudentSettings { synth_batch: Some(5), ..settings(10) };
        let e = run_student(&teacher, Some(&mut make()), &calib, &test, &over, 0).unwrap_err();
        assert!(e.to_string().contains("5 synthetic images"), "{e}");
    }
}
