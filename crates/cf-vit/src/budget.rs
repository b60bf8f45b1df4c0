//! Budgeted evaluation (section 2.9): for a threshold eta an image exits at the coarse stage iff
//! its top-1 confidence is at least eta; accuracy mixes the two stages' predictions and the
//! expected cost is `F_c + (1 - rho) F_f` MACs, rho the fraction that exits.

use serde::{Deserialize, Serialize};

/// Per-image outcomes of both stages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageRecords {
    /// Coarse top-1 softmax confidence.
    pub conf_coarse: Vec<f32>,
    /// Coarse prediction.
    pub pred_coarse: Vec<u32>,
    /// Fine prediction (informative selection).
    pub pred_fine: Vec<u32>,
    /// Labels.
    pub labels: Vec<u32>,
}

impl StageRecords {
    fn acc(pred: &[u32], labels: &[u32]) -> f64 {
        100.0 * pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len().max(1) as f64
    }

    /// Top-1 (%) of the coarse stage.
    pub fn coarse_top1(&self) -> f64 {
        Self::acc(&self.pred_coarse, &self.labels)
    }

    /// Top-1 (%) of the fine stage.
    pub fn fine_top1(&self) -> f64 {
        Self::acc(&self.pred_fine, &self.labels)
    }
}

/// One point of the accuracy / cost curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BudgetPoint {
    /// Threshold.
    pub eta: f64,
    /// Fraction of images that exit at the coarse stage.
    pub exit_rate: f64,
    /// Expected MACs per image.
    pub macs: f64,
    /// Top-1 (%).
    pub top1: f64,
}

/// The thresholds of the curve: 0.00, 0.01, ..., 0.99, and 1.0 (only confidence-1.0 images exit).
pub fn eta_grid() -> Vec<f64> {
    (0..=100).map(|i| f64::from(i) / 100.0).collect()
}

/// Accuracy and expected MACs at each `eta` (`macs_fine` is the fine stage's own cost).
pub fn budget_curve(r: &StageRecords, macs_coarse: f64, macs_fine: f64, etas: &[f64]) -> Vec<BudgetPoint> {
    let n = r.labels.len().max(1) as f64;
    etas.iter()
        .map(|&eta| {
            let (mut exits, mut correct) = (0usize, 0usize);
            for i in 0..r.labels.len() {
                let exit = f64::from(r.conf_coarse[i]) >= eta;
                exits += usize::from(exit);
                let p = if exit { r.pred_coarse[i] } else { r.pred_fine[i] };
                correct += usize::from(p == r.labels[i]);
            }
            let rho = exits as f64 / n;
            BudgetPoint {
                eta,
                exit_rate: rho,
                macs: macs_coarse + (1.0 - rho) * macs_fine,
                top1: 100.0 * correct as f64 / n,
            }
        })
        .collect()
}

/// Expected MACs `rho F_c + (1 - rho)(F_c + F_f)`.
pub fn expected_macs(rho: f64, macs_coarse: f64, macs_total: f64) -> f64 {
    rho * macs_coarse + (1.0 - rho) * macs_total
}

/// The mean of several seeds' curves over the same grid.
pub fn mean_curve(curves: &[Vec<BudgetPoint>]) -> Vec<BudgetPoint> {
    let Some(first) = curves.first() else { return Vec::new() };
    let k = curves.len() as f64;
    (0..first.len())
        .map(|i| {
            let m = |f: fn(&BudgetPoint) -> f64| curves.iter().map(|c| f(&c[i])).sum::<f64>() / k;
            BudgetPoint { eta: first[i].eta, exit_rate: m(|p| p.exit_rate), macs: m(|p| p.macs), top1: m(|p| p.top1) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_cost_of_the_spec_budget_bar() {
        let rho = 42_910.0 / 50_000.0;
        assert!((expected_macs(rho, 1.1, 4.0) - 1.511).abs() < 5e-4);
    }

    #[test]
    fn eta_zero_is_the_coarse_stage_and_cost_grows_with_eta() {
        let r = StageRecords {
            conf_coarse: vec![0.3, 0.95, 0.6, 0.99, 0.5],
            pred_coarse: vec![1, 2, 0, 3, 4],
            pred_fine: vec![0, 2, 1, 3, 4],
            labels: vec![0, 2, 1, 3, 0],
        };
        let curve = budget_curve(&r, 1.0, 3.0, &eta_grid());
        assert_eq!(curve[0].top1, r.coarse_top1());
        assert_eq!(curve[0].macs, 1.0);
        assert!(curve.windows(2).all(|w| w[1].macs >= w[0].macs));
        // eta = 1: nothing exits (no confidence reaches 1), so accuracy is the fine stage's.
        let last = curve.last().expect("last");
        assert_eq!(last.top1, r.fine_top1());
        assert_eq!(last.macs, 4.0);
        // eta = 0.6: images 1, 2, 3 exit.
        let p = curve[60];
        assert!((p.exit_rate - 0.6).abs() < 1e-12);
        assert!((p.top1 - 60.0).abs() < 1e-9, "{p:?}");
        // The spec's example: confidence 0.84379 exits iff eta <= 0.84379.
        let one =
            StageRecords { conf_coarse: vec![0.84379], pred_coarse: vec![0], pred_fine: vec![1], labels: vec![0] };
        let c = budget_curve(&one, 1.0, 3.0, &[0.84, f64::from(0.84379f32), 0.85]);
        assert_eq!(c.iter().map(|p| p.exit_rate).collect::<Vec<_>>(), vec![1.0, 1.0, 0.0]);
        let m = mean_curve(&[curve.clone(), curve.clone()]);
        assert_eq!(m, curve);
    }
}
