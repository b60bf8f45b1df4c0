//! The temperature schedule of DCFF (section 2, step 1):
//! `T(e) = A / (1 + exp(-k e)) + T_s - A / 2`, `A = 2 (T_e - T_s) (1 + exp(-k E)) / (1 - exp(-k E))`,
//! so that `T(0) = T_s` and `T(E) = T_e`.

use serde::{Deserialize, Serialize};

/// Temperature by epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TemperatureSchedule {
    /// `T_s` (official: 1).
    pub t_start: f64,
    /// `T_e` (official: 1e4).
    pub t_end: f64,
    /// `k` (official: 1, per epoch).
    pub kappa: f64,
    /// `E`, the number of training epochs.
    pub total_epochs: usize,
}

impl TemperatureSchedule {
    /// The official schedule (`T_s = 1`, `T_e = 1e4`, `k = 1`) over `total_epochs`.
    pub fn official(total_epochs: usize) -> Self {
        Self { t_start: 1.0, t_end: 1e4, kappa: 1.0, total_epochs }
    }

    /// `T(epoch)`.
    pub fn at(&self, epoch: usize) -> f64 {
        let big_e = self.total_epochs.max(1) as f64;
        let q = (-self.kappa * big_e).exp();
        let a = 2.0 * (self.t_end - self.t_start) * (1.0 + q) / (1.0 - q);
        a / (1.0 + (-self.kappa * epoch as f64).exp()) + self.t_start - a / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_the_spec_values() {
        for e in [6, 90, 180, 300] {
            let s = TemperatureSchedule::official(e);
            assert!((s.at(0) - 1.0).abs() < 1e-9);
            assert!((s.at(e) - 1e4).abs() < 1e-6, "{}", s.at(e));
        }
        for big_e in [90, 180, 300] {
            let s = TemperatureSchedule::official(big_e);
            let want = [1.0, 4621.709, 7616.180, 9051.577, 9640.312, 9866.156];
            for (e, w) in want.iter().enumerate() {
                assert!((s.at(e) - w).abs() < 1e-3, "E={big_e} e={e}: {} vs {w}", s.at(e));
            }
            assert!((s.at(10) - 9999.09).abs() < 0.01, "{}", s.at(10));
        }
    }
}
