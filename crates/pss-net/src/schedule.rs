//! The schedules of 2.5, constant within an epoch: the probability of drawing from the
//! structure space `p_e = p_0 (p_1 / p_0)^(e / E)` and the pools' softmax temperature `tau_e`
//! of the same form (both 1.0 -> 0.01 in the code).

/// `v_0 (v_1 / v_0)^(e / E)` for both schedules.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PssSchedule {
    /// `(p_0, p_1)`.
    pub p: (f64, f64),
    /// `(tau_0, tau_1)`.
    pub tau: (f64, f64),
    /// Epochs `E`.
    pub epochs: usize,
}

impl PssSchedule {
    /// The code's 1.0 -> 0.01 for both over `epochs`.
    pub fn official(epochs: usize) -> Self {
        Self { p: (1.0, 0.01), tau: (1.0, 0.01), epochs }
    }

    fn at((a, b): (f64, f64), e: usize, epochs: usize) -> f64 {
        a * (b / a).powf(e as f64 / epochs.max(1) as f64)
    }

    /// `p_e`.
    pub fn p(&self, epoch: usize) -> f64 {
        Self::at(self.p, epoch, self.epochs)
    }

    /// `tau_e`.
    pub fn tau(&self, epoch: usize) -> f64 {
        Self::at(self.tau, epoch, self.epochs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_of_section_8() {
        let s = PssSchedule::official(250);
        let got = [0, 50, 125, 200, 249].map(|e| s.p(e));
        let want = [1.0, 0.398107, 0.1, 0.025119, 0.010186];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 5e-7, "{got:?}");
        }
        assert_eq!(s.tau(125), s.p(125));
        // The mini (E = 6) ends at 0.01^(5/6) = 0.0215 in its last epoch.
        assert!((PssSchedule::official(6).p(5) - 0.021544).abs() < 1e-6);
    }
}
