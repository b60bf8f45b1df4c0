//! The conditional sampler (spec 2.2-2.3): a map of `N_map` random subnets, bucketed by their
//! cost; the buckets strictly inside `(start, stop)` with enough samples become the pools'. To
//! draw for bucket `b`, every coordinate (the resolution, each multiplier) is drawn from the
//! values the map saw in `b` (the empirical marginals, independent per coordinate), and the
//! draw is kept only if its cost falls in `b`.

use crate::bucket::Bucketizer;
use crate::error::{Result, config_err};
use crate::space::{StructureSpace, SubnetConfig};
use rand::Rng;
use rand::seq::IndexedRandom;
use std::collections::BTreeMap;

/// Buckets' keys: the bucket centre in thousandths (exact and ordered).
fn key(b: f64) -> i64 {
    (b * 1000.0).round() as i64
}

/// The empirical marginals of one bucket.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct Marginals {
    resolutions: Vec<usize>,
    mults: Vec<Vec<u32>>,
    count: usize,
}

/// The map and its per-bucket marginals.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConditionalSampler {
    bucketizer: Bucketizer,
    buckets: BTreeMap<i64, Marginals>,
    /// Map samples in buckets left out for having fewer than the minimum.
    pub dropped: BTreeMap<i64, usize>,
}

/// The most draws `sample` tries before it gives up.
const MAX_TRIES: usize = 100_000;

impl ConditionalSampler {
    /// Draws `n_map` subnets of `space`, keeps those whose bucket lies in `{start + Delta, ..,
    /// stop - Delta}`, and the buckets with at least `min_count` of them.
    pub fn build(
        space: &StructureSpace,
        cost: &dyn Fn(&SubnetConfig) -> f64,
        bucketizer: Bucketizer,
        n_map: usize,
        (start, stop): (f64, f64),
        min_count: usize,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        space.validate()?;
        let layers = space.bases.len();
        let mut all: BTreeMap<i64, Marginals> = BTreeMap::new();
        for _ in 0..n_map {
            let c = space.sample(rng);
            let b = bucketizer.bucket(cost(&c));
            if b < start + bucketizer.step - 1e-9 || b > stop - bucketizer.step + 1e-9 {
                continue;
            }
            let m = all.entry(key(b)).or_insert_with(|| Marginals {
                resolutions: Vec::new(),
                mults: vec![Vec::new(); layers],
                count: 0,
            });
            m.resolutions.push(c.resolution);
            for (i, v) in c.mults_milli.iter().enumerate() {
                m.mults[i].push(*v);
            }
            m.count += 1;
        }
        let (buckets, dropped): (BTreeMap<_, _>, BTreeMap<_, _>) =
            all.into_iter().partition(|(_, m)| m.count >= min_count);
        if buckets.is_empty() {
            return Err(config_err(format!("no bucket of the map has {min_count} samples")));
        }
        Ok(Self { bucketizer, dropped: dropped.into_iter().map(|(k, m)| (k, m.count)).collect(), buckets })
    }

    /// The buckets (centres), ascending.
    pub fn buckets(&self) -> Vec<f64> {
        self.buckets.keys().map(|&k| k as f64 / 1000.0).collect()
    }

    /// Map samples in bucket `b`.
    pub fn count(&self, b: f64) -> usize {
        self.buckets.get(&key(b)).map_or(0, |m| m.count)
    }

    /// The bucketizer.
    pub fn bucketizer(&self) -> Bucketizer {
        self.bucketizer
    }

    /// A subnet whose cost falls in bucket `b` (rejection from the bucket's marginals).
    pub fn sample(&self, b: f64, cost: &dyn Fn(&SubnetConfig) -> f64, rng: &mut impl Rng) -> Result<SubnetConfig> {
        let m = self.buckets.get(&key(b)).ok_or_else(|| config_err(format!("no pool for bucket {b}")))?;
        for _ in 0..MAX_TRIES {
            let (Some(&r), Some(mults)) = (
                m.resolutions.choose(rng),
                m.mults.iter().map(|v| v.choose(rng).copied()).collect::<Option<Vec<u32>>>(),
            ) else {
                break;
            };
            let c = SubnetConfig { resolution: r, mults_milli: mults };
            if key(self.bucketizer.bucket(cost(&c))) == key(b) {
                return Ok(c);
            }
        }
        Err(config_err(format!("no subnet in bucket {b} after {MAX_TRIES} draws")))
    }
}
