//! Subnet pools (spec 2.4): per bucket, a map from config to score (`-CE` of the subnet on the
//! current training batch), capacity `K`. A known config's score moves by EMA
//! `s <- lambda s_old + (1 - lambda) s_new`; a new one enters first and then, over capacity, the
//! lowest-scored entry leaves (possibly the one just entered). Drawing is by priority,
//! `softmax(s / tau)`.

use crate::space::SubnetConfig;
use rand::Rng;

/// `softmax(s / tau)`, stable (shifted by the maximum).
pub fn priorities(scores: &[f64], tau: f64) -> Vec<f64> {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = scores.iter().map(|s| ((s - max) / tau).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

/// One bucket's pool.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SubnetPool {
    /// Capacity `K`.
    pub capacity: usize,
    /// EMA factor `lambda`.
    pub lambda: f64,
    entries: Vec<(SubnetConfig, f64)>,
}

impl SubnetPool {
    /// An empty pool.
    pub fn new(capacity: usize, lambda: f64) -> Self {
        Self { capacity, lambda, entries: Vec::new() }
    }

    /// Entries in insertion order.
    pub fn entries(&self) -> &[(SubnetConfig, f64)] {
        &self.entries
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the pool holds `capacity` entries (below it, new subnets are forced).
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.capacity
    }

    /// Records a score for `cfg` (EMA if known, else an insertion; then the lowest-scored entry
    /// leaves while over capacity, the earliest of equal lowest).
    pub fn observe(&mut self, cfg: &SubnetConfig, score: f64) {
        match self.entries.iter_mut().find(|(c, _)| c == cfg) {
            Some((_, s)) => *s = self.lambda * *s + (1.0 - self.lambda) * score,
            None => self.entries.push((cfg.clone(), score)),
        }
        while self.entries.len() > self.capacity {
            let worst = self
                .entries
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.1.total_cmp(&b.1.1).then(a.0.cmp(&b.0)))
                .map_or(0, |(i, _)| i);
            self.entries.remove(worst);
        }
    }

    /// A config drawn with probability `softmax(s / tau)` (`None` when empty).
    pub fn sample_prioritized(&self, tau: f64, rng: &mut impl Rng) -> Option<SubnetConfig> {
        let p = priorities(&self.entries.iter().map(|e| e.1).collect::<Vec<_>>(), tau);
        let mut u: f64 = rng.random();
        for (i, pi) in p.iter().enumerate() {
            if u < *pi {
                return Some(self.entries[i].0.clone());
            }
            u -= pi;
        }
        self.entries.last().map(|e| e.0.clone())
    }

    /// The best-scored entry (the deployed subnet), the earliest of equal best.
    pub fn best(&self) -> Option<&(SubnetConfig, f64)> {
        self.entries.iter().rev().max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// The `k` best entries, best first.
    pub fn top_k(&self, k: usize) -> Vec<(SubnetConfig, f64)> {
        let mut v = self.entries.clone();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.truncate(k);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cfg(i: u32) -> SubnetConfig {
        SubnetConfig { resolution: 224, mults_milli: vec![i] }
    }

    #[test]
    fn priorities_match_section_8() {
        let s = [-1.0, -1.1, -2.0];
        let close = |got: Vec<f64>, want: [f64; 3], tol: f64| {
            assert!(got.iter().zip(want).all(|(a, b)| (a - b).abs() < tol), "{got:?}");
        };
        close(priorities(&s, 1.0), [0.4400, 0.3981, 0.1619], 5e-5);
        close(priorities(&s, 0.1), [0.7310, 0.2689, 3.3e-5], 5e-5);
        close(priorities(&s, 0.01), [0.99995, 4.5e-5, 0.0], 5e-6);
    }

    #[test]
    fn ema_capacity_and_eviction_follow_section_8() {
        let mut p = SubnetPool::new(3, 0.9);
        p.observe(&cfg(1), -2.0);
        p.observe(&cfg(1), -1.0);
        assert!((p.entries()[0].1 - -1.9).abs() < 1e-12, "EMA: 0.9 (-2) + 0.1 (-1)");
        p.observe(&cfg(2), -1.0);
        p.observe(&cfg(3), -0.5);
        assert!(p.is_full());
        let before = p.clone();
        p.observe(&cfg(4), -5.0);
        assert_eq!(p, before, "a new config below every entry of a full pool leaves it unchanged");
        p.observe(&cfg(5), -0.1);
        assert_eq!(p.len(), 3);
        assert!(!p.entries().iter().any(|e| e.0 == cfg(1)), "the lowest (-1.9) left");
        assert_eq!(p.best().map(|b| b.0.clone()), Some(cfg(5)));
        assert_eq!(p.top_k(2).iter().map(|e| e.0.clone()).collect::<Vec<_>>(), [cfg(5), cfg(3)]);
        // Prioritized draws follow the softmax.
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let n = 30_000;
        let hits = (0..n).filter(|_| p.sample_prioritized(1.0, &mut rng) == Some(cfg(5))).count();
        let want = priorities(&p.entries().iter().map(|e| e.1).collect::<Vec<_>>(), 1.0)[2];
        assert!((hits as f64 / n as f64 - want).abs() < 0.01, "{hits} vs {want}");
    }
}
