//! Weight quantizers: a per-tensor range (percentile with linear interpolation, min/max,
//! symmetric max-abs) recomputed from the detached weight at each call (once per step), the
//! weight clipped to it (gradient 1 inside, 0 outside), then the affine or symmetric grid; and
//! ternary `{-m, 0, m}` with `m = max|W| + 1e-8` (DDTB's gate weights).

use super::affine::affine_fake_quant;
use super::round::ste_round;
use super::symmetric::symmetric_fake_quant;
use super::{QuantError, Result, check_bits};
use candle_core::{DType, Tensor};

/// How a weight tensor's range is chosen.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum WeightQuantizer {
    /// `[P_lo(W), P_hi(W)]` (numpy's linear interpolation), affine grid (DDTB on EDSR: 1, 99).
    Percentile {
        /// Lower percentile (0..=100).
        lo: f64,
        /// Upper percentile (0..=100).
        hi: f64,
    },
    /// `[min W, max W]`, affine grid (DDTB on RDN).
    MinMax,
    /// `[-max|W|, max|W|]`, symmetric grid (PAMS).
    SymMaxAbs,
    /// `{-m, 0, m}`, `m = max|W| + 1e-8`, whatever the bits.
    Ternary,
}

/// The `p`-th percentile of `v` with linear interpolation between order statistics.
pub fn percentile(v: &[f32], p: f64) -> Result<f64> {
    if v.is_empty() {
        return Err(QuantError::Empty);
    }
    if !(0.0..=100.0).contains(&p) {
        return Err(QuantError::Percentile { lo: p, hi: p });
    }
    // The two order statistics around the position by selection (linear time; a full sort of
    // every weight tensor at every step cost more than the quantization itself).
    let mut s = v.to_vec();
    let pos = p / 100.0 * (s.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    let (_, at, rest) = s.select_nth_unstable_by(i, f32::total_cmp);
    let at = f64::from(*at);
    let next = rest.iter().copied().min_by(f32::total_cmp).map_or(at, f64::from);
    Ok(at + frac * (next - at))
}

impl WeightQuantizer {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Percentile { lo, hi } if !(0.0 <= lo && lo <= hi && hi <= 100.0) => {
                Err(QuantError::Percentile { lo, hi })
            }
            _ => Ok(()),
        }
    }

    /// The range `(lo, hi)` of `w` (detached).
    pub fn range(&self, w: &Tensor) -> Result<(f64, f64)> {
        self.validate()?;
        let v: Vec<f32> = w.detach().flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        if v.is_empty() {
            return Err(QuantError::Empty);
        }
        let max_abs = v.iter().fold(0f64, |m, x| m.max(f64::from(x.abs())));
        Ok(match *self {
            Self::Percentile { lo, hi } => (percentile(&v, lo)?, percentile(&v, hi)?),
            Self::MinMax => {
                let (lo, hi) = v.iter().fold((f32::MAX, f32::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
                (f64::from(lo), f64::from(hi))
            }
            Self::SymMaxAbs => (-max_abs, max_abs),
            Self::Ternary => (-(max_abs + 1e-8), max_abs + 1e-8),
        })
    }

    /// The fake-quantized weight at `bits` (ignored by `Ternary`), straight-through inside the
    /// range.
    pub fn quantize(&self, w: &Tensor, bits: u32) -> Result<Tensor> {
        check_bits(bits)?;
        let (lo, hi) = self.range(w)?;
        let scalar = |v: f64| Tensor::new(v as f32, w.device());
        match self {
            Self::Ternary => {
                let m = hi;
                Ok((ste_round(&(w / m)?)? * m)?)
            }
            Self::SymMaxAbs => symmetric_fake_quant(w, &scalar(hi)?, bits),
            _ => {
                // Constant bounds: the clip passes the gradient inside the range only.
                let (l, u) = (scalar(lo)?, scalar(hi)?);
                affine_fake_quant(w, &l, &u, bits)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn spec_percentile_weights() {
        let w: Vec<f32> = (0..100).map(|k| k as f32 / 100.0 - 0.3).collect();
        let t = Tensor::from_slice(&w, 100, &Device::Cpu).unwrap();
        let q = WeightQuantizer::Percentile { lo: 1.0, hi: 99.0 };
        let (lo, hi) = q.range(&t).unwrap();
        assert!((lo + 0.2901).abs() < 1e-6 && (hi - 0.6801).abs() < 1e-6, "{lo} {hi}");
        let mut v: Vec<f32> = q.quantize(&t, 2).unwrap().to_vec1().unwrap();
        v.sort_by(f32::total_cmp);
        v.dedup_by(|a, b| (*a - *b).abs() < 1e-6);
        assert_eq!(v.len(), 4);
        for (a, b) in v.iter().zip([-0.3234, 0.0, 0.3234, 0.6468]) {
            assert!((a - b).abs() < 1e-4, "{v:?}");
        }
    }

    proptest::proptest! {
        /// Selection gives numpy's linear-interpolation percentile (the sorted reference).
        #[test]
        fn percentile_equals_the_sorted_definition(v in proptest::collection::vec(-10f32..10.0, 1..300), p in 0f64..=100.0) {
            let mut s: Vec<f64> = v.iter().map(|x| f64::from(*x)).collect();
            s.sort_by(f64::total_cmp);
            let pos = p / 100.0 * (s.len() - 1) as f64;
            let (i, frac) = (pos.floor() as usize, pos - pos.floor());
            let want = s[i] + frac * (s.get(i + 1).copied().unwrap_or(s[i]) - s[i]);
            proptest::prop_assert_eq!(percentile(&v, p).unwrap(), want);
        }
    }

    #[test]
    fn each_rule_has_its_range_and_grid() {
        let w = Tensor::new(&[0.3f32, -0.1, 0.05, -0.4], &Device::Cpu).unwrap();
        let close = |(a, b): (f64, f64), (c, d): (f64, f64)| (a - c).abs() < 1e-12 && (b - d).abs() < 1e-12;
        let m = f64::from(0.4f32);
        assert!(close(WeightQuantizer::MinMax.range(&w).unwrap(), (-m, f64::from(0.3f32))));
        assert!(close(WeightQuantizer::SymMaxAbs.range(&w).unwrap(), (-m, m)));
        assert!(close(WeightQuantizer::Ternary.range(&w).unwrap(), (-(m + 1e-8), m + 1e-8)));
        // SymMaxAbs is the symmetric grid: 3 levels at 2 bits (the affine grid would have 4).
        let v: Vec<f32> = WeightQuantizer::SymMaxAbs.quantize(&w, 2).unwrap().to_vec1().unwrap();
        assert_eq!(v, vec![0.4, 0.0, 0.0, -0.4]);
    }

    #[test]
    fn ternary_and_its_straight_gradient() {
        let w = Var::from_slice(&[0.3f32, -0.1, 0.05, -0.4], 4, &Device::Cpu).unwrap();
        let q = WeightQuantizer::Ternary.quantize(w.as_tensor(), 2).unwrap();
        let v: Vec<f32> = q.to_vec1().unwrap();
        for (a, b) in v.iter().zip([0.4, 0.0, 0.0, -0.4]) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
        let g = q.sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), vec![1.0; 4]);
    }

    #[test]
    fn bad_configs_are_errors() {
        let t = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        assert!(WeightQuantizer::Percentile { lo: -1.0, hi: 99.0 }.quantize(&t, 2).is_err());
        assert!(WeightQuantizer::Percentile { lo: 50.0, hi: 101.0 }.quantize(&t, 2).is_err());
        // The configuration itself, before any tensor: 0 <= lo <= hi <= 100.
        for (lo, hi) in [(-1.0, 99.0), (50.0, 101.0), (60.0, 40.0), (f64::NAN, 50.0), (50.0, f64::NAN)] {
            let q = WeightQuantizer::Percentile { lo, hi };
            assert!(matches!(q.validate(), Err(QuantError::Percentile { .. })), "[{lo}, {hi}]");
        }
        for (lo, hi) in [(0.0, 100.0), (30.0, 30.0), (0.5, 99.5)] {
            WeightQuantizer::Percentile { lo, hi }.validate().unwrap();
        }
        assert!(WeightQuantizer::MinMax.quantize(&t, 0).is_err());
        let empty = Tensor::zeros(0, DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(WeightQuantizer::MinMax.range(&empty).unwrap_err(), QuantError::Empty));
        // A constant tensor has no range for the affine grid.
        let flat = Tensor::new(&[0.5f32, 0.5], &Device::Cpu).unwrap();
        assert!(matches!(WeightQuantizer::MinMax.quantize(&flat, 2), Err(QuantError::Bounds { .. })));
    }
}
