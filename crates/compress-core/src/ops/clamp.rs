//! ReLU and ReLU6 as one op with its backward: `y = min(max(x, lo), hi)`,
//! `dx = dy` where `lo < x < hi`, else 0 (PyTorch's `relu` / `hardtanh` gradients).
//!
//! candle's `clamp` is a broadcast `maximum` then `minimum` whose backward builds comparison
//! masks and products: about eight passes over the activation where two suffice. In MobileNetV2,
//! with an activation after almost every conv, those passes cost more than the convolutions.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

const CHUNK: usize = 1 << 14;

/// `clamp(x, lo, hi)` with the straight gradient inside the open interval (CPU, f32/f64; other
/// devices and dtypes, e.g. half-precision inference, use candle's ops).
pub fn clamp_activation(x: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
    let own = x.device().is_cpu() && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64);
    if !own || super::candle_only() {
        return if hi.is_finite() { x.clamp(lo, hi) } else { x.maximum(lo) };
    }
    x.contiguous()?.apply_op1(Clamp { lo, hi })
}

#[derive(Debug, Clone, Copy)]
struct Clamp {
    lo: f64,
    hi: f64,
}

fn slice<'a, T>(v: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("clamp_activation: operands must be contiguous"),
    }
}

/// Clamps in one pass; NaN stays NaN (as `torch.clamp`).
fn forward<T: Copy + PartialOrd + Send + Sync>(x: &[T], lo: T, hi: T) -> Vec<T> {
    // Two selects rather than an if / else-if chain: branch-free, so it vectorizes (the signs of
    // activations are random; a branch mispredicts half the time).
    crate::cpu::par_map(x, CHUNK, move |v| {
        let a = if v < lo { lo } else { v };
        if a > hi { hi } else { a }
    })
}

/// `dy` where `lo < x < hi`, else 0, in one pass.
fn backward<T: Copy + PartialOrd + Send + Sync + Default>(x: &[T], dy: &[T], lo: T, hi: T) -> Vec<T> {
    let zero = T::default();
    crate::cpu::par_map2(x, dy, CHUNK, move |x, d| {
        let inside = (x > lo) & (x < hi);
        if inside { d } else { zero }
    })
}

impl CustomOp1 for Clamp {
    fn name(&self) -> &'static str {
        "clamp-activation"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _span = super::profile::span(|| self.name().to_string());
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(forward(slice(v, l)?, self.lo as f32, self.hi as f32)),
            CpuStorage::F64(v) => CpuStorage::F64(forward(slice(v, l)?, self.lo, self.hi)),
            _ => candle_core::bail!("clamp_activation: f32 or f64 only"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(clamp_grad(arg, grad_res, self.lo, self.hi)?))
    }
}

/// `dy` where `lo < x < hi`, else 0 (CPU, f32 / f64): the gradient of a clamp at `x`, or at its
/// output `clamp(z)` (inside the open interval exactly when `z` is).
pub(crate) fn clamp_grad(x: &Tensor, dy: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op2_no_bwd(&dy.contiguous()?, &ClampGrad { lo, hi })
}

#[derive(Debug, Clone, Copy)]
struct ClampGrad {
    lo: f64,
    hi: f64,
}

impl CustomOp2 for ClampGrad {
    fn name(&self) -> &'static str {
        "clamp-activation-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let _span = super::profile::span(|| self.name().to_string());
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => {
                CpuStorage::F32(backward(slice(x, l1)?, slice(g, l2)?, self.lo as f32, self.hi as f32))
            }
            (CpuStorage::F64(x), CpuStorage::F64(g)) => {
                CpuStorage::F64(backward(slice(x, l1)?, slice(g, l2)?, self.lo, self.hi))
            }
            _ => candle_core::bail!("clamp_activation: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn values_and_gradients_match_candle() {
        let v: Vec<f32> = (0..2000).map(|i| ((i * 37 % 101) as f32 - 50.0) / 6.0).collect();
        let x = Var::from_vec(v, (4, 5, 10, 10), &Device::Cpu).unwrap();
        let w = Tensor::arange(0f32, 2000.0, &Device::Cpu).unwrap().reshape((4, 5, 10, 10)).unwrap();
        for (lo, hi) in [(0.0, 6.0), (0.0, f64::INFINITY)] {
            let ours = clamp_activation(x.as_tensor(), lo, hi).unwrap();
            let reference = if hi.is_finite() { x.as_tensor().clamp(lo, hi) } else { x.as_tensor().relu() }.unwrap();
            let d = (&ours - &reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(d, 0.0);
            let g1 = (ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (reference * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let (a, b) = (g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap());
            // candle's clamp passes the gradient at the bounds too; PyTorch (and we) do not.
            let xs: Vec<f32> = x.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let (a, b): (Vec<f32>, Vec<f32>) =
                (a.flatten_all().unwrap().to_vec1().unwrap(), b.flatten_all().unwrap().to_vec1().unwrap());
            for ((x, a), b) in xs.iter().zip(&a).zip(&b) {
                if f64::from(*x) != lo && f64::from(*x) != hi {
                    assert_eq!(a, b, "at x = {x}");
                } else {
                    assert_eq!(*a, 0.0);
                }
            }
        }
    }
}
