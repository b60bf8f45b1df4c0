//! One training run of the supernet (spec 2.6), as a `compress_train` objective: every
//! iteration is the sandwich rule with in-place distillation,
//! 1. the max net on hard labels (cross-entropy), its logits `z_T` kept detached;
//! 2. a bucket uniformly; with probability `p_e` (or while the bucket's pool is not full) a new
//!    subnet from the conditional sampler, else one from the pool by `softmax(s / tau_e)`;
//! 3. its score `-CE` on this batch without gradients (batch statistics), into the pool;
//! 4. the subnet and the min net on `KL(softmax(z_T) || softmax(z))`;
//!
//! one SGD step on the summed gradients (one backward of the summed losses: the same
//! gradients). Randomness comes from a stream per `(seed, epoch, batch)`, so a resumed run draws
//! what the uninterrupted one drew; the pools are saved in the run folder at every epoch end
//! (with the checkpoint), so a run resumes exactly from an epoch-end checkpoint. The baseline
//! (`random_only`) always draws from the sampler, its pools only observed.

use crate::bucket::Bucketizer;
use crate::error::{Result, config_err};
use crate::pool::SubnetPool;
use crate::sampler::ConditionalSampler;
use crate::schedule::PssSchedule;
use crate::space::SubnetConfig;
use crate::supernet::{SlimArch, Supernet};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use compress_core::rng::SeededRng;
use compress_train::classify::Objective;
use compress_train::loss::{cross_entropy, distillation};
use compress_train::optim::{ParamGroup, trainable};
use compress_train::{TrainConfig, TrainError};
use rand::Rng;
use serde_json::json;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The method's settings (the recipe is the `TrainConfig`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PssSettings {
    /// `p_e` and `tau_e`.
    pub schedule: PssSchedule,
    /// Pool capacity `K`.
    pub capacity: usize,
    /// Score EMA `lambda`.
    pub lambda: f64,
    /// Buckets `(start, stop, Delta)`: pools for `start + Delta ..= stop - Delta`.
    pub buckets: (f64, f64, f64),
    /// Map size `N_map`.
    pub n_map: usize,
    /// Fewest map samples a bucket needs to get a pool.
    pub min_count: usize,
    /// Resource units: the cost is `MACs / unit` (1e6: MFLOPs; 1e3: the mini's kMACs).
    pub unit: f64,
    /// The baseline: always a new subnet from the sampler (`p_e = 1`), pools only observed.
    pub random_only: bool,
}

/// Bucket keys (thousandths of the centre).
fn key(b: f64) -> i64 {
    (b * 1000.0).round() as i64
}

/// What a run keeps between iterations.
#[derive(Debug)]
pub struct PssState {
    /// The map and its sampler.
    pub sampler: ConditionalSampler,
    /// One pool per bucket.
    pub pools: RefCell<BTreeMap<i64, SubnetPool>>,
    /// Iterations that drew from a pool.
    pub pool_draws: RefCell<usize>,
}

impl PssState {
    /// The map of `sup`'s space (stream `pss-net/map` of `seed`) and empty pools.
    pub fn new<A: SlimArch>(sup: &Supernet<A>, s: &PssSettings, seed: u64) -> Result<Self> {
        let cost = |c: &SubnetConfig| sup.macs(c) as f64 / s.unit;
        let (start, stop, step) = s.buckets;
        let mut rng = SeededRng::new(seed).stream("pss-net/map", 0);
        let sampler = ConditionalSampler::build(
            sup.arch.space(),
            &cost,
            Bucketizer::new(start, step),
            s.n_map,
            (start, stop),
            s.min_count,
            &mut rng,
        )?;
        let pools = sampler.buckets().iter().map(|&b| (key(b), SubnetPool::new(s.capacity, s.lambda))).collect();
        Ok(Self { sampler, pools: RefCell::new(pools), pool_draws: RefCell::new(0) })
    }

    /// The deployed subnet of every bucket (the argmax-score pool entry) with its score.
    pub fn best(&self) -> Vec<(f64, Option<(SubnetConfig, f64)>)> {
        self.pools.borrow().iter().map(|(&k, p)| (k as f64 / 1000.0, p.best().cloned())).collect()
    }
}

/// The sandwich objective of one run.
#[derive(Debug)]
pub struct Sandwich<'a, A: SlimArch = crate::flops::SlimMobileNetV1> {
    /// The supernet.
    pub sup: &'a Supernet<A>,
    /// The method.
    pub settings: &'a PssSettings,
    /// The run's state.
    pub state: &'a PssState,
    /// The run's seed.
    pub seed: u64,
    /// Where the pools are saved at epoch ends (`None`: not saved).
    pub pools_file: Option<PathBuf>,
}

fn err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Config(e.to_string())
}

impl<A: SlimArch> Sandwich<'_, A> {
    /// Restores the pools saved by an earlier, interrupted run of the same folder.
    pub fn restore(&self) -> Result<()> {
        if let Some(path) = &self.pools_file
            && path.is_file()
        {
            let text = std::fs::read_to_string(path).map_err(|e| config_err(format!("{}: {e}", path.display())))?;
            let pools: BTreeMap<i64, SubnetPool> =
                serde_json::from_str(&text).map_err(|e| config_err(format!("{}: {e}", path.display())))?;
            *self.state.pools.borrow_mut() = pools;
        }
        Ok(())
    }

    /// The subnet of this iteration for bucket `b`: new from the sampler or from the pool.
    fn choose(&self, b: f64, epoch: usize, rng: &mut impl Rng) -> Result<SubnetConfig> {
        let cost = |c: &SubnetConfig| self.sup.macs(c) as f64 / self.settings.unit;
        let u: f64 = rng.random();
        let pools = self.state.pools.borrow();
        let pool = pools.get(&key(b)).ok_or_else(|| config_err(format!("no pool for bucket {b}")))?;
        if self.settings.random_only || u < self.settings.schedule.p(epoch) || !pool.is_full() {
            return self.state.sampler.sample(b, &cost, rng);
        }
        *self.state.pool_draws.borrow_mut() += 1;
        pool.sample_prioritized(self.settings.schedule.tau(epoch), rng).ok_or_else(|| config_err("an empty full pool"))
    }
}

impl<A: SlimArch> Objective for Sandwich<'_, A> {
    fn varmap(&self) -> &VarMap {
        &self.sup.net.varmap
    }
    fn device(&self) -> &Device {
        self.sup.device()
    }
    fn loss(&self, images: &Tensor, labels: &Tensor, epoch: usize) -> compress_train::Result<Tensor> {
        self.loss_at(images, labels, epoch, 0)
    }
    fn loss_at(&self, images: &Tensor, labels: &Tensor, epoch: usize, batch: usize) -> compress_train::Result<Tensor> {
        let space = self.sup.arch.space();
        let mut rng = SeededRng::new(self.seed).stream("pss-net/iteration", ((epoch as u64) << 32) | batch as u64);
        let fwd = |c: &SubnetConfig| self.sup.forward(images, c, true).map_err(err);
        let z_max = fwd(&space.max_config())?;
        let loss_max = cross_entropy(&z_max, labels, 0.0)?;
        let teacher = z_max.detach();
        let buckets = self.state.sampler.buckets();
        let b = buckets[rng.random_range(0..buckets.len())];
        let a = self.choose(b, epoch, &mut rng).map_err(err)?;
        let score = -cross_entropy(&fwd(&a)?.detach(), labels, 0.0)?.to_scalar::<f32>()? as f64;
        if let Some(p) = self.state.pools.borrow_mut().get_mut(&key(b)) {
            p.observe(&a, score);
        }
        let loss_a = distillation(&fwd(&a)?, &teacher, 1.0)?;
        let loss_min = distillation(&fwd(&space.min_config())?, &teacher, 1.0)?;
        Ok(((loss_max + loss_a)? + loss_min)?)
    }
    fn evaluate(&self, epoch: usize) -> compress_train::Result<serde_json::Value> {
        let pools = self.state.pools.borrow();
        if let Some(path) = &self.pools_file {
            let text = serde_json::to_vec(&*pools).map_err(err)?;
            compress_core::atomic::write(path, &text)?;
        }
        let full = pools.values().filter(|p| p.is_full()).count();
        Ok(json!({"epoch_done": epoch, "pool_draws": *self.state.pool_draws.borrow(), "full_pools": full}))
    }
    /// Weight decay on the non-depthwise conv weights and the classifier's weight; none on
    /// depthwise convs, BatchNorm and biases (spec 3).
    fn groups(&self, cfg: &TrainConfig) -> compress_train::Result<Option<Vec<ParamGroup>>> {
        let (decay, no): (Vec<_>, Vec<_>) =
            trainable(&self.sup.net.varmap)?.into_iter().partition(|(k, v)| v.rank() >= 2 && !k.contains(".dw."));
        Ok(Some(vec![
            ParamGroup { name: "decay".into(), vars: decay, lr_scale: 1.0, weight_decay: cfg.weight_decay },
            ParamGroup { name: "no_decay".into(), vars: no, lr_scale: 1.0, weight_decay: 0.0 },
        ]))
    }
}
