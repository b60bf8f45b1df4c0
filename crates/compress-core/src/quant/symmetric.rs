//! Symmetric quantization on `[-alpha, alpha]` (PAMS): `qmax = 2^(b-1) - 1`,
//! `q = round(clamp(x, -alpha, alpha) qmax / alpha) alpha / qmax`, round straight-through, so
//! `alpha` (a `Var` for PAMS' trainable clip) gets the gradient of its clipping and scaling.

use super::affine::{CHUNK, f32_slice, with_f32};
use super::round::{rne_f32, ste_round};
use super::{QuantError, Result, check_bits};
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// `q(x; alpha, b)`; `alpha` is a positive scalar (or a tensor broadcasting to `x`).
pub fn symmetric_fake_quant(x: &Tensor, alpha: &Tensor, bits: u32) -> Result<Tensor> {
    check_bits(bits)?;
    if bits < 2 {
        return Err(QuantError::Bits(bits));
    }
    let a: Vec<f64> = alpha.detach().flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1()?;
    if let Some(&bad) = a.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        return Err(QuantError::Bounds { lower: -bad, upper: bad });
    }
    if super::is_half(x) {
        return super::in_f32(x, alpha, None, |x, a, _| symmetric_fake_quant(x, a, bits));
    }
    let fused = super::affine::fused_device(x.device());
    if fused && x.dtype() == DType::F32 && alpha.dtype() == DType::F32 && alpha.elem_count() == 1 {
        return Ok(x.contiguous()?.apply_op2(&alpha.contiguous()?, FusedSymmetric { bits })?);
    }
    symmetric_fake_quant_composed(x, alpha, bits)
}

/// The composed form (candle ops with `ste_round`), the reference of the fused CPU op.
pub fn symmetric_fake_quant_composed(x: &Tensor, alpha: &Tensor, bits: u32) -> Result<Tensor> {
    let qmax = f64::from((1u32 << (bits - 1)) - 1);
    let c = x.broadcast_maximum(&alpha.neg()?)?.broadcast_minimum(alpha)?;
    let scaled = c.broadcast_div(alpha)?.affine(qmax, 0.0)?;
    Ok(ste_round(&scaled)?.broadcast_mul(alpha)?.affine(1.0 / qmax, 0.0)?)
}

/// One pass forward and backward for a scalar `alpha`: with `c = clamp(x, -alpha, alpha)`,
/// `dq/dx = [|x| < alpha]` and `dq/dalpha = [x >= alpha] - [x <= -alpha] + (q - c) / alpha`.
#[derive(Debug, Clone, Copy)]
struct FusedSymmetric {
    bits: u32,
}

impl CustomOp2 for FusedSymmetric {
    fn name(&self) -> &'static str {
        "symmetric-fake-quant"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sa: &CpuStorage,
        la: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, alpha) = (f32_slice(sx, lx)?, f32_slice(sa, la)?[0]);
        let qmax = ((1u32 << (self.bits - 1)) - 1) as f64;
        let (up, down) = (qmax as f32, (1.0 / qmax) as f32);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, xc)| {
            for (o, &v) in o.iter_mut().zip(xc) {
                *o = (rne_f32((v.max(-alpha).min(alpha) / alpha) * up) * alpha) * down;
            }
        });
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sx: &candle_core::CudaStorage,
        lx: &Layout,
        sa: &candle_core::CudaStorage,
        la: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::gpu::cuda;
        let (x, alpha) = (cuda::f32_input(sx, lx, self.name())?, cuda::f32_input(sa, la, self.name())?);
        let qmax = ((1u32 << (self.bits - 1)) - 1) as f64;
        let q = cuda::symmetric_fake_quant(&sx.device, &x, &alpha, qmax as f32, (1.0 / qmax) as f32)?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(q, sx.device.clone()), lx.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        alpha: &Tensor,
        q: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        if !x.device().is_cpu() {
            let (dx, da) = super::ste::symmetric_backward(x, alpha, q, grad)?;
            return Ok((Some(dx), Some(da)));
        }
        let a = alpha.flatten_all()?.to_vec1::<f32>()?[0];
        let (dx, da) = with_f32(x, |xs| {
            with_f32(q, |qs| {
                with_f32(grad, |gs| {
                    let mut dx = vec![0f32; xs.len()];
                    let da: f64 = dx
                        .par_chunks_mut(CHUNK)
                        .enumerate()
                        .map(|(ci, d)| {
                            let mut da = 0f64;
                            for (j, d) in d.iter_mut().enumerate() {
                                let i = ci * CHUNK + j;
                                let (xi, g) = (xs[i], gs[i]);
                                let (above, below) = (xi >= a, xi <= -a);
                                *d = if above || below { 0.0 } else { g };
                                let edge = if above {
                                    1.0
                                } else if below {
                                    -1.0
                                } else {
                                    0.0
                                };
                                da += f64::from(g) * (edge + f64::from(qs[i] - xi.max(-a).min(a)) / f64::from(a));
                            }
                            da
                        })
                        .sum();
                    (dx, da)
                })
            })
        })???;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::full(da as f32, alpha.shape(), alpha.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn pams_two_bits_has_three_levels() {
        let sweep: Vec<f32> = (0..=2000).map(|i| -5.0 + i as f32 * 0.005).collect();
        let x = Tensor::from_slice(&sweep, sweep.len(), &Device::Cpu).unwrap();
        let a = Tensor::new(1.2f32, &Device::Cpu).unwrap();
        let mut v: Vec<f32> = symmetric_fake_quant(&x, &a, 2).unwrap().to_vec1().unwrap();
        v.sort_by(f32::total_cmp);
        v.dedup();
        assert_eq!(v, vec![-1.2, 0.0, 1.2]);
        assert!(symmetric_fake_quant(&x, &a, 1).is_err());
        assert!(symmetric_fake_quant(&x, &Tensor::new(0f32, &Device::Cpu).unwrap(), 4).is_err());
        // The error names the range [-alpha, alpha] it refused.
        let e = symmetric_fake_quant(&x, &Tensor::new(-0.5f32, &Device::Cpu).unwrap(), 4).unwrap_err();
        assert!(matches!(e, QuantError::Bounds { lower, upper } if lower == 0.5 && upper == -0.5), "{e:?}");
    }

    /// Where the fused op does not apply (f64, or one alpha per channel) the composed form runs,
    /// with the same values.
    #[test]
    fn other_dtypes_and_per_channel_alphas_take_the_composed_form() {
        let dev = &Device::Cpu;
        let xs: Vec<f32> = (0..24).map(|i| i as f32 * 0.37 - 4.0).collect();
        let x = Tensor::from_vec(xs, (4, 6), dev).unwrap();
        let alpha = Tensor::new(&[[0.5f32], [1.0], [2.0], [3.0]], dev).unwrap();
        let got = symmetric_fake_quant(&x, &alpha, 3).unwrap();
        let want = symmetric_fake_quant_composed(&x, &alpha, 3).unwrap();
        assert_eq!(got.to_vec2::<f32>().unwrap(), want.to_vec2::<f32>().unwrap());
        // Each row saturates at its own alpha: its largest magnitude is that alpha.
        assert_eq!(
            got.abs().unwrap().max_keepdim(1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.5, 1.0, 2.0, 3.0]
        );
        let (x64, a64) = (x.to_dtype(DType::F64).unwrap(), Tensor::new(1.5f64, dev).unwrap());
        let got = symmetric_fake_quant(&x64, &a64, 3).unwrap();
        assert_eq!(got.dtype(), DType::F64);
        let want = symmetric_fake_quant(&x, &Tensor::new(1.5f32, dev).unwrap(), 3).unwrap();
        let d = (got.to_dtype(DType::F32).unwrap() - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
    }

    /// Past the first parallel chunk each element still reads its own input, forward and
    /// backward.
    #[test]
    fn fused_equals_composed_past_the_first_chunk() {
        let len = 2 * CHUNK + 123;
        let xs: Vec<f32> = (0..len).map(|i| ((i * 7919) % 2003) as f32 / 2003.0 * 5.0 - 2.5 + 1.237e-4).collect();
        let x = candle_core::Var::from_vec(xs, len, &Device::Cpu).unwrap();
        let a = candle_core::Var::from_tensor(&Tensor::new(1.3f32, &Device::Cpu).unwrap()).unwrap();
        let w =
            Tensor::from_vec((0..len).map(|i| (i % 11) as f32 - 5.0).collect::<Vec<f32>>(), len, &Device::Cpu).unwrap();
        let f = symmetric_fake_quant(x.as_tensor(), a.as_tensor(), 3).unwrap();
        let c = symmetric_fake_quant_composed(x.as_tensor(), a.as_tensor(), 3).unwrap();
        assert_eq!(f.to_vec1::<f32>().unwrap(), c.to_vec1::<f32>().unwrap());
        let gf = (f * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (c * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let dx = |g: &candle_core::backprop::GradStore| g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let (p, q) = (dx(&gf), dx(&gc));
        assert!(p.iter().zip(&q).all(|(p, q)| (p - q).abs() <= 1e-6 * (1.0 + q.abs())));
        assert!(
            p.iter().filter(|v| **v == 0.0).count() > len / 10 && p.iter().filter(|v| **v != 0.0).count() > len / 10
        );
        let da = |g: &candle_core::backprop::GradStore| g.get(a.as_tensor()).unwrap().to_scalar::<f32>().unwrap();
        assert!((da(&gf) - da(&gc)).abs() <= 1e-3 * (1.0 + da(&gc).abs()), "{} vs {}", da(&gf), da(&gc));
    }

    proptest::proptest! {
        /// The fused CPU op equals the composed candle ops (values bit for bit, gradients).
        #[test]
        fn fused_equals_composed(len in 1usize..200, alpha in 0.05f32..4.0, bits in 2u32..=8, seed in 0u64..1000) {
            let xs: Vec<f32> = (0..len).map(|i| (((i as u64 * 2654435761 + seed * 31) % 997) as f32 / 997.0 - 0.5) * 10.0 + 1.237e-4).collect();
            let x = candle_core::Var::from_vec(xs, len, &Device::Cpu).unwrap();
            let a = candle_core::Var::from_tensor(&Tensor::new(alpha, &Device::Cpu).unwrap()).unwrap();
            let w = Tensor::from_vec((0..len).map(|i| (i % 5) as f32 - 2.0).collect::<Vec<f32>>(), len, &Device::Cpu).unwrap();
            let f = symmetric_fake_quant(x.as_tensor(), a.as_tensor(), bits).unwrap();
            let c = symmetric_fake_quant_composed(x.as_tensor(), a.as_tensor(), bits).unwrap();
            proptest::prop_assert_eq!(f.to_vec1::<f32>().unwrap(), c.to_vec1::<f32>().unwrap());
            let gf = (f * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (c * &w).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &a] {
                let p: Vec<f32> = gf.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                let q: Vec<f32> = gc.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                for (p, q) in p.iter().zip(&q) {
                    proptest::prop_assert!((p - q).abs() <= 1e-3 * (1.0 + q.abs()), "{p} vs {q}");
                }
            }
        }
    }
}
