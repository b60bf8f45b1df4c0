//! Filter proxies and the dynamic-coded importance (section 2, steps 2-5):
//! - `D_jk = ||w_j - w_k||_2` (Euclidean, not squared; computed in f64, then cast to f32);
//! - `P_j = softmax_k(-T D_jk)`, the inter-similarity distribution of filter `j` (f32);
//! - `K_jk = (1/C) sum_l P_jl ln(P_jl / (P_kl + 1e-7))`, `score_j = sum_k K_jk` (higher: more
//!   distinctive, kept), summed over `k` in closed form (O(C^2), f64), with the official rule
//!   that a zero `P_jl` makes the score NaN.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How the KL terms treat a probability that underflowed to zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum KlMode {
    /// Bit-faithful to the official code: `0 * ln 0 = NaN`, so once `T D` underflows the scores
    /// of a layer turn NaN and its selection freezes (the published behaviour).
    #[default]
    Official,
    /// A documented deviation: `ln P` by log-softmax and `0 * ln 0 = 0`, so the scores stay finite
    /// and the selection can change during training.
    Stable,
}

/// The proxies of one layer's `C` filters at one temperature.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterProxies {
    /// Number of filters `C`.
    pub filters: usize,
    /// `P`, row-major `C x C`.
    pub p: Vec<f32>,
    /// `score_j`, `C` entries (NaN where the official rule meets `0 ln 0`).
    pub scores: Vec<f32>,
}

impl FilterProxies {
    /// Row `j` of `P`.
    pub fn row(&self, j: usize) -> &[f32] {
        &self.p[j * self.filters..(j + 1) * self.filters]
    }

    /// Whether every score is finite.
    pub fn all_finite(&self) -> bool {
        self.scores.iter().all(|s| s.is_finite())
    }

    /// Whether `P` is the identity (every off-diagonal probability underflowed to 0): no
    /// filter's distribution reaches another, so [`KlMode::Stable`]'s scores reduce to one term
    /// that is the same for every filter and rank nothing.
    pub fn is_identity(&self) -> bool {
        let c = self.filters;
        self.p.iter().enumerate().all(|(i, &v)| i / c == i % c || v == 0.0)
    }

    /// Whether the scores rank the filters: all finite and `P` not the identity.
    pub fn informative(&self) -> bool {
        self.all_finite() && !(self.filters > 1 && self.is_identity())
    }
}

/// `D` of the `C` filters given as rows of `w` (`C x n`, row-major), in f64 then cast to f32.
pub fn distances(w: &[f32], filters: usize) -> Vec<f32> {
    let n = w.len() / filters.max(1);
    let mut d = vec![0f32; filters * filters];
    d.par_chunks_mut(filters).enumerate().for_each(|(j, row)| {
        let wj = &w[j * n..(j + 1) * n];
        for (k, out) in row.iter_mut().enumerate() {
            let wk = &w[k * n..(k + 1) * n];
            let s: f64 = wj.iter().zip(wk).map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2)).sum();
            *out = s.sqrt() as f32;
        }
    });
    d
}

/// Proxies and scores of the filters `w` (`C x n`, row-major) at temperature `t`.
pub fn filter_proxies(w: &[f32], filters: usize, t: f64, mode: KlMode) -> FilterProxies {
    let c = filters;
    let d = distances(w, c);
    let t = t as f32;
    // Row-wise softmax of -T D in f32, with the max subtracted as PyTorch does.
    let mut logits = vec![0f32; c * c];
    let mut p = vec![0f32; c * c];
    let mut log_p = vec![0f32; c * c];
    logits.iter_mut().zip(&d).for_each(|(l, d)| *l = -t * d);
    p.par_chunks_mut(c).zip(log_p.par_chunks_mut(c)).enumerate().for_each(|(j, (prow, lrow))| {
        let row = &logits[j * c..(j + 1) * c];
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for (out, &x) in prow.iter_mut().zip(row) {
            *out = (x - m).exp();
            sum += *out;
        }
        let log_sum = sum.ln();
        for ((out, l), &x) in prow.iter_mut().zip(lrow.iter_mut()).zip(row) {
            *out /= sum;
            *l = x - m - log_sum;
        }
    });
    // score_j = (1/C) sum_k sum_l P_jl (ln P_jl - ln(P_kl + 1e-7))
    //         = (1/C) sum_l P_jl (C ln P_jl - L_l),  L_l = sum_k ln(P_kl + 1e-7):
    // O(C^2) instead of the official O(C^3), accumulated in f64.
    let mut col = vec![0f64; c];
    for k in 0..c {
        for (acc, &pk) in col.iter_mut().zip(&p[k * c..(k + 1) * c]) {
            *acc += f64::from(pk + 1e-7).ln();
        }
    }
    let cf = c as f64;
    let scores: Vec<f32> = (0..c)
        .into_par_iter()
        .map(|j| {
            let pj = &p[j * c..(j + 1) * c];
            let lj = &log_p[j * c..(j + 1) * c];
            let mut score = 0f64;
            for l in 0..c {
                let a = f64::from(pj[l]);
                score += match mode {
                    // 0 * ln 0 = NaN, as in the official code.
                    KlMode::Official => a * (cf * a.ln() - col[l]),
                    KlMode::Stable if a == 0.0 => 0.0,
                    KlMode::Stable => a * (cf * f64::from(lj[l]) - col[l]),
                };
            }
            (score / cf) as f32
        })
        .collect();
    FilterProxies { filters: c, p, scores }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Section 8: four 2-D filters (1,0), (0,1), (1,1), (3,0).
    const W: [f32; 8] = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 3.0, 0.0];

    fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn worked_example_at_t1() {
        let d = distances(&W, 4);
        #[rustfmt::skip]
        let r2 = std::f32::consts::SQRT_2;
        let want_d = [0.0, r2, 1.0, 2.0, r2, 0.0, 1.0, 3.16228, 1.0, 1.0, 0.0, 2.23607, 2.0, 3.16228, 2.23607, 0.0];
        assert!(close(&d, &want_d, 1e-5), "{d:?}");
        let f = filter_proxies(&W, 4, 1.0, KlMode::Official);
        #[rustfmt::skip]
        let want_p = [
            0.57263, 0.13922, 0.21066, 0.07750,
            0.14705, 0.60484, 0.22251, 0.02560,
            0.19965, 0.19965, 0.54270, 0.05800,
            0.10536, 0.03295, 0.08320, 0.77849,
        ];
        assert!(close(&f.p, &want_p, 1e-5), "{:?}", f.p);
        for j in 0..4 {
            assert!((f.row(j).iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert!(close(&f.scores, &[0.55286, 0.75475, 0.52095, 1.41931], 1e-5), "{:?}", f.scores);
        let stable = filter_proxies(&W, 4, 1.0, KlMode::Stable);
        assert!(close(&stable.scores, &f.scores, 1e-5), "no underflow: the modes agree");
    }

    #[test]
    fn hot_temperature_gives_identity_and_nan_scores() {
        let f = filter_proxies(&W, 4, 4621.709, KlMode::Official);
        let eye: Vec<f32> = (0..16).map(|i| if i % 5 == 0 { 1.0 } else { 0.0 }).collect();
        assert_eq!(f.p, eye);
        assert!(f.scores.iter().all(|s| s.is_nan()));
        let s = filter_proxies(&W, 4, 4621.709, KlMode::Stable);
        assert!(s.all_finite(), "{:?}", s.scores);
        // Finite, but P = I: the stable scores tie and rank nothing.
        assert!(s.is_identity() && !s.informative());
        let cool = filter_proxies(&W, 4, 1.0, KlMode::Stable);
        assert!(!cool.is_identity() && cool.informative());
    }

    #[test]
    fn self_divergence_is_zero() {
        // K_jj = sum_l P_jl ln(P_jl / (P_jl + 1e-7)) ~ 0: a single filter scores ~0.
        let f = filter_proxies(&[0.3, -0.2], 1, 1.0, KlMode::Official);
        assert!(f.scores[0].abs() < 1e-6, "{:?}", f.scores);
        // One filter has nothing to be confused with: its P = [1] is not a collapse.
        assert!(f.is_identity() && f.informative());
    }

    /// At a temperature where `-T D` overflows f32 to minus infinity, the off-diagonal `ln P`
    /// are -inf too: the stable mode's `0 ln 0 = 0` rule (not the product, which is NaN) keeps
    /// the scores finite. (cargo-mutants found the rule untested: the mutant that drops it
    /// passed every test at T <= 4,622, where `ln P` stays finite.)
    #[test]
    fn the_stable_rule_holds_where_ln_p_is_minus_infinity() {
        let s = filter_proxies(&W, 4, 3e38, KlMode::Stable);
        assert!(s.is_identity());
        assert!(s.all_finite(), "{:?}", s.scores);
        assert!(filter_proxies(&W, 4, 3e38, KlMode::Official).scores.iter().all(|v| v.is_nan()));
    }
}
