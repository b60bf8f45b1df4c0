//! PyTorch's `ReduceLROnPlateau` in mode `min` with a relative threshold and no cooldown:
//! a step whose value is not below `best (1 - threshold)` is bad; after more than `patience` bad
//! steps in a row the rate becomes `max(lr factor, min_lr)` (if that changes it by more than
//! 1e-8) and the count restarts.

use serde::{Deserialize, Serialize};

/// The plateau rule's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    /// Current learning rate.
    pub lr: f64,
    /// Multiplier on a plateau (0.1).
    pub factor: f64,
    /// Bad steps tolerated (50).
    pub patience: u32,
    /// Relative improvement needed (1e-4).
    pub threshold: f64,
    /// Floor (1e-4).
    pub min_lr: f64,
    best: f64,
    bad: u32,
}

impl Plateau {
    /// Starts at `lr`.
    pub fn new(lr: f64, factor: f64, patience: u32, threshold: f64, min_lr: f64) -> Self {
        Self { lr, factor, patience, threshold, min_lr, best: f64::INFINITY, bad: 0 }
    }

    /// Records one value; returns the learning rate for the next step.
    pub fn step(&mut self, value: f64) -> f64 {
        if value < self.best * (1.0 - self.threshold) {
            self.best = value;
            self.bad = 0;
        } else {
            self.bad += 1;
        }
        if self.bad > self.patience {
            let new = (self.lr * self.factor).max(self.min_lr);
            if self.lr - new > 1e-8 {
                self.lr = new;
            }
            self.bad = 0;
        }
        self.lr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduces_after_patience_bad_steps_down_to_the_floor() {
        let mut p = Plateau::new(0.5, 0.1, 2, 1e-4, 1e-4);
        assert_eq!(p.step(1.0), 0.5);
        // 0.99995 is not a 1e-4 relative improvement: bad.
        assert_eq!(p.step(0.99995), 0.5);
        assert_eq!(p.step(1.0), 0.5);
        assert!((p.step(1.0) - 0.05).abs() < 1e-12, "the third bad step in a row reduces");
        for _ in 0..3 {
            p.step(2.0);
        }
        assert!((p.lr - 0.005).abs() < 1e-12);
        for _ in 0..30 {
            p.step(2.0);
        }
        assert_eq!(p.lr, 1e-4);
        assert_eq!(p.step(0.5), 1e-4, "an improvement resets the count, not the rate");
    }
}
