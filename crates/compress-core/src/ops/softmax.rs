//! Softmax over the last dimension as one op with its backward (`candle_nn`'s fused softmax has
//! none; the composed one is five ops): `y = exp(x - max) / sum`, `dx = y (g - sum(g y))`.

use crate::cpu::{f32_slice, rows_per_task, with_f32, zip_chunks, zip_chunks2};
use candle_core::{CpuStorage, CustomOp1, D, DType, Layout, Result, Shape, Tensor};

/// Softmax of `x` over its last dimension (CPU f32: fused; elsewhere composed).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return softmax_composed(x);
    }
    x.contiguous()?.apply_op1(SoftmaxOp)
}

/// The definition from candle primitives.
pub fn softmax_composed(x: &Tensor) -> Result<Tensor> {
    let e = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

#[derive(Debug, Clone, Copy)]
struct SoftmaxOp;

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "softmax-last"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _span = super::profile::span(|| self.name().to_string());
        let x = f32_slice(s, l)?;
        let d = l.dims().last().copied().unwrap_or(1);
        let mut y = vec![0f32; x.len()];
        if d > 0 {
            let r = rows_per_task(d);
            zip_chunks(&mut y, x, r * d, |yc, xc| {
                for (yr, xr) in yc.chunks_exact_mut(d).zip(xc.chunks_exact(d)) {
                    let m = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut s = 0f32;
                    for (o, &v) in yr.iter_mut().zip(xr) {
                        *o = (v - m).exp();
                        s += *o;
                    }
                    let inv = 1.0 / s;
                    yr.iter_mut().for_each(|o| *o *= inv);
                }
            });
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let d = arg.dim(D::Minus1)?;
        let dx = with_f32(res, |ys| {
            with_f32(grad, |gs| {
                let mut dx = vec![0f32; ys.len()];
                if d > 0 {
                    let r = rows_per_task(d);
                    zip_chunks2(&mut dx, ys, gs, r * d, |dc, yc, gc| {
                        for ((dr, yr), gr) in dc.chunks_exact_mut(d).zip(yc.chunks_exact(d)).zip(gc.chunks_exact(d)) {
                            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                            for i in 0..d {
                                dr[i] = yr[i] * (gr[i] - dot);
                            }
                        }
                    });
                }
                dx
            })
        })??;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn check(shape: &[usize], scale: f32) {
        let dev = &Device::Cpu;
        let x = Var::from_tensor(&(Tensor::randn(0f32, scale, shape, dev).unwrap())).unwrap();
        let g = Tensor::randn(0f32, 1.0, shape, dev).unwrap();
        let ours = softmax_last(x.as_tensor()).unwrap();
        let theirs = softmax_composed(x.as_tensor()).unwrap();
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
        };
        assert!(diff(&ours, &theirs) < 1e-6, "{shape:?}");
        let g1 = (ours * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (theirs * &g).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(diff(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap()) < 1e-5, "{shape:?}");
    }

    #[test]
    fn equals_the_composed_definition_values_and_gradients() {
        for shape in [vec![1usize, 1], vec![4, 6, 17], vec![64, 65], vec![2, 3, 5, 7]] {
            check(&shape, 3.0);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]
        #[test]
        fn matches_on_random_shapes(a in 1usize..40, b in 1usize..9, d in 1usize..80, scale in 0.01f32..30.0) {
            check(&[a, b, d], scale);
        }
    }
}
