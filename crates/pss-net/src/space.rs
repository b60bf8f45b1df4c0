//! The structure space (spec 2.1): a subnet is `a = (r, m_1..m_L)`, layer `i` has
//! `c_i = md(base_i m_i)` channels, the input is resized to `r x r`.
//!
//! - `md(v) = max(d, floor((v + d/2) / d) d)`, plus `d` if that is below `0.9 v` (the official
//!   `make_divisible`, `d = 8`; the mini uses `d = 4`);
//! - `r = max(r_lo, floor((u + s/2) / s) s)` with `u ~ U(r_lo, r_hi)` (the endpoints half as
//!   likely as the others), `m_i = round(U(m_lo, m_hi), 3 decimals)`, independent.

use crate::error::{Result, config_err};
use rand::Rng;

/// `md(v)`: `v` rounded to a multiple of `divisor`, at least `divisor`, never below `0.9 v` by more
/// than one step.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor.max(1) as f64;
    let mut c = (((v + d / 2.0) / d).floor() * d).max(d);
    if c < 0.9 * v {
        c += d;
    }
    c as usize
}

/// A subnet: input resolution and one width multiplier per slimmable layer, in thousandths (the
/// official 3-decimal rounding, so configs compare and hash exactly).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct SubnetConfig {
    /// Input side `r`.
    pub resolution: usize,
    /// `1000 m_i`.
    pub mults_milli: Vec<u32>,
}

impl SubnetConfig {
    /// A config from multipliers (rounded to 3 decimals).
    pub fn new(resolution: usize, mults: &[f64]) -> Self {
        Self { resolution, mults_milli: mults.iter().map(|m| (m * 1000.0).round() as u32).collect() }
    }

    /// Every layer at `mult`.
    pub fn uniform(resolution: usize, mult: f64, layers: usize) -> Self {
        Self::new(resolution, &vec![mult; layers])
    }

    /// `m_i`.
    pub fn mult(&self, i: usize) -> f64 {
        self.mults_milli.get(i).map_or(1.0, |&m| f64::from(m) / 1000.0)
    }
}

/// The space of subnets of a slimmable supernet.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StructureSpace {
    /// The base width of each slimmable layer.
    pub bases: Vec<usize>,
    /// Multiplier range `[m_lo, m_hi]`.
    pub mults: (f64, f64),
    /// Resolutions `r_lo..=r_hi` in steps of `step`.
    pub resolutions: (usize, usize, usize),
    /// The channel divisor `d`.
    pub divisor: usize,
}

impl StructureSpace {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let (lo, hi) = self.mults;
        let (rlo, rhi, step) = self.resolutions;
        if self.bases.is_empty() || !(lo > 0.0 && lo <= hi) || step == 0 || rlo > rhi || rlo == 0 {
            return Err(config_err(format!("impossible space: {self:?}")));
        }
        Ok(())
    }

    /// `c_i = md(base_i m_i)` of every layer.
    pub fn channels(&self, cfg: &SubnetConfig) -> Vec<usize> {
        self.bases.iter().enumerate().map(|(i, &b)| make_divisible(b as f64 * cfg.mult(i), self.divisor)).collect()
    }

    /// Every multiplier of the space's 3-decimal grid, `m_lo..=m_hi`.
    pub fn mult_grid(&self) -> Vec<f64> {
        let (lo, hi) = ((self.mults.0 * 1000.0).round() as u32, (self.mults.1 * 1000.0).round() as u32);
        (lo..=hi).map(|m| f64::from(m) / 1000.0).collect()
    }

    /// Every resolution of the space, ascending.
    pub fn resolution_grid(&self) -> Vec<usize> {
        let (lo, hi, step) = self.resolutions;
        (lo..=hi).step_by(step.max(1)).collect()
    }

    /// The channel counts each layer can take, ascending and distinct.
    pub fn width_options(&self) -> Vec<Vec<usize>> {
        let grid = self.mult_grid();
        self.bases
            .iter()
            .map(|&b| {
                let set: std::collections::BTreeSet<usize> =
                    grid.iter().map(|&m| make_divisible(b as f64 * m, self.divisor)).collect();
                set.into_iter().collect()
            })
            .collect()
    }

    /// The largest subnet: `r_hi`, every multiplier `m_hi`.
    pub fn max_config(&self) -> SubnetConfig {
        SubnetConfig::uniform(self.resolutions.1, self.mults.1, self.bases.len())
    }

    /// The smallest subnet: `r_lo`, every multiplier `m_lo`.
    pub fn min_config(&self) -> SubnetConfig {
        SubnetConfig::uniform(self.resolutions.0, self.mults.0, self.bases.len())
    }

    /// A random subnet (the module documentation's draws).
    pub fn sample(&self, rng: &mut impl Rng) -> SubnetConfig {
        let (rlo, rhi, step) = self.resolutions;
        let u: f64 = rng.random_range(rlo as f64..=rhi as f64);
        let s = step as f64;
        let r = ((((u + s / 2.0) / s).floor() * s) as usize).clamp(rlo, rhi);
        let mults: Vec<f64> = (0..self.bases.len())
            .map(|_| (rng.random_range(self.mults.0..=self.mults.1) * 1000.0).round() / 1000.0)
            .collect();
        SubnetConfig::new(r, &mults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn make_divisible_matches_section_8() {
        let got: Vec<usize> =
            [24.0, 26.0, 27.2, 27.9, 50.0, 52.0, 60.0, 1023.0].iter().map(|&v| make_divisible(v, 8)).collect();
        assert_eq!(got, [24, 24, 32, 32, 48, 56, 64, 1024]);
        assert_eq!(make_divisible(1024.0 * 0.75, 8), 768);
        assert_eq!(make_divisible(3.0, 8), 8, "at least one step");
        // The mini's divisor 4: max(4, floor((v + 2) / 4) 4), + 4 below 0.9 v.
        assert_eq!([8.0, 10.0, 13.5, 64.0 * 0.55].map(|v| make_divisible(v, 4)), [8, 12, 16, 36]);
    }

    #[test]
    fn draws_stay_in_the_space_with_half_weight_endpoints() {
        let space = StructureSpace { bases: vec![16, 32, 64], mults: (0.5, 1.0), resolutions: (16, 28, 4), divisor: 4 };
        space.validate().unwrap_or_else(|e| panic!("{e}"));
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..40_000 {
            let c = space.sample(&mut rng);
            *counts.entry(c.resolution).or_insert(0usize) += 1;
            assert!(c.mults_milli.iter().all(|&m| (500..=1000).contains(&m)), "{c:?}");
        }
        assert_eq!(counts.keys().copied().collect::<Vec<_>>(), [16, 20, 24, 28]);
        // u ~ U(16, 28): 16 takes [16, 18), 20 [18, 22), 24 [22, 26), 28 [26, 28]: 1/6, 1/3, 1/3, 1/6.
        let share = |r| counts[&r] as f64 / 40_000.0;
        assert!((share(16) - 1.0 / 6.0).abs() < 0.01 && (share(20) - 1.0 / 3.0).abs() < 0.01, "{counts:?}");
        assert_eq!(space.channels(&space.max_config()), [16, 32, 64]);
        assert_eq!(space.channels(&space.min_config()), [8, 16, 32]);
    }
}
