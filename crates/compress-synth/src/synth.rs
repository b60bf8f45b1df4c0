//! The synthesis loop (intraq spec 2.1): groups x batches of noise images optimised one batch at
//! a time with Adam against `L_BNS` plus a method's own terms, the plateau rule stepped every
//! iteration. The method ([`SynthMethod`]: IntraQ's soft inception loss, marginal distance
//! constraint and crops; FDDA's terms) plugs in at fixed points of each batch with the batch's
//! seeded generator. Deterministic for a seed; finished batches are cached so an interrupted
//! synthesis resumes and fine-tuning can reuse them.

use crate::error::{Result, SynthError};
use crate::losses::bns_loss;
use crate::plateau::Plateau;
use crate::teacher::{Teacher, TeacherOut};
use candle_core::{DType, Device, Tensor, Var};
use compress_core::rng::SeededRng;
use compress_train::optim::{Optimizer, OptimizerKind, ParamGroup};
use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What to synthesise and how fast: the loop's settings (a method's own are in its
/// [`SynthMethod`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// Groups (a method's class statistics accumulate across groups, generated in order).
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
    /// Image side.
    pub image_size: usize,
    /// Image channels.
    pub channels: usize,
    /// Classes.
    pub classes: usize,
}

impl SynthConfig {
    /// The official CIFAR-10 script's loop: 4 x 5 x 256 images, 1,000 iterations, lr 0.5.
    pub fn cifar10() -> Self {
        Self {
            groups: 4,
            batches_per_group: 5,
            batch: 256,
            iters: 1000,
            lr: 0.5,
            plateau: (0.1, 50, 1e-4, 1e-4),
            image_size: 32,
            channels: 3,
            classes: 10,
        }
    }

    /// CIFAR-100: 100 classes.
    pub fn cifar100() -> Self {
        Self { classes: 100, ..Self::cifar10() }
    }

    /// The released ImageNet script: 224 px, 1,000 classes.
    pub fn imagenet() -> Self {
        Self { image_size: 224, classes: 1000, ..Self::cifar10() }
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
        if self.lr.is_nan() || self.lr <= 0.0 {
            return bad(format!("lr {} must be > 0", self.lr));
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

/// What a method's loss sees for one iteration.
#[derive(Debug)]
pub struct BatchContext<'a> {
    /// The images the teacher saw (after the method's [`SynthMethod::view`]).
    pub images: &'a Tensor,
    /// Labels `[B]` (u32).
    pub labels: &'a Tensor,
    /// The same labels as a slice.
    pub label_list: &'a [u32],
}

/// A method's part of the synthesis, called at fixed points of every batch (the order of the
/// random draws is part of the contract: a seed gives the same images):
/// 1. the loop draws the labels and the initial noise, then [`SynthMethod::start_batch`] draws
///    the method's per-batch state (soft targets) from the same generator;
/// 2. every iteration [`SynthMethod::view`] makes the teacher's input (a crop) and
///    [`SynthMethod::objective`] turns `L_BNS` into the total loss;
/// 3. after the batch (also a cached one) [`SynthMethod::finish_batch`] sees the clean images
///    through the eval-mode teacher (class centres).
pub trait SynthMethod {
    /// Per-batch state.
    type Batch;

    /// The method's settings, part of the cache key.
    fn key(&self) -> serde_json::Value;

    /// Per-batch state for `labels`, drawn from the batch's generator.
    fn start_batch(&self, labels: &[u32], rng: &mut StdRng, device: &Device) -> Result<Self::Batch>;

    /// The images the teacher sees this iteration (default: the images themselves).
    fn view(&self, images: &Tensor, rng: &mut StdRng) -> Result<Tensor> {
        let _ = rng;
        Ok(images.clone())
    }

    /// The iteration's total loss from `L_BNS` (`bns`), the teacher's output and the context.
    fn objective(&self, batch: &mut Self::Batch, bns: Tensor, out: &TeacherOut, ctx: &BatchContext) -> Result<Tensor>;

    /// Sees a finished batch's clean images through the eval-mode teacher.
    fn finish_batch(&mut self, out: &TeacherOut, labels: &[u32]) -> Result<()> {
        let _ = (out, labels);
        Ok(())
    }
}

/// `L_BNS` alone: the plain BN-statistics synthesis.
#[derive(Debug, Clone, Copy, Default)]
pub struct BnsOnly;

impl SynthMethod for BnsOnly {
    type Batch = ();

    fn key(&self) -> serde_json::Value {
        serde_json::json!("bns-only")
    }

    fn start_batch(&self, _: &[u32], _: &mut StdRng, _: &Device) -> Result<()> {
        Ok(())
    }

    fn objective(&self, _: &mut (), bns: Tensor, _: &TeacherOut, _: &BatchContext) -> Result<Tensor> {
        Ok(bns)
    }
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

fn check_cache(dir: &Path, cfg: &SynthConfig, method: serde_json::Value, seed: u64, teacher_id: &str) -> Result<()> {
    let key = serde_json::json!({"config": cfg, "method": method, "seed": seed, "teacher": teacher_id});
    let path = dir.join("synth.json");
    let err = |e: Box<dyn std::error::Error + Send + Sync>| SynthError::Cache { path: path.clone(), source: e };
    std::fs::create_dir_all(dir).map_err(|e| err(e.into()))?;
    if path.is_file() {
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.into()))?;
        let found: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(e.into()))?;
        if found != key {
            return Err(err(
                "holds images of another configuration, method, seed or teacher; use another folder".into()
            ));
        }
        return Ok(());
    }
    let bytes = serde_json::to_vec_pretty(&key).map_err(|e| err(e.into()))?;
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
    let serr = |e: Box<dyn std::error::Error + Send + Sync>| SynthError::Cache { path: spath.clone(), source: e };
    let text = std::fs::read_to_string(&spath).map_err(|e| serr(e.into()))?;
    let mut stats: BatchStats = serde_json::from_str(&text).map_err(|e| serr(e.into()))?;
    stats.cached = true;
    let path = path.as_path();
    let err = |e: Box<dyn std::error::Error + Send + Sync>| SynthError::Cache { path: path.to_path_buf(), source: e };
    let t = compress_nn::weights::read(path, device).map_err(|e| err(e.into()))?;
    let (Some(x), Some(y)) = (t.get("images"), t.get("labels")) else {
        return Err(err("lacks images or labels".into()));
    };
    let want = [cfg.batch, cfg.channels, cfg.image_size, cfg.image_size];
    if x.dims() != want || y.dims() != [cfg.batch] {
        return Err(err(format!("shapes {:?} / {:?}, expected {want:?} / [{}]", x.dims(), y.dims(), cfg.batch).into()));
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

/// Synthesises `cfg.images()` images from `teacher` with `method`'s terms, group by group (seed
/// `seed`). With `cache`, finished batches are written there and found again on a later call with
/// the same configuration, method settings, seed and `teacher_id`.
pub fn synthesize<M: SynthMethod>(
    teacher: &dyn Teacher,
    cfg: &SynthConfig,
    method: &mut M,
    seed: u64,
    cache: Option<(&Path, &str)>,
    device: &Device,
) -> Result<SyntheticSet> {
    cfg.validate()?;
    if let Some((dir, id)) = cache {
        check_cache(dir, cfg, method.key(), seed, id)?;
    }
    let rng = SeededRng::new(seed).child("synthesis");
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
                    let mut rng = rng.stream("batch", index);
                    let (x, y, st) = one_batch(teacher, cfg, &*method, &mut rng, (g, b), shape, device)?;
                    if let Some((dir, _)) = cache {
                        let yt = Tensor::from_vec(y.iter().map(|&v| v as f32).collect::<Vec<f32>>(), y.len(), device)?;
                        let t = HashMap::from([("images".to_string(), x.clone()), ("labels".to_string(), yt)]);
                        compress_nn::weights::save_atomic(&t, &cache_file(dir, g, b))?;
                        let bytes = serde_json::to_vec(&st)
                            .map_err(|e| SynthError::Cache { path: stats_file(dir, g, b), source: e.into() })?;
                        compress_train::record::write_atomic(&stats_file(dir, g, b), &bytes)?;
                    }
                    (x, y, st)
                }
            };
            // The method sees the clean images through the eval-mode teacher.
            let out = teacher.forward_probe(&x)?;
            method.finish_batch(&out, &y)?;
            images.push(x);
            labels.extend(y);
            stats.push(st);
        }
    }
    Ok(SyntheticSet { images: Tensor::cat(&images, 0)?, labels, stats })
}

fn one_batch<M: SynthMethod>(
    teacher: &dyn Teacher,
    cfg: &SynthConfig,
    method: &M,
    rng: &mut StdRng,
    index: (usize, usize),
    shape: (usize, usize, usize, usize),
    device: &Device,
) -> Result<(Tensor, Vec<u32>, BatchStats)> {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let labels: Vec<u32> = (0..cfg.batch).map(|_| rng.random_range(0..cfg.classes as u32)).collect();
    let init: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    let mut state = method.start_batch(&labels, rng, device)?;
    let x = Var::from_tensor(&Tensor::from_vec(init, shape, device)?)?;
    let y = Tensor::from_vec(labels.clone(), cfg.batch, device)?;
    let group = ParamGroup {
        name: "images".into(),
        vars: vec![("images".into(), x.clone())],
        lr_scale: 1.0,
        weight_decay: 0.0,
    };
    let mut opt = Optimizer::new(OptimizerKind::adam(), vec![group])?;
    let (factor, patience, threshold, min_lr) = cfg.plateau;
    let mut plateau = Plateau::new(cfg.lr, factor, patience, threshold, min_lr);
    let (mut last_loss, mut last_bns) = (f64::NAN, f64::NAN);
    for t in 0..cfg.iters {
        let seen = method.view(x.as_tensor(), rng)?;
        let out = teacher.forward_probe(&seen)?;
        let bns = bns_loss(&out.bn)?;
        let bns_value = scalar(&bns)?;
        let ctx = BatchContext { images: &seen, labels: &y, label_list: &labels };
        let loss = method.objective(&mut state, bns, &out, &ctx)?;
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
        (last_loss, last_bns) = (value, bns_value);
    }
    let stats = BatchStats { index, loss: last_loss, bns: last_bns, lr: plateau.lr, cached: false };
    Ok((x.as_tensor().detach(), labels, stats))
}
