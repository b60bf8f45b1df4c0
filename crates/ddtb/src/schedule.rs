//! The learning rate of DDTB's official schedule (spec 2.7): StepLR stepping once per epoch,
//! epoch 1 (calibration) included: `lr_e = lr_0 0.5^floor((e - 1) / 10)` for 1-based `e`; the
//! bounds group runs at 100x the rate of the rest.

/// `lr_0 0.5^floor((epoch - 1) / step)` for a 1-based `epoch`.
pub fn step_lr(lr0: f64, epoch: usize, step: usize) -> f64 {
    lr0 * 0.5f64.powi((epoch.saturating_sub(1) / step.max(1)) as i32)
}

/// The factor of the bounds' learning rate over the rest (1e-2 against 1e-4).
pub const BOUNDS_LR_FACTOR: f64 = 100.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_schedule() {
        assert_eq!(step_lr(1e-4, 1, 10), 1e-4);
        assert_eq!(step_lr(1e-4, 10, 10), 1e-4);
        assert_eq!(step_lr(1e-4, 11, 10), 5e-5);
        assert_eq!(step_lr(1e-4, 20, 10), 5e-5);
        assert!((step_lr(1e-4, 51, 10) - 3.125e-6).abs() < 1e-18 && (step_lr(1e-4, 60, 10) - 3.125e-6).abs() < 1e-18);
        assert_eq!(step_lr(1e-4, 1, 10) * BOUNDS_LR_FACTOR, 1e-2);
    }
}
