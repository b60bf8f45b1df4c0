//! The fused quantizers' straight-through backward composed from tensor ops, for devices whose
//! fused op has a forward kernel only (CUDA). Same formulas as the CPU ops' closed forms
//! ([`super::affine`], [`super::symmetric`]), summed per bound in f32 instead of f64.

use candle_core::{DType, Result, Tensor};

fn indicator(t: Tensor) -> Result<Tensor> {
    t.to_dtype(DType::F32)
}

/// Sums `t` down to `dims` (`t`'s shape with some axes 1, or a single element).
fn sum_to(t: &Tensor, dims: &[usize]) -> Result<Tensor> {
    if dims.iter().product::<usize>() == 1 {
        return t.sum_all()?.reshape(dims);
    }
    let axes: Vec<usize> = (0..t.rank()).filter(|&a| dims.get(a) == Some(&1) && t.dims()[a] != 1).collect();
    t.sum_keepdim(axes)?.reshape(dims)
}

/// Affine quantizer (DDTB, clip the input): `dq/dx = [l < x < u]`; with
/// `r = (clamp(x, l, u) - q) / (u - l)`, `dq/du = [x >= u] - r`, `dq/dl = [x <= l] + r`, each
/// bound's gradient summed over the elements it covers. Returns `(dx, dl, du)`.
pub(crate) fn affine_backward(
    x: &Tensor,
    lower: &Tensor,
    upper: &Tensor,
    q: &Tensor,
    grad: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let inside = (indicator(x.broadcast_gt(lower)?)? * indicator(x.broadcast_lt(upper)?)?)?;
    let dx = (grad * inside)?;
    let c = x.broadcast_maximum(lower)?.broadcast_minimum(upper)?;
    let r = (c - q)?.broadcast_div(&(upper - lower)?)?;
    let above = indicator(x.broadcast_ge(upper)?)?;
    let below = indicator(x.broadcast_le(lower)?)?;
    let du = sum_to(&(grad * (above - &r)?)?, upper.dims())?;
    let dl = sum_to(&(grad * (below + &r)?)?, lower.dims())?;
    Ok((dx, dl, du))
}

/// Symmetric quantizer on `[-alpha, alpha]`: `dq/dx = [|x| < alpha]`,
/// `dq/dalpha = [x >= alpha] - [x <= -alpha] + (q - clamp(x)) / alpha`. Returns `(dx, dalpha)`.
pub(crate) fn symmetric_backward(x: &Tensor, alpha: &Tensor, q: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
    let neg = alpha.neg()?;
    let inside = (indicator(x.broadcast_gt(&neg)?)? * indicator(x.broadcast_lt(alpha)?)?)?;
    let dx = (grad * inside)?;
    let c = x.broadcast_maximum(&neg)?.broadcast_minimum(alpha)?;
    let edge = (indicator(x.broadcast_ge(alpha)?)? - indicator(x.broadcast_le(&neg)?)?)?;
    let da = (grad * (edge + (q - c)?.broadcast_div(alpha)?)?)?;
    Ok((dx, sum_to(&da, alpha.dims())?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::quant::{affine_fake_quant, symmetric_fake_quant};
    use candle_core::{Device, Var};
    use proptest::prelude::*;

    fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        (0..n).map(|i| ((((i as u64 + seed) * 7919) % 1009) as f32 / 1009.0 - 0.5) * 2.0 * scale).collect()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    fn max_abs(a: &Tensor) -> f32 {
        a.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    proptest! {
        /// The composed backward (what a CUDA device runs) equals the fused CPU op's closed form:
        /// `dx` exactly, the bound gradients to f32 summation error, for one bound and per-sample
        /// bounds.
        #[test]
        fn composed_backward_equals_the_fused_cpu_backward(
            batch in 1usize..4,
            c in 1usize..5,
            side in 1usize..6,
            bits in 1u32..=8,
            per_sample in any::<bool>(),
            seed in 0u64..1000,
        ) {
            let d = Device::Cpu;
            let n = batch * c * side * side;
            let x = Var::from_vec(values(n, seed, 2.0), (batch, c, side, side), &d).unwrap();
            let groups = if per_sample { batch } else { 1 };
            let shape: Vec<usize> = if per_sample { vec![batch, 1, 1, 1] } else { vec![] };
            let lo: Vec<f32> = (0..groups).map(|k| -0.9 + 0.1 * k as f32).collect();
            let hi: Vec<f32> = (0..groups).map(|k| 1.1 - 0.2 * k as f32).collect();
            let l = Var::from_vec(lo, shape.clone(), &d).unwrap();
            let u = Var::from_vec(hi, shape, &d).unwrap();
            let g = Tensor::from_vec(values(n, seed + 3, 1.0), (batch, c, side, side), &d).unwrap();
            let q = affine_fake_quant(x.as_tensor(), l.as_tensor(), u.as_tensor(), bits).unwrap();
            let grads = (&q * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let (dx, dl, du) = affine_backward(x.as_tensor(), l.as_tensor(), u.as_tensor(), &q.detach(), &g).unwrap();
            prop_assert_eq!(max_diff(&dx, grads.get(x.as_tensor()).unwrap()), 0.0);
            for (got, v) in [(&dl, &l), (&du, &u)] {
                let want = grads.get(v.as_tensor()).unwrap();
                prop_assert_eq!(got.dims(), want.dims());
                prop_assert!(max_diff(got, want) <= 1e-5 * (1.0 + max_abs(want)) * n as f32);
            }

            if bits >= 2 {
                let a = Var::from_vec(vec![0.8f32], (), &d).unwrap();
                let q = symmetric_fake_quant(x.as_tensor(), a.as_tensor(), bits).unwrap();
                let grads = (&q * &g).unwrap().sum_all().unwrap().backward().unwrap();
                let (dx, da) = symmetric_backward(x.as_tensor(), a.as_tensor(), &q.detach(), &g).unwrap();
                prop_assert_eq!(max_diff(&dx, grads.get(x.as_tensor()).unwrap()), 0.0);
                let want = grads.get(a.as_tensor()).unwrap();
                prop_assert!(max_diff(&da, want) <= 1e-5 * (1.0 + max_abs(want)) * n as f32);
            }
        }
    }

    #[test]
    fn sums_reach_the_bound_shapes() {
        let d = Device::Cpu;
        let t = Tensor::arange(0f32, 24.0, &d).unwrap().reshape((2, 3, 4)).unwrap();
        assert_eq!(sum_to(&t, &[]).unwrap().to_scalar::<f32>().unwrap(), 276.0);
        assert_eq!(sum_to(&t, &[2, 1, 1]).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), [66.0, 210.0]);
        let per_channel: Vec<f32> = sum_to(&t, &[1, 3, 1]).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(per_channel, [60.0, 92.0, 124.0]);
    }
}
