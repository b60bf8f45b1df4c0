//! Learning-rate schedules as pure functions of the optimizer step, so that a resumed run needs
//! only its step count: step, multi-step, cosine, each with an optional linear warm-up.

use serde::{Deserialize, Serialize};

/// The decay rule after warm-up. Step counts are optimizer steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Decay {
    /// Constant learning rate.
    Constant,
    /// Multiply by `gamma` every `every` steps (PyTorch `StepLR`).
    Step {
        /// Period.
        every: u64,
        /// Factor.
        gamma: f64,
    },
    /// Multiply by `gamma` at each milestone (PyTorch `MultiStepLR`).
    MultiStep {
        /// Steps at which to decay.
        milestones: Vec<u64>,
        /// Factor.
        gamma: f64,
    },
    /// `min + (base - min) (1 + cos(pi (t - start) / (total - start))) / 2` (PyTorch
    /// `CosineAnnealingLR`; `start > 0` begins the cosine after a warm-up, as DCFF's ImageNet
    /// "cos" schedule does).
    Cosine {
        /// Step at which the minimum is reached.
        total: u64,
        /// Final learning rate.
        min_lr: f64,
        /// Step at which the cosine starts (the base rate before it).
        #[serde(default)]
        start: u64,
    },
    /// Constant within an epoch `e = step / steps_per_epoch`: `base (e + 1) / warmup` while
    /// `e < warmup`, then `base (1 + cos(pi e / epochs)) / 2`, the cosine not shifted by the
    /// warm-up (OptG's per-epoch `adjust_learning_rate`).
    EpochCosine {
        /// Optimizer steps per epoch.
        steps_per_epoch: u64,
        /// Epochs `E` of the cosine.
        epochs: u64,
        /// Warm-up epochs.
        warmup: u64,
    },
}

/// A schedule: base learning rate, decay, and a linear warm-up from `warmup_start * base`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Base learning rate.
    pub base_lr: f64,
    /// Decay after warm-up.
    pub decay: Decay,
    /// Warm-up steps (0: none).
    pub warmup_steps: u64,
    /// Factor of the base rate at step 0 of the warm-up.
    pub warmup_start: f64,
}

impl Schedule {
    /// A constant rate.
    pub fn constant(base_lr: f64) -> Self {
        Self { base_lr, decay: Decay::Constant, warmup_steps: 0, warmup_start: 1.0 }
    }

    /// Cosine decay to `min_lr` over `total` steps.
    pub fn cosine(base_lr: f64, total: u64, min_lr: f64) -> Self {
        Self { base_lr, decay: Decay::Cosine { total, min_lr, start: 0 }, warmup_steps: 0, warmup_start: 1.0 }
    }

    /// The same schedule with a linear warm-up over `steps` from `start * base_lr`.
    pub fn with_warmup(mut self, steps: u64, start: f64) -> Self {
        self.warmup_steps = steps;
        self.warmup_start = start;
        self
    }

    /// The learning rate of optimizer step `step` (0-based). Decay counts from step 0, as
    /// PyTorch's chained warm-up + scheduler does.
    pub fn lr(&self, step: u64) -> f64 {
        let decayed = match &self.decay {
            Decay::Constant => self.base_lr,
            Decay::Step { every, gamma } => self.base_lr * gamma.powi((step / (*every).max(1)) as i32),
            Decay::MultiStep { milestones, gamma } => {
                self.base_lr * gamma.powi(milestones.iter().filter(|m| step >= **m).count() as i32)
            }
            Decay::Cosine { total, min_lr, start } => {
                let span = total.saturating_sub(*start).max(1);
                let t = step.clamp(*start, *total).saturating_sub(*start) as f64 / span as f64;
                min_lr + (self.base_lr - min_lr) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
            }
            Decay::EpochCosine { steps_per_epoch, epochs, warmup } => {
                let e = step / (*steps_per_epoch).max(1);
                if e < *warmup {
                    self.base_lr * (e + 1) as f64 / *warmup as f64
                } else {
                    let t = e as f64 / (*epochs).max(1) as f64;
                    self.base_lr * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
                }
            }
        };
        if step < self.warmup_steps {
            let f = self.warmup_start + (1.0 - self.warmup_start) * step as f64 / self.warmup_steps as f64;
            decayed * f
        } else {
            decayed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_pytorch() {
        let s =
            Schedule { base_lr: 0.1, decay: Decay::Step { every: 10, gamma: 0.1 }, warmup_steps: 0, warmup_start: 1.0 };
        assert_eq!((s.lr(9), s.lr(10)), (0.1, 0.1 * 0.1));
        let m = Schedule {
            base_lr: 1.0,
            decay: Decay::MultiStep { milestones: vec![5, 8], gamma: 0.5 },
            warmup_steps: 0,
            warmup_start: 1.0,
        };
        assert_eq!((m.lr(4), m.lr(5), m.lr(8)), (1.0, 0.5, 0.25));
        let c = Schedule::cosine(1.0, 100, 0.0);
        assert!((c.lr(0) - 1.0).abs() < 1e-12 && (c.lr(50) - 0.5).abs() < 1e-12 && c.lr(100).abs() < 1e-12);
        let late = Schedule { decay: Decay::Cosine { total: 110, min_lr: 0.0, start: 10 }, ..c.clone() };
        assert!(late.lr(5) == 1.0 && (late.lr(60) - 0.5).abs() < 1e-12 && late.lr(110).abs() < 1e-12);
        let w = Schedule::constant(1.0).with_warmup(4, 0.2);
        assert!((w.lr(0) - 0.2).abs() < 1e-12 && (w.lr(2) - 0.6).abs() < 1e-12 && w.lr(4) == 1.0);
        // OptG's per-epoch rule (spec section 8, eta0 0.1, E 100, 5 warm-up epochs), 7 steps an epoch.
        let e = Schedule {
            base_lr: 0.1,
            decay: Decay::EpochCosine { steps_per_epoch: 7, epochs: 100, warmup: 5 },
            warmup_steps: 0,
            warmup_start: 1.0,
        };
        let at = |epoch: u64| e.lr(7 * epoch);
        assert!((at(0) - 0.02).abs() < 1e-12 && (e.lr(6) - 0.02).abs() < 1e-12 && (at(4) - 0.1).abs() < 1e-12);
        assert!((at(5) - 0.099384).abs() < 1e-6 && (at(50) - 0.05).abs() < 1e-12 && (at(99) - 2.467e-5).abs() < 1e-8);
    }
}
