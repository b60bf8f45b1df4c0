//! OptG's schedules (spec section 2), all constant within an epoch:
//! - sparsity `p_e = p sigma(beta (e - E / 2))`, `sigma(z) = 1 / (1 + e^-z)`;
//! - weights `eta_W(e) = eta_0 (e + 1) / w` for `e < w`, then `eta_0 (1 + cos(pi e / E)) / 2`
//!   (the cosine not shifted by the warm-up);
//! - scores `eta_S(e) = eta_W(e) sigma(beta (e - E / 2)) = eta_W(e) p_e / p`: the "supermask
//!   optimizer", whose score steps grow with the sparsity schedule.

use compress_train::schedule::{Decay, Schedule};

/// `sigma(z) = 1 / (1 + e^-z)`.
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The sparsity schedule of a run: target `p`, slope `beta`, `E` epochs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SparsitySchedule {
    /// Target sparsity `p` in `[0, 1)`.
    pub target: f64,
    /// Slope `beta` of the sigmoid.
    pub beta: f64,
    /// Epochs `E`.
    pub epochs: usize,
}

impl SparsitySchedule {
    /// `sigma(beta (e - E / 2))`: the fraction of the target reached in `epoch`, and the score
    /// rate's factor.
    pub fn factor(&self, epoch: usize) -> f64 {
        sigmoid(self.beta * (epoch as f64 - self.epochs as f64 / 2.0))
    }

    /// `p_e = p sigma(beta (e - E / 2))`.
    pub fn rate(&self, epoch: usize) -> f64 {
        self.target * self.factor(epoch)
    }
}

/// The weights' learning rate by optimizer step: [`Decay::EpochCosine`] from `base_lr` over
/// `epochs`, `warmup` warm-up epochs, `steps_per_epoch` steps an epoch.
pub fn weight_schedule(base_lr: f64, epochs: usize, warmup: usize, steps_per_epoch: usize) -> Schedule {
    Schedule {
        base_lr,
        decay: Decay::EpochCosine {
            steps_per_epoch: steps_per_epoch as u64,
            epochs: epochs as u64,
            warmup: warmup as u64,
        },
        warmup_steps: 0,
        warmup_start: 1.0,
    }
}

/// `eta_W(e)`.
pub fn weight_lr(base_lr: f64, epochs: usize, warmup: usize, epoch: usize) -> f64 {
    weight_schedule(base_lr, epochs, warmup, 1).lr(epoch as u64)
}

/// `eta_S(e) = eta_W(e) sigma(beta (e - E / 2))`.
pub fn score_lr(base_lr: f64, warmup: usize, s: &SparsitySchedule, epoch: usize) -> f64 {
    weight_lr(base_lr, s.epochs, warmup, epoch) * s.factor(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b}");
    }

    #[test]
    fn sparsity_schedule_matches_section_8() {
        let s = SparsitySchedule { target: 0.9, beta: 1.0, epochs: 100 };
        assert!(s.rate(0) < 1e-20 && s.rate(0) > 0.0);
        close(s.rate(40), 4.1e-5, 5e-7);
        close(s.rate(45), 0.006024, 5e-7);
        close(s.rate(48), 0.107283, 5e-7);
        assert_eq!(s.rate(50), 0.45);
        close(s.rate(52), 0.792717, 5e-7);
        close(s.rate(55), 0.893976, 5e-7);
        close(s.rate(60), 0.899959, 5e-7);
        close(s.rate(99), 0.9, 1e-6);
        let c = SparsitySchedule { target: 0.98, beta: 1.0, epochs: 160 };
        close(c.rate(75), 0.006559, 5e-7);
        close(c.rate(80), 0.49, 1e-15);
        close(c.rate(82), 0.863181, 5e-7);
    }

    #[test]
    fn learning_rates_match_section_8() {
        let lr = |e| weight_lr(0.1, 100, 5, e);
        close(lr(0), 0.02, 1e-15);
        close(lr(4), 0.1, 1e-15);
        close(lr(5), 0.099384, 5e-7);
        close(lr(50), 0.05, 1e-15);
        close(lr(99), 2.467e-5, 5e-9);
        let s = SparsitySchedule { target: 0.9, beta: 1.0, epochs: 100 };
        close(score_lr(0.1, 5, &s, 50), 0.025, 1e-15);
        close(score_lr(0.1, 5, &s, 0), 3.9e-24, 5e-26);
        // eta_S = eta_W p_e / p.
        close(score_lr(0.1, 5, &s, 52), lr(52) * s.rate(52) / 0.9, 1e-15);
        // Section 9: no warm-up, 0.1 at e = 0, then 0.05 (1 + cos(pi e / 30)).
        close(weight_lr(0.1, 30, 0, 0), 0.1, 1e-15);
        close(weight_lr(0.1, 30, 0, 10), 0.05 * (1.0 + (std::f64::consts::PI / 3.0).cos()), 1e-15);
    }
}
