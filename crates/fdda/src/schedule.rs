//! The student's rate (spec 2.5): `lr_t = lr (1 + cos(pi t / T_max)) / 2` per student step, as
//! PyTorch's `CosineAnnealingLR` without restarts computes it past `T_max` (it rises again: the
//! code's 70,000 steps run 1.75 periods of 40,000).

/// The cosine rate at student step `t`.
pub fn student_lr(t: u64, lr: f64, t_max: u64) -> f64 {
    lr * (1.0 + (std::f64::consts::PI * t as f64 / t_max.max(1) as f64).cos()) / 2.0
}

/// Batches per pass over `n` calibration images at `batch`, the last partial one dropped.
pub fn batches_per_pass(n: usize, batch: usize) -> usize {
    n / batch.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Section 8: 1e-6, 5e-7, 0, 1e-6, 5e-7 at steps 0, 10,000, 20,000, 40,000, 70,000; 62
    /// batches of 16 from 1,000 images.
    #[test]
    fn cosine_and_batches() {
        let got = [0u64, 10_000, 20_000, 40_000, 70_000].map(|t| student_lr(t, 1e-6, 20_000));
        for (g, want) in got.iter().zip([1e-6, 5e-7, 0.0, 1e-6, 5e-7]) {
            assert!((g - want).abs() < 1e-18, "{got:?}");
        }
        assert_eq!(batches_per_pass(1000, 16), 62);
    }
}
