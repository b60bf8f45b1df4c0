//! Exact (erf) GELU as one op with its backward: `y = x Phi(x)`, `dy/dx = Phi(x) + x phi(x)`,
//! `Phi(x) = (1 + erf(x / sqrt 2)) / 2`, `phi(x) = exp(-x^2 / 2) / sqrt(2 pi)` (candle's backward
//! is eleven element-wise ops).

use crate::cpu::{f32_slice, with_f32, zip_chunks, zip_chunks2};
use candle_core::cpu::erf::erf_f32;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

const CHUNK: usize = 1 << 14;

/// GELU (erf form) of `x` (CPU f32: fused; elsewhere candle's `gelu_erf`).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(GeluOp)
}

#[derive(Debug, Clone, Copy)]
struct GeluOp;

fn cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _span = super::profile::span(|| self.name().to_string());
        let x = f32_slice(s, l)?;
        let mut y = vec![0f32; x.len()];
        zip_chunks(&mut y, x, CHUNK, |yc, xc| {
            for (o, &v) in yc.iter_mut().zip(xc) {
                *o = v * cdf(v);
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let inv_sqrt_2pi = 0.398_942_3_f32;
        let dx = with_f32(arg, |xs| {
            with_f32(grad, |gs| {
                let mut dx = vec![0f32; xs.len()];
                zip_chunks2(&mut dx, xs, gs, CHUNK, |dc, xc, gc| {
                    for ((o, &v), &g) in dc.iter_mut().zip(xc).zip(gc) {
                        *o = g * (cdf(v) + v * inv_sqrt_2pi * (-0.5 * v * v).exp());
                    }
                });
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

    #[test]
    fn equals_candle_gelu_erf_values_and_gradients() {
        let dev = &Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 2.5, (7, 300), dev).unwrap()).unwrap();
        let g = Tensor::randn(0f32, 1.0, (7, 300), dev).unwrap();
        let ours = gelu_erf(x.as_tensor()).unwrap();
        let theirs = x.as_tensor().gelu_erf().unwrap();
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
        };
        assert!(diff(&ours, &theirs) < 1e-5);
        let g1 = (ours * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (theirs * &g).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(diff(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap()) < 1e-5);
    }
}
