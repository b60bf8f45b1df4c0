//! Dynamic intensity (spec 2.4): in the calibration epoch every activation quantizer records,
//! per batch `t`, `M_t = max(x)` and `m_t = min(x)`; its intensity is
//! `I = Var_t(M_t) + Var_t(m_t)` (population variance), and the `floor(r K)` quantizers of largest
//! intensity (over the `K` that were called) become dynamic.

/// Per-batch extremes of one quantizer's input.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RangeStats {
    /// `max(x)` per batch.
    pub maxes: Vec<f64>,
    /// `min(x)` per batch.
    pub mins: Vec<f64>,
}

impl RangeStats {
    /// Records one batch.
    pub fn record(&mut self, max: f64, min: f64) {
        self.maxes.push(max);
        self.mins.push(min);
    }

    /// Whether the quantizer was called during calibration.
    pub fn called(&self) -> bool {
        !self.maxes.is_empty()
    }
}

fn population_variance(v: &[f64]) -> f64 {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n
}

/// `I` of every quantizer (`None` for one that was never called).
pub fn dynamic_intensity(stats: &[RangeStats]) -> Vec<Option<f64>> {
    stats.iter().map(|s| s.called().then(|| population_variance(&s.maxes) + population_variance(&s.mins))).collect()
}

/// Indices of the `floor(ratio K)` called quantizers of largest intensity (ties: lower index),
/// in ascending order.
pub fn select_dynamic(intensity: &[Option<f64>], ratio: f64) -> Vec<usize> {
    let mut called: Vec<(usize, f64)> = intensity.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i, v))).collect();
    let k = (ratio * called.len() as f64).floor() as usize;
    called.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut out: Vec<usize> = called.into_iter().take(k).map(|(i, _)| i).collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_intensity_table() {
        let mk = |maxes: [f64; 3], mins: [f64; 3]| RangeStats { maxes: maxes.to_vec(), mins: mins.to_vec() };
        let stats = vec![
            mk([3.0, 5.0, 4.0], [-1.0, -1.0, -1.0]),
            mk([2.0, 2.1, 1.9], [-3.0, -1.0, -2.0]),
            mk([6.0, 6.0, 9.0], [0.0, 0.0, 0.0]),
            RangeStats::default(), // never called: not counted in K
        ];
        let i = dynamic_intensity(&stats);
        for (got, want) in i.iter().zip([Some(0.6667), Some(0.6733), Some(2.0), None]) {
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-4, "{g} vs {w}"),
                (None, None) => {}
                _ => panic!("{i:?}"),
            }
        }
        assert_eq!(select_dynamic(&i, 0.5), vec![2], "floor(0.5 * 3) = 1: only C");
    }
}
