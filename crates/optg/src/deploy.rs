//! Deployment: a trained sparse model's weights in compressed sparse rows (`compress-core`'s
//! [`Csr`], [`crate::Sparsified::export_csr`]) and [`CsrLinear`], a linear layer on the CSR
//! kernel: `y[n, o] = sum_e val[e] x[n, col[e]] + b[o]` over row `o`'s non-zeros (NHWC tiles of
//! 32 rows transposed to channel-major, the same kernel as 1x1 convs).

use crate::error::{Result, config_err};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Shape, Tensor};
use compress_core::sparse::{Csr, csr_conv1x1_nchw, csr_conv1x1_nhwc};

/// The f32 values of a contiguous CPU tensor, without a copy.
fn f32_values<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: needs a contiguous f32 tensor"),
    }
}

/// Runs `op` on the CPU kernel for contiguous f32 CPU input, else on a copy made so.
fn apply(x: &Tensor, op: &impl CustomOp1) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1_no_bwd(op)
    } else {
        let dev = x.device().clone();
        x.to_device(&candle_core::Device::Cpu)?
            .to_dtype(DType::F32)?
            .contiguous()?
            .apply_op1_no_bwd(op)?
            .to_device(&dev)?
            .to_dtype(x.dtype())
    }
}

/// A linear layer `[.., C_in] -> [.., C_out]` whose weight is in CSR.
#[derive(Debug, Clone)]
pub struct CsrLinear {
    a: Csr,
    bias: Option<Vec<f32>>,
}

impl CsrLinear {
    /// The layer of `weight` (`[C_out, C_in]`, zeros dropped) and `bias` (`[C_out]`).
    pub fn from_dense(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        Self::new(Csr::from_dense(weight)?, bias)
    }

    /// The layer of a CSR matrix and a bias.
    pub fn new(a: Csr, bias: Option<&Tensor>) -> Result<Self> {
        let bias = match bias {
            Some(b) => {
                let v: Vec<f32> = b.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
                if v.len() != a.rows {
                    return Err(config_err(format!("bias of {} for {} outputs", v.len(), a.rows)));
                }
                Some(v)
            }
            None => None,
        };
        Ok(Self { a, bias })
    }

    /// The weight.
    pub fn csr(&self) -> &Csr {
        &self.a
    }
}

impl CustomOp1 for CsrLinear {
    fn name(&self) -> &'static str {
        "csr-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_values(s, l, self.name())?;
        let mut y = csr_conv1x1_nhwc(&self.a, x).map_err(candle_core::Error::wrap)?;
        if let Some(b) = &self.bias {
            for row in y.chunks_mut(self.a.rows.max(1)) {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        }
        let mut dims = l.shape().dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = self.a.rows;
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

impl Module for CsrLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match x.dims().last() {
            Some(&c) if c == self.a.cols => apply(x, self),
            _ => candle_core::bail!("input {:?} does not end in the layer's {} features", x.dims(), self.a.cols),
        }
    }
}

/// A 1x1 convolution `[N, C_in, H, W] -> [N, C_out, H, W]` on the CSR kernel (no bias).
#[derive(Debug, Clone)]
pub struct CsrConv1x1 {
    a: Csr,
}

impl CsrConv1x1 {
    /// The layer of a `[C_out, C_in, 1, 1]` or `[C_out, C_in]` weight.
    pub fn from_dense(weight: &Tensor) -> Result<Self> {
        Ok(Self { a: Csr::from_dense(weight)? })
    }
}

impl CustomOp1 for CsrConv1x1 {
    fn name(&self) -> &'static str {
        "csr-conv1x1"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, _, h, w) = l.shape().dims4()?;
        let y = csr_conv1x1_nchw(&self.a, f32_values(s, l, self.name())?, h * w).map_err(candle_core::Error::wrap)?;
        Ok((CpuStorage::F32(y), Shape::from((n, self.a.rows, h, w))))
    }
}

impl Module for CsrConv1x1 {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, c, _, _) = x.dims4()?;
        if c != self.a.cols {
            candle_core::bail!("input has {c} channels, the layer {}", self.a.cols)
        }
        apply(x, self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;
    use compress_core::sparse::weight_mask;
    use proptest::prelude::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

    proptest! {
        #[test]
        fn csr_layers_match_the_dense_products(out in 1usize..50, inp in 1usize..70, batch in 1usize..70,
                                               rate in 0.0f64..0.999, side in 1usize..5, seed in 0u64..50) {
            let dev = Device::Cpu;
            let v: Vec<f32> = (0..out * inp).map(|i| ((i as u64 * 2654435761 + seed) % 997) as f32 / 498.0 - 1.0).collect();
            let w = Tensor::from_vec(v, (out, inp), &dev).unwrap();
            let w = (&w * weight_mask(&w, rate).unwrap()).unwrap();
            let b = Tensor::arange(0f32, out as f32, &dev).unwrap();
            let x = Tensor::randn(0f32, 1.0, (batch, inp), &dev).unwrap();
            let dense = candle_nn::Linear::new(w.clone(), Some(b.clone())).forward(&x).unwrap();
            let sparse = CsrLinear::from_dense(&w, Some(&b)).unwrap().forward(&x).unwrap();
            prop_assert!(max_diff(&dense, &sparse) < 1e-4);
            let xc = Tensor::randn(0f32, 1.0, (batch.min(3), inp, side, side + 1), &dev).unwrap();
            let w4 = w.reshape((out, inp, 1, 1)).unwrap();
            let dense = xc.conv2d(&w4, 0, 1, 1, 1).unwrap();
            let sparse = CsrConv1x1::from_dense(&w4).unwrap().forward(&xc).unwrap();
            prop_assert!(max_diff(&dense, &sparse) < 1e-4);
        }
    }

    #[test]
    fn wrong_shapes_are_refused() {
        let dev = Device::Cpu;
        let l = CsrLinear::from_dense(&Tensor::ones((3, 4), DType::F32, &dev).unwrap(), None).unwrap();
        assert!(l.forward(&Tensor::ones((2, 5), DType::F32, &dev).unwrap()).is_err());
        let b = Tensor::ones(2, DType::F32, &dev).unwrap();
        assert!(CsrLinear::from_dense(&Tensor::ones((3, 4), DType::F32, &dev).unwrap(), Some(&b)).is_err());
        assert_eq!(l.forward(&Tensor::ones((2, 7, 4), DType::F32, &dev).unwrap()).unwrap().dims(), [2, 7, 3]);
    }
}
