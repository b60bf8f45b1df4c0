//! Running activation ranges (GDFQ / IntraQ / FDDA, intraq spec 2.2): while running, each batch's
//! `(min, max)` moves the range by an exponential moving average with factor `beta`; frozen, the
//! range is constant.
//!
//! Three rules, all from `lo = hi = 0`:
//! - [`RangeRule::Legacy`], the official code: `beta_t <- beta_t beta`,
//!   `lo <- (lo beta + min (1 - beta)) / (1 - beta_t)`, which feeds the corrected value back in
//!   (a double bias correction): with a constant max 1 the range reads 1, 5.263, 17.85, 47.0, ...,
//!   peaks near 3945 at update 21 and is back within 1e-4 of 1 only after about 200 updates.
//! - [`RangeRule::Plain`]: `lo <- lo beta + min (1 - beta)` (0.1, 0.19, 0.271 for a constant 1).
//! - [`RangeRule::BiasCorrected`]: the plain average divided once by `1 - beta^t` (a constant
//!   input reads exactly itself from the first update).

use serde::{Deserialize, Serialize};

/// How a running range averages batch extrema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RangeRule {
    /// The official double bias correction.
    Legacy,
    /// Plain exponential moving average from 0.
    Plain,
    /// Moving average with a single bias correction.
    BiasCorrected,
}

/// A running `[lo, hi]` of one activation quantizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningRange {
    /// Averaging factor (0.9 in the official code).
    pub beta: f64,
    /// The rule.
    pub rule: RangeRule,
    /// Whether batches still move the range.
    pub running: bool,
    lo: f64,
    hi: f64,
    raw_lo: f64,
    raw_hi: f64,
    beta_t: f64,
    updates: u64,
}

impl RunningRange {
    /// A running range at `[0, 0]`.
    pub fn new(beta: f64, rule: RangeRule) -> Self {
        Self { beta, rule, running: true, lo: 0.0, hi: 0.0, raw_lo: 0.0, raw_hi: 0.0, beta_t: 1.0, updates: 0 }
    }

    /// Moves the range by one batch's extrema (ignored while frozen or for non-finite input).
    pub fn update(&mut self, min: f64, max: f64) {
        if !self.running || !min.is_finite() || !max.is_finite() {
            return;
        }
        let b = self.beta;
        self.beta_t *= b;
        self.updates += 1;
        match self.rule {
            RangeRule::Legacy => {
                self.lo = (self.lo * b + min * (1.0 - b)) / (1.0 - self.beta_t);
                self.hi = (self.hi * b + max * (1.0 - b)) / (1.0 - self.beta_t);
            }
            RangeRule::Plain => {
                self.lo = self.lo * b + min * (1.0 - b);
                self.hi = self.hi * b + max * (1.0 - b);
            }
            RangeRule::BiasCorrected => {
                self.raw_lo = self.raw_lo * b + min * (1.0 - b);
                self.raw_hi = self.raw_hi * b + max * (1.0 - b);
                self.lo = self.raw_lo / (1.0 - self.beta_t);
                self.hi = self.raw_hi / (1.0 - self.beta_t);
            }
        }
    }

    /// Stops updating.
    pub fn fix(&mut self) {
        self.running = false;
    }

    /// Resumes updating.
    pub fn unfix(&mut self) {
        self.running = true;
    }

    /// The current `(lo, hi)`.
    pub fn range(&self) -> (f64, f64) {
        (self.lo, self.hi)
    }

    /// Batches seen while running.
    pub fn updates(&self) -> u64 {
        self.updates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn his(rule: RangeRule, n: usize) -> Vec<f64> {
        let mut r = RunningRange::new(0.9, rule);
        (0..n)
            .map(|_| {
                r.update(0.0, 1.0);
                r.range().1
            })
            .collect()
    }

    #[test]
    fn legacy_rule_inflates_then_decays_as_the_spec_says() {
        let h = his(RangeRule::Legacy, 800);
        for (got, want) in h.iter().zip([1.0, 5.263, 17.85, 47.0]) {
            assert!((got - want).abs() / want < 1e-3, "{got} vs {want}");
        }
        let (peak_at, peak) = h.iter().enumerate().fold((0, 0.0), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
        assert_eq!(peak_at + 1, 21);
        assert!((peak - 3945.0).abs() / 3945.0 < 2e-3, "{peak}");
        assert!((h[199] - 1.00007).abs() < 2e-5, "{}", h[199]);
        assert!((h[799] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn plain_and_bias_corrected_rules() {
        let p = his(RangeRule::Plain, 3);
        for (got, want) in p.iter().zip([0.1, 0.19, 0.271]) {
            assert!((got - want).abs() < 1e-12);
        }
        assert!(his(RangeRule::BiasCorrected, 5).iter().all(|v| (v - 1.0).abs() < 1e-12));
        let mut r = RunningRange::new(0.9, RangeRule::BiasCorrected);
        r.update(-2.0, 3.0);
        r.fix();
        r.update(-100.0, 100.0);
        assert_eq!(r.range(), (-2.0, 3.0));
        assert_eq!(r.updates(), 1);
        r.unfix();
        r.update(f64::NAN, 1.0);
        assert_eq!(r.updates(), 1, "non-finite batches are ignored");
        r.update(-2.0, 3.0);
        assert_eq!(r.updates(), 2, "running again after unfix");
        assert_eq!(r.range(), (-2.0, 3.0));
    }

    #[test]
    fn the_lower_end_follows_the_minima_as_the_upper_end_follows_the_maxima() {
        // Every rule is linear in the batch extrema: minima of -2x the maxima give lo = -2 hi.
        for rule in [RangeRule::Legacy, RangeRule::Plain, RangeRule::BiasCorrected] {
            let mut r = RunningRange::new(0.9, rule);
            for t in 0..40 {
                let max = 1.0 + (t % 3) as f64 * 0.5;
                r.update(-2.0 * max, max);
                let (lo, hi) = r.range();
                assert!((lo + 2.0 * hi).abs() <= 1e-9 * hi.abs(), "{rule:?}, update {t}: {lo} vs {hi}");
            }
        }
    }
}
