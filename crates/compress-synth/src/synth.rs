//! The synthesis loop (intraq spec 2.1): groups x batches of noise images optimised one batch at
//! a time with Adam against `L_BNS + L_SIL + L_MDC` (+ a method's own terms), local object
//! reinforcement before the teacher sees them, the plateau rule stepped every iteration, class
//! centres from the images finished before. Deterministic for a seed; finished batches are
//! cached so an interrupted synthesis resumes and fine-tuning can reuse them.

use crate::centres::ClassCentres;
use crate::crop::random_resized_crop;
use crate::error::{Result, SynthError};
use crate::losses::{bns_loss, mdc_loss, soft_inception_loss};
use crate::plateau::Plateau;
use crate::teacher::{Teacher, TeacherOut};
use candle_core::{DType, Device, Tensor, Var};
use compress_core::rng::SeededRng;
use compress_train::optim::{Optimizer, OptimizerKind, ParamGroup};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What to synthesise and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// Groups (class centres accumulate across groups, generated in order).
    pub groups: usize,
    /// Batches per group.
    pub batches_per_group: usize,
    /// Images per batch.
    pub batch: usize,
    /// Adam iterations per batch.
    pub iters: usize,
    /// Adam learning rate (betas 0.9 / 0.999, eps 1e-8).
    pub lr: f64,
    /// Plateau rule: factor, patience, relative threshold, floor.
    pub plateau: (f64, u32, f64, f64),
    /// Soft-label lower bound epsilon (1: hard targets).
    pub eps_soft: f64,
    /// Probability that an image gets a soft target `U(eps, 1)` (the official code: 0.5).
    pub p_soft: f64,
    /// MDC lower / upper cosine-distance bounds ((0, 2): off).
    pub lambda: (f64, f64),
    /// LOR crop area lower bound eta.
    pub eta: f64,
    /// Probability of LOR per iteration (one coin for the batch).
    pub p_lor: f64,
    /// Horizontal flips after the crop.
    pub flip: bool,
    /// Image side.
    pub image_size: usize,
    /// Image channels.
    pub channels: usize,
    /// Classes.
    pub classes: usize,
}

impl SynthConfig {
    /// The official CIFAR-10 script: 4 x 5 x 256 images, 1,000 iterations, lr 0.5, eps 0.95,
    /// lambda (0.05, 0.8), eta 0.5, LOR 0.5, flips.
    pub fn cifar10() -> Self {
        Self {
            groups: 4,
            batches_per_group: 5,
            batch: 256,
            iters: 1000,
            lr: 0.5,
            plateau: (0.1, 50, 1e-4, 1e-4),
            eps_soft: 0.95,
            p_soft: 0.5,
            lambda: (0.05, 0.8),
            eta: 0.5,
            p_lor: 0.5,
            flip: true,
            image_size: 32,
            channels: 3,
            classes: 10,
        }
    }

    /// CIFAR-100: eps 0.6, lambda (0.02, 1.0).
    pub fn cifar100() -> Self {
        Self { eps_soft: 0.6, lambda: (0.02, 1.0), classes: 100, ..Self::cifar10() }
    }

    /// The released ImageNet script: eps 1, lambda (0, 2) (MDC and soft labels off), 224 px.
    pub fn imagenet() -> Self {
        Self { eps_soft: 1.0, lambda: (0.0, 2.0), image_size: 224, classes: 1000, ..Self::cifar10() }
    }

    /// Checks the configuration is possible.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(SynthError::Config(m));
        if self.groups == 0 || self.batches_per_group == 0 || self.batch == 0 || self.iters == 0 {
            return bad("groups, batches, batch size and iterations must be at least 1".into());
        }
        if self.image_size == 0 || self.channels == 0 || self.classes == 0 {
            return bad("image size, channels and classes must be at least 1".into());
        }
        let unit = 0.0..=1.0;
        if self.lr.is_nan() || self.lr <= 0.0 || !unit.contains(&self.eps_soft) || !unit.contains(&self.p_soft) {
            return bad(format!(
                "lr {} must be > 0, eps {} and p_soft {} in [0, 1]",
                self.lr, self.eps_soft, self.p_soft
            ));
        }
        if !unit.contains(&self.p_lor) || self.eta.is_nan() || self.eta <= 0.0 || self.eta > 1.0 {
            return bad(format!("p_lor {} must be in [0, 1] and eta {} in (0, 1]", self.p_lor, self.eta));
        }
        if self.lambda.0 > self.lambda.1 {
            return bad(format!("MDC bounds {:?} are reversed", self.lambda));
        }
        Ok(())
    }

    /// Total images.
    pub fn images(&self) -> usize {
        self.groups * self.batches_per_group * self.batch
    }
}

/// What one synthesised batch ended at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchStats {
    /// `(group, batch)`.
    pub index: (usize, usize),
    /// Total loss of the last iteration.
    pub loss: f64,
    /// BN-statistics loss of the last iteration.
    pub bns: f64,
    /// Learning rate after the last plateau step.
    pub lr: f64,
    /// Whether the batch came from the cache.
    pub cached: bool,
}

/// The state a method's extra loss term sees for one iteration.
#[derive(Debug)]
pub struct BatchContext<'a> {
    /// The images the teacher saw (after LOR).
    pub images: &'a Tensor,
    /// Labels `[B]` (u32).
    pub labels: &'a Tensor,
}

/// A method's own synthesis term (FDDA plugs its terms in here), added to the core loss.
pub trait SynthTerm {
    /// The term's value for one iteration.
    fn loss(&self, out: &TeacherOut, ctx: &BatchContext) -> Result<Tensor>;
}

/// Synthetic images in the teacher's normalised input space and their labels.
#[derive(Debug, Clone)]
pub struct SyntheticSet {
    /// `[N, C, S, S]` images.
    pub images: Tensor,
    /// Labels.
    pub labels: Vec<u32>,
    /// Per batch, in generation order.
    pub stats: Vec<BatchStats>,
}

fn cache_file(dir: &Path, g: usize, b: usize) -> PathBuf {
    dir.join(format!("g{g}-b{b}.safetensors"))
}

fn check_cache(dir: &Path, cfg: &SynthConfig, seed: u64, teacher_id: &str) -> Result<()> {
    let key = serde_json::json!({"config": cfg, "seed": seed, "teacher": teacher_id});
    let path = dir.join("synth.json");
    let err = |msg: String| SynthError::Cache { path: path.clone(), msg };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    if path.is_file() {
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let found: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(format!("unreadable: {e}")))?;
        if found != key {
            return Err(err("holds images of another configuration, seed or teacher; use another folder".into()));
        }
        return Ok(());
    }
    let bytes = serde_json::to_vec_pretty(&key).map_err(|e| err(e.to_string()))?;
    compress_train::record::write_atomic(&path, &bytes)?;
    Ok(())
}

fn stats_file(dir: &Path, g: usize, b: usize) -> PathBuf {
    dir.join(format!("g{g}-b{b}.json"))
}

/// A cached batch: its images and labels, and the stats it finished with. A batch whose stats
/// file is missing (interrupted between the two writes) counts as not cached.
fn load_cached(
    dir: &Path,
    index: (usize, usize),
    cfg: &SynthConfig,
    device: &Device,
) -> Result<Option<(Tensor, Vec<u32>, BatchStats)>> {
    let (path, spath) = (cache_file(dir, index.0, index.1), stats_file(dir, index.0, index.1));
    if !path.is_file() || !spath.is_file() {
        return Ok(None);
    }
    let serr = |msg: String| SynthError::Cache { path: spath.clone(), msg };
    let text = std::fs::read_to_string(&spath).map_err(|e| serr(e.to_string()))?;
    let mut stats: BatchStats = serde_json::from_str(&text).map_err(|e| serr(format!("unreadable: {e}")))?;
    stats.cached = true;
    let path = path.as_path();
    let err = |msg: String| SynthError::Cache { path: path.to_path_buf(), msg };
    let t = compress_nn::weights::read(path, device).map_err(|e| err(e.to_string()))?;
    let (Some(x), Some(y)) = (t.get("images"), t.get("labels")) else {
        return Err(err("lacks images or labels".into()));
    };
    let want = [cfg.batch, cfg.channels, cfg.image_size, cfg.image_size];
    if x.dims() != want || y.dims() != [cfg.batch] {
        return Err(err(format!("shapes {:?} / {:?}, expected {want:?} / [{}]", x.dims(), y.dims(), cfg.batch)));
    }
    let labels: Vec<u32> = y.to_dtype(DType::F32)?.to_vec1::<f32>()?.into_iter().map(|v| v as u32).collect();
    if labels.iter().any(|&l| l as usize >= cfg.classes) {
        return Err(err("a label is out of range".into()));
    }
    Ok(Some((x.to_dtype(DType::F32)?, labels, stats)))
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(f64::from(t.to_dtype(DType::F32)?.to_scalar::<f32>()?))
}

/// Synthesises `cfg.images()` images from `teacher`, group by group (seed `seed`; `extra` terms
/// added to the loss). With `cache`, finished batches are written there and found again on a
/// later call with the same configuration, seed and `teacher_id`.
pub fn synthesize(
    teacher: &dyn Teacher,
    cfg: &SynthConfig,
    seed: u64,
    extra: &[&dyn SynthTerm],
    cache: Option<(&Path, &str)>,
    device: &Device,
) -> Result<SyntheticSet> {
    cfg.validate()?;
    if let Some((dir, id)) = cache {
        check_cache(dir, cfg, seed, id)?;
    }
    let rng = SeededRng::new(seed).child("synthesis");
    let mut bank = ClassCentres::new(cfg.classes);
    let (mut images, mut labels, mut stats) = (Vec::new(), Vec::new(), Vec::new());
    let shape = (cfg.batch, cfg.channels, cfg.image_size, cfg.image_size);
    for g in 0..cfg.groups {
        for b in 0..cfg.batches_per_group {
            let index = (g * cfg.batches_per_group + b) as u64;
            let cached = match cache {
                Some((dir, _)) => load_cached(dir, (g, b), cfg, device)?,
                None => None,
            };
            let (x, y, st) = match cached {
                Some(found) => found,
                None => {
                    let (x, y, st) =
                        one_batch(teacher, cfg, &bank, &mut rng.stream("batch", index), extra, (g, b), shape, device)?;
                    if let Some((dir, _)) = cache {
                        let yt = Tensor::from_vec(y.iter().map(|&v| v as f32).collect::<Vec<f32>>(), y.len(), device)?;
                        let t = HashMap::from([("images".to_string(), x.clone()), ("labels".to_string(), yt)]);
                        compress_nn::weights::save_atomic(&t, &cache_file(dir, g, b))?;
                        let bytes = serde_json::to_vec(&st).map_err(|e| SynthError::Config(e.to_string()))?;
                        compress_train::record::write_atomic(&stats_file(dir, g, b), &bytes)?;
                    }
                    (x, y, st)
                }
            };
            // The class bank sees the clean images through the eval-mode teacher.
            let out = teacher.forward_probe(&x)?;
            bank.push(&out.features.detach(), &y)?;
            images.push(x);
            labels.extend(y);
            stats.push(st);
        }
    }
    Ok(SyntheticSet { images: Tensor::cat(&images, 0)?, labels, stats })
}

#[allow(clippy::too_many_arguments)]
fn one_batch(
    teacher: &dyn Teacher,
    cfg: &SynthConfig,
    bank: &ClassCentres,
    rng: &mut rand::rngs::StdRng,
    extra: &[&dyn SynthTerm],
    index: (usize, usize),
    shape: (usize, usize, usize, usize),
    device: &Device,
) -> Result<(Tensor, Vec<u32>, BatchStats)> {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let labels: Vec<u32> = (0..cfg.batch).map(|_| rng.random_range(0..cfg.classes as u32)).collect();
    let init: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    let soft: Vec<f32> = (0..cfg.batch)
        .map(|_| if rng.random_bool(cfg.p_soft) { rng.random_range(cfg.eps_soft..=1.0) as f32 } else { 1.0 })
        .collect();
    let x = Var::from_tensor(&Tensor::from_vec(init, shape, device)?)?;
    let y = Tensor::from_vec(labels.clone(), cfg.batch, device)?;
    let s = Tensor::from_vec(soft, cfg.batch, device)?;
    let mdc_on = cfg.lambda != (0.0, 2.0);
    let group = ParamGroup {
        name: "images".into(),
        vars: vec![("images".into(), x.clone())],
        lr_scale: 1.0,
        weight_decay: 0.0,
    };
    let mut opt = Optimizer::new(OptimizerKind::adam(), vec![group])?;
    let (factor, patience, threshold, min_lr) = cfg.plateau;
    let mut plateau = Plateau::new(cfg.lr, factor, patience, threshold, min_lr);
    let mut centres: Option<(Tensor, Tensor)> = None;
    let (mut last_loss, mut last_bns) = (f64::NAN, f64::NAN);
    for t in 0..cfg.iters {
        let seen = if cfg.p_lor > 0.0 && rng.random_bool(cfg.p_lor) {
            random_resized_crop(x.as_tensor(), cfg.eta, cfg.flip, rng)?
        } else {
            x.as_tensor().clone()
        };
        let out = teacher.forward_probe(&seen)?;
        let bns = bns_loss(&out.bn)?;
        let mut loss = (&bns + soft_inception_loss(&out.logits, &y, &s)?)?;
        if mdc_on {
            if centres.is_none() {
                centres = Some(bank.gather(&labels, out.features.dim(1)?, device)?);
            }
            if let Some((c, m)) = &centres {
                let (lo, hi) = mdc_loss(&out.features, c, m, cfg.lambda.0, cfg.lambda.1)?;
                loss = ((loss + lo)? + hi)?;
            }
        }
        let ctx = BatchContext { images: &seen, labels: &y };
        for term in extra {
            loss = (loss + term.loss(&out, &ctx)?)?;
        }
        let value = scalar(&loss)?;
        if !value.is_finite() {
            return Err(SynthError::Config(format!(
                "non-finite synthesis loss at group {} batch {} iteration {t}",
                index.0, index.1
            )));
        }
        let grads = loss.backward()?;
        opt.step(&grads, plateau.lr)?;
        plateau.step(value);
        (last_loss, last_bns) = (value, scalar(&bns)?);
    }
    let stats = BatchStats { index, loss: last_loss, bns: last_bns, lr: plateau.lr, cached: false };
    Ok((x.as_tensor().detach(), labels, stats))
}
