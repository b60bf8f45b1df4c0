//! The asymmetric uniform quantizer of GDFQ / IntraQ / FDDA (intraq spec 2.2), range `[lo, hi]`,
//! `b` bits: `n = 2^b - 1`, `s = n / max(hi - lo, 1e-8)`, `z = round(s lo) + 2^(b-1)`,
//! `q = clamp(round(s x - z), -2^(b-1), 2^(b-1) - 1)`, `x_hat = (q + z) / s`, rounding half to
//! even on `s x - z` in that order. Straight-through everywhere: `dx_hat/dx = 1`, also outside
//! `[lo, hi]`; the range gets no gradient. It shares the fused CPU op of [`super::affine`]
//! (which differs in clipping the input, not the codes, and in differentiating the bounds).

use super::affine::{FusedAffine, Mode, fused_axis};
use super::round::round_half_even;
use super::{QuantError, Result, check_bits};
use candle_core::{D, Tensor};

/// `x_hat(x; lo, hi, b)` with the identity straight-through gradient. `lo` / `hi` are scalars or
/// broadcast to `x` (per output channel `[C, 1, ...]`); `lo <= hi` (equal is allowed).
pub fn asym_fake_quant(x: &Tensor, lo: &Tensor, hi: &Tensor, bits: u32) -> Result<Tensor> {
    check_bits(bits)?;
    check_range(lo, hi)?;
    if super::is_half(x) {
        return super::in_f32(x, lo, Some(hi), |x, l, h| asym_fake_quant(x, l, h.unwrap_or(l), bits));
    }
    let (lo, hi) = (lo.detach(), hi.detach());
    if let Some(axis) = fused_axis(x, &lo, &hi) {
        let op = FusedAffine { bits, axis, mode: Mode::ClipCodes };
        return Ok(x.contiguous()?.apply_op3(&lo.contiguous()?, &hi.contiguous()?, op)?);
    }
    let q = asym_quant_composed(&x.detach(), &lo, &hi, bits)?;
    Ok((x + (q - x)?.detach())?)
}

/// The composed values (candle ops, no gradient path): the reference of the fused op.
pub fn asym_quant_composed(x: &Tensor, lo: &Tensor, hi: &Tensor, bits: u32) -> Result<Tensor> {
    check_bits(bits)?;
    let n = f64::from((1u32 << bits) - 1);
    let half = f64::from(1u32 << (bits - 1));
    let span = (hi - lo)?.maximum(1e-8)?;
    let s = (span.ones_like()? * n)?.div(&span)?;
    let z = (round_half_even(&(&s * lo)?)? + half)?;
    let q = round_half_even(&x.broadcast_mul(&s)?.broadcast_sub(&z)?)?.clamp(-half, half - 1.0)?;
    Ok(q.broadcast_add(&z)?.broadcast_div(&s)?)
}

/// Per-output-channel `(min, max)` of a weight `[C, ...]`, shaped `[C, 1, ...]` (detached).
pub fn per_channel_minmax(w: &Tensor) -> Result<(Tensor, Tensor)> {
    if w.elem_count() == 0 {
        return Err(QuantError::Empty);
    }
    let mut shape = vec![1usize; w.rank()];
    shape[0] = w.dim(0)?;
    let flat = w.detach().flatten_from(1)?;
    Ok((flat.min(D::Minus1)?.reshape(shape.clone())?, flat.max(D::Minus1)?.reshape(shape)?))
}

fn check_range(lo: &Tensor, hi: &Tensor) -> Result<()> {
    let l: Vec<f64> = lo.detach().flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1()?;
    let u: Vec<f64> = hi.detach().flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1()?;
    if l.len() != u.len() || l.is_empty() {
        return Err(QuantError::Shape(format!("{} lower and {} upper range ends", l.len(), u.len())));
    }
    match l.iter().zip(&u).find(|(a, b)| !(a.is_finite() && b.is_finite() && a <= b)) {
        Some((&lower, &upper)) => Err(QuantError::Bounds { lower, upper }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn q(x: &[f32], lo: f32, hi: f32, bits: u32) -> Vec<f32> {
        let dev = Device::Cpu;
        let xs = Tensor::from_slice(x, x.len(), &dev).unwrap();
        let (l, h) = (Tensor::new(lo, &dev).unwrap(), Tensor::new(hi, &dev).unwrap());
        let fused: Vec<f32> = asym_fake_quant(&xs, &l, &h, bits).unwrap().to_vec1().unwrap();
        let composed: Vec<f32> = asym_quant_composed(&xs, &l, &h, bits).unwrap().to_vec1().unwrap();
        assert_eq!(fused, composed);
        fused
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn spec_examples() {
        // k = 4, [-0.5, 1]: s = 10, z = 3.
        close(&q(&[-0.5, -0.26, 0.24, 0.26, 1.0], -0.5, 1.0, 4), &[-0.5, -0.3, 0.2, 0.3, 1.0]);
        // k = 4, [0, 7.5]: s = 2, z = 8; 0.75 -> 1.0 (half to even on s x - z = -6.5 -> -6).
        close(&q(&[0.0, 0.75, 1.25, 3.0, 7.5, 9.0], 0.0, 7.5, 4), &[0.0, 1.0, 1.0, 3.0, 7.5, 7.5]);
        // k = 2, [-1, 2]: s = 1, z = 1.
        close(&q(&[-1.0, -0.5, 0.5, 1.5, 2.5], -1.0, 2.0, 2), &[-1.0, -1.0, 1.0, 1.0, 2.0]);
    }

    #[test]
    fn at_most_two_to_the_bits_levels_per_channel() {
        let dev = Device::Cpu;
        for bits in [2u32, 3, 4] {
            let w = Tensor::randn(0f32, 1.0, (6, 3, 3, 3), &dev).unwrap();
            let (lo, hi) = per_channel_minmax(&w).unwrap();
            let out = asym_fake_quant(&w, &lo, &hi, bits).unwrap();
            let composed = asym_quant_composed(&w, &lo, &hi, bits).unwrap();
            assert_eq!((&out - &composed).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
            for c in 0..6 {
                let mut v: Vec<f32> = out.get(c).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                v.sort_by(f32::total_cmp);
                v.dedup();
                assert!(v.len() <= 1 << bits, "{bits} bits: {} levels", v.len());
            }
        }
    }

    #[test]
    fn straight_through_everywhere_and_no_range_gradient() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(&[-3f32, -0.2, 0.4, 5.0], &dev).unwrap()).unwrap();
        let lo = Var::from_tensor(&Tensor::new(-1f32, &dev).unwrap()).unwrap();
        let hi = Var::from_tensor(&Tensor::new(1f32, &dev).unwrap()).unwrap();
        let g = asym_fake_quant(x.as_tensor(), lo.as_tensor(), hi.as_tensor(), 3)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), vec![1.0; 4]);
        assert!(g.get(lo.as_tensor()).is_none() && g.get(hi.as_tensor()).is_none());
        // The composed path (f64) has the same gradient.
        let x64 = Var::from_tensor(&Tensor::new(&[-3f64, 0.4, 5.0], &dev).unwrap()).unwrap();
        let l64 = Tensor::new(-1f64, &dev).unwrap();
        let h64 = Tensor::new(1f64, &dev).unwrap();
        let g = asym_fake_quant(x64.as_tensor(), &l64, &h64, 3).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(x64.as_tensor()).unwrap().to_vec1::<f64>().unwrap(), vec![1.0; 3]);
        // ... and the same values: s = 7 / 2, z = round(-3.5) + 4 = 0, codes -4, 1, 3.
        let v: Vec<f64> = asym_fake_quant(x64.as_tensor(), &l64, &h64, 3).unwrap().to_vec1().unwrap();
        for (a, b) in v.iter().zip([-4.0 / 3.5, 1.0 / 3.5, 3.0 / 3.5]) {
            assert!((a - b).abs() < 1e-12, "{v:?}");
        }
        assert!(asym_fake_quant(x.as_tensor(), hi.as_tensor(), lo.as_tensor(), 3).is_err());
        assert!(asym_fake_quant(x.as_tensor(), lo.as_tensor(), hi.as_tensor(), 0).is_err());
        // As many lower as upper ends, and at least one.
        let (two, three) = (Tensor::new(&[-1f32, -1.0], &dev).unwrap(), Tensor::new(&[1f32, 1.0, 1.0], &dev).unwrap());
        assert!(matches!(asym_fake_quant(x.as_tensor(), &two, &three, 3), Err(QuantError::Shape(_))));
        let none = Tensor::zeros(0, candle_core::DType::F32, &dev).unwrap();
        assert!(matches!(asym_fake_quant(x.as_tensor(), &none, &none, 3), Err(QuantError::Shape(_))));
        // A constant channel (lo == hi) is allowed and maps to itself.
        let c = Tensor::new(&[0.5f32, 0.5], &dev).unwrap();
        let h = Tensor::new(0.5f32, &dev).unwrap();
        let out: Vec<f32> = asym_fake_quant(&c, &h, &h, 4).unwrap().to_vec1().unwrap();
        assert!(out.iter().all(|v| (v - 0.5).abs() < 1e-6), "{out:?}");
    }
}
