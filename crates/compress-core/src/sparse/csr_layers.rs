//! Linear and 1x1 conv layers on the CSR kernel ([`super::csr`]) as candle ops: OptG's
//! deployment of an unstructured sparse model. `y[n, o] = sum_e val[e] x[n, col[e]] + b[o]` over
//! row `o`'s non-zeros; inputs are read in place (contiguous f32 on the CPU; elsewhere through a
//! CPU copy).

use super::{Csr, Result, SparseError};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Shape, Tensor};

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
                    return Err(SparseError::Malformed(format!("bias of {} for {} outputs", v.len(), a.rows)));
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
        let x = super::packed::contiguous_f32(s, l, self.name())?;
        let mut y = super::csr::csr_conv1x1_nhwc(&self.a, x).map_err(candle_core::Error::wrap)?;
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
        let y = super::csr::csr_conv1x1_nchw(&self.a, super::packed::contiguous_f32(s, l, self.name())?, h * w)
            .map_err(candle_core::Error::wrap)?;
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
    use crate::sparse::weight_mask;
    use candle_core::Device;

    fn close(got: &Tensor, want: &Tensor) {
        assert_eq!(got.dims(), want.dims());
        let d = (got.to_dtype(DType::F64).unwrap() - want.to_dtype(DType::F64).unwrap()).unwrap();
        let d = d.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(d < 1e-5, "max difference {d}");
    }

    fn ramp(n: usize, step: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * step) % 613) as f32 / 306.0 - 1.0).collect()
    }

    #[test]
    fn the_layers_equal_their_dense_forms_and_refuse_other_widths() {
        let dev = Device::Cpu;
        let w = Tensor::from_vec(ramp(12 * 20, 7919), (12, 20), &dev).unwrap();
        let w = (&w * weight_mask(&w, 0.6).unwrap()).unwrap();
        let b = Tensor::from_vec((0..12).map(|i| i as f32 * 0.25 - 1.0).collect::<Vec<f32>>(), 12, &dev).unwrap();
        // Linear on [3, 5, 20], with and without the bias, in f32 and (through a copy) f64.
        let x = Tensor::from_vec(ramp(3 * 5 * 20, 40503), (3, 5, 20), &dev).unwrap();
        let plain = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        let lin = CsrLinear::from_dense(&w, Some(&b)).unwrap();
        close(&lin.forward(&x).unwrap(), &plain.broadcast_add(&b).unwrap());
        close(&CsrLinear::from_dense(&w, None).unwrap().forward(&x).unwrap(), &plain);
        let y64 = lin.forward(&x.to_dtype(DType::F64).unwrap()).unwrap();
        assert_eq!(y64.dtype(), DType::F64);
        close(&y64, &plain.broadcast_add(&b).unwrap());
        // A 1x1 convolution on [2, 20, 3, 4] against candle's.
        let w4 = w.reshape((12, 20, 1, 1)).unwrap();
        let xc = Tensor::from_vec(ramp(2 * 20 * 3 * 4, 104729), (2, 20, 3, 4), &dev).unwrap();
        let conv = CsrConv1x1::from_dense(&w4).unwrap();
        close(&conv.forward(&xc).unwrap(), &xc.conv2d(&w4, 0, 1, 1, 1).unwrap());
        close(&conv.forward(&xc.to_dtype(DType::F64).unwrap()).unwrap(), &xc.conv2d(&w4, 0, 1, 1, 1).unwrap());
        // Inputs of another width, even when their values make whole samples of 20.
        assert!(lin.forward(&Tensor::zeros((4, 10), DType::F32, &dev).unwrap()).is_err());
        assert!(conv.forward(&Tensor::zeros((2, 10, 2, 2), DType::F32, &dev).unwrap()).is_err());
        assert!(CsrLinear::from_dense(&w, Some(&Tensor::zeros(11, DType::F32, &dev).unwrap())).is_err());
        // The ops name themselves when handed what their kernels do not take.
        let e = x.to_dtype(DType::F64).unwrap().apply_op1_no_bwd(&lin).unwrap_err().to_string();
        assert!(e.contains("csr-linear"), "{e}");
        let e = xc.to_dtype(DType::F64).unwrap().apply_op1_no_bwd(&conv).unwrap_err().to_string();
        assert!(e.contains("csr-conv1x1"), "{e}");
    }
}
