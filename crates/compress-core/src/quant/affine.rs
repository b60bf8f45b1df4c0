//! The zero-anchored asymmetric quantizer with bounds `l < u` and `b` bits (DDTB, spec 2.1):
//! `c = clamp(x, l, u)`, `s = (2^b - 1) / (u - l)`, `z = round(s l) + 2^(b-1)`,
//! `q = (round(s c - z) + z) / s`, both rounds straight-through. The grid is anchored at 0
//! (outputs `k / s` for integers `k`), and the gradients reach `l` and `u`:
//! inside, `dq/dx = 1`, `dq/du = (q - x)/(u - l)`, `dq/dl = (x - q)/(u - l)`.

use super::round::ste_round;
use super::{QuantError, Result, check_bits};
use candle_core::Tensor;

/// The integer grid of one quantization: `q = k / s`.
#[derive(Debug, Clone)]
pub struct AffineGrid {
    /// `k`, integer-valued, shaped like the input.
    pub k: Tensor,
    /// `s = (2^b - 1) / (u - l)`, shaped like the bounds.
    pub s: Tensor,
    /// The `k` of the lower bound (the smallest level), shaped like the bounds.
    pub k_min: Tensor,
}

impl AffineGrid {
    /// Computes the grid of `x` for bounds `lower < upper` (scalars, or shapes that broadcast to
    /// `x`: per channel `[C, 1, 1, 1]`, per sample `[N, 1, 1, 1]`).
    pub fn new(x: &Tensor, lower: &Tensor, upper: &Tensor, bits: u32) -> Result<Self> {
        check_bits(bits)?;
        check_bounds(lower, upper)?;
        let n = f64::from((1u32 << bits) - 1);
        let half = f64::from(1u32 << (bits - 1));
        let s = ((upper - lower)?.recip()? * n)?;
        let c = x.broadcast_maximum(lower)?.broadcast_minimum(upper)?;
        let z = (ste_round(&(&s * lower)?)? + half)?;
        let k = (ste_round(&c.broadcast_mul(&s)?.broadcast_sub(&z)?)?.broadcast_add(&z))?;
        let k_min = (ste_round(&((&s * lower)? - &z)?)? + &z)?;
        Ok(Self { k, s, k_min })
    }

    /// `q = k / s`.
    pub fn values(&self) -> Result<Tensor> {
        Ok(self.k.broadcast_div(&self.s)?)
    }
}

/// `q(x; l, u, b)` of the module docs, differentiable in `x`, `lower` and `upper`.
pub fn affine_fake_quant(x: &Tensor, lower: &Tensor, upper: &Tensor, bits: u32) -> Result<Tensor> {
    AffineGrid::new(x, lower, upper, bits)?.values()
}

fn check_bounds(lower: &Tensor, upper: &Tensor) -> Result<()> {
    let l: Vec<f64> = lower.detach().flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1()?;
    let u: Vec<f64> = upper.detach().flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1()?;
    if l.len() != u.len() || l.is_empty() {
        return Err(QuantError::Tensor(format!("{} lower and {} upper bounds", l.len(), u.len())));
    }
    match l.iter().zip(&u).find(|(a, b)| !(a.is_finite() && b.is_finite() && a < b)) {
        Some((&lower, &upper)) => Err(QuantError::Bounds { lower, upper }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn scalar(v: f32) -> Var {
        Var::from_tensor(&Tensor::new(v, &Device::Cpu).unwrap()).unwrap()
    }

    fn levels(x: &[f32], l: f32, u: f32, bits: u32) -> Vec<f32> {
        let xs = Tensor::from_slice(x, x.len(), &Device::Cpu).unwrap();
        let q = affine_fake_quant(&xs, scalar(l).as_tensor(), scalar(u).as_tensor(), bits).unwrap();
        let mut v: Vec<f32> = q.to_vec1().unwrap();
        v.sort_by(f32::total_cmp);
        v.dedup_by(|a, b| (*a - *b).abs() < 1e-6);
        v
    }

    #[test]
    fn spec_levels() {
        let sweep: Vec<f32> = (0..=2000).map(|i| -5.0 + i as f32 * 0.005).collect();
        let two = levels(&sweep, -0.3, 1.2, 2);
        assert_eq!(two.len(), 4);
        for (a, b) in two.iter().zip([-0.5, 0.0, 0.5, 1.0]) {
            assert!((a - b).abs() < 1e-6, "{two:?}");
        }
        let three = levels(&sweep, -0.7, 2.1, 3);
        assert_eq!(three.len(), 8);
        for (i, a) in three.iter().enumerate() {
            assert!((a - (-0.8 + 0.4 * i as f32)).abs() < 1e-5, "{three:?}");
        }
    }

    #[test]
    fn spec_values_and_ste_gradients() {
        let want = [
            (-1.0f32, -0.5f32, (0.0f32, 1.1333f32, -0.1333f32)),
            (0.1, 0.0, (1.0, 0.0667, -0.0667)),
            (0.74, 0.5, (1.0, 0.16, -0.16)),
            (0.76, 1.0, (1.0, -0.16, 0.16)),
            (2.0, 1.0, (0.0, 0.1333, 0.8667)),
        ];
        for (x, q, (dx, dl, du)) in want {
            let (xv, l, u) = (scalar(x), scalar(-0.3), scalar(1.2));
            let out = affine_fake_quant(xv.as_tensor(), l.as_tensor(), u.as_tensor(), 2).unwrap();
            assert!((out.to_scalar::<f32>().unwrap() - q).abs() < 1e-6);
            let g = out.backward().unwrap();
            let get = |v: &Var| g.get(v.as_tensor()).map(|t| t.to_scalar::<f32>().unwrap()).unwrap_or(0.0);
            assert!((get(&xv) - dx).abs() < 1e-4, "x={x}: dx {}", get(&xv));
            assert!((get(&l) - dl).abs() < 1e-4, "x={x}: dl {}", get(&l));
            assert!((get(&u) - du).abs() < 1e-4, "x={x}: du {}", get(&u));
        }
    }

    #[test]
    fn per_sample_bounds_broadcast() {
        // Section 8, the gate example: bounds (-0.16136, 1.49390) for the second sample.
        let x = Tensor::new(&[[-1f32, 0.1, 0.74, 0.76, 2.0], [-1.0, 0.1, 0.74, 0.76, 2.0]], &Device::Cpu).unwrap();
        let l = Tensor::new(&[[-0.3f32], [-0.16136]], &Device::Cpu).unwrap();
        let u = Tensor::new(&[[1.2f32], [1.49390]], &Device::Cpu).unwrap();
        let q: Vec<Vec<f32>> = affine_fake_quant(&x, &l, &u, 2).unwrap().to_vec2().unwrap();
        for (a, b) in q[0].iter().zip([-0.5, 0.0, 0.5, 1.0, 1.0]) {
            assert!((a - b).abs() < 1e-5);
        }
        for (a, b) in q[1].iter().zip([0.0, 0.0, 0.55176, 0.55176, 1.65527]) {
            assert!((a - b).abs() < 1e-4, "{q:?}");
        }
    }

    proptest::proptest! {
        /// On random inputs, bounds and bits: outputs lie on the zero-anchored grid within half a
        /// step of the clipped input, and the bound gradients equal the spec's formulas summed
        /// over the elements (inside, above and below the range).
        #[test]
        fn grid_and_gradients_follow_the_spec(
            xs in proptest::collection::vec(-5.0f32..5.0, 1..40),
            l in -3.0f32..-0.01,
            width in 0.1f32..5.0,
            bits in 1u32..=8,
        ) {
            let u = l + width;
            let x = Var::from_slice(&xs, xs.len(), &Device::Cpu).unwrap();
            let (lv, uv) = (scalar(l), scalar(u));
            let q = affine_fake_quant(x.as_tensor(), lv.as_tensor(), uv.as_tensor(), bits).unwrap();
            let qs: Vec<f32> = q.to_vec1().unwrap();
            let s = ((1u32 << bits) - 1) as f32 / (u - l);
            let (mut dl, mut du) = (0f64, 0f64);
            for (&xi, &qi) in xs.iter().zip(&qs) {
                let k = qi * s;
                proptest::prop_assert!((k - k.round()).abs() < 2e-3, "q {qi} is not on the grid");
                let c = xi.clamp(l, u);
                proptest::prop_assert!((qi - c).abs() <= 0.5 / s + 1e-4);
                let (q, x, l, u) = (f64::from(qi), f64::from(xi), f64::from(l), f64::from(u));
                let w = u - l;
                if x >= u {
                    du += 1.0 + (q - u) / w;
                    dl += (u - q) / w;
                } else if x <= l {
                    dl += 1.0 + (l - q) / w;
                    du += (q - l) / w;
                } else {
                    du += (q - x) / w;
                    dl += (x - q) / w;
                }
            }
            let g = q.sum_all().unwrap().backward().unwrap();
            let get = |v: &Var| f64::from(g.get(v.as_tensor()).map(|t| t.to_scalar::<f32>().unwrap()).unwrap_or(0.0));
            let tol = 1e-3 * xs.len() as f64;
            proptest::prop_assert!((get(&lv) - dl).abs() < tol, "dl {} vs {dl}", get(&lv));
            proptest::prop_assert!((get(&uv) - du).abs() < tol, "du {} vs {du}", get(&uv));
        }
    }

    #[test]
    fn bad_configs_are_errors() {
        let x = Tensor::new(&[0.5f32], &Device::Cpu).unwrap();
        let (l, u) = (scalar(0.0), scalar(1.0));
        assert_eq!(affine_fake_quant(&x, l.as_tensor(), u.as_tensor(), 0).unwrap_err(), QuantError::Bits(0));
        assert!(matches!(affine_fake_quant(&x, l.as_tensor(), u.as_tensor(), 9), Err(QuantError::Bits(9))));
        assert!(matches!(affine_fake_quant(&x, u.as_tensor(), l.as_tensor(), 2), Err(QuantError::Bounds { .. })));
        assert!(matches!(affine_fake_quant(&x, l.as_tensor(), l.as_tensor(), 2), Err(QuantError::Bounds { .. })));
    }
}
