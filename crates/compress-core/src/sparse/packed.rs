//! Packed 1xN layers that drop into a candle model: [`PackedConv2d`] (any square kernel, stride
//! and padding, NCHW) and [`PackedLinear`] (`[.., C_in]` rows, the NHWC kernel). In f32 on the
//! CPU, and on a CUDA device under the `cuda` feature (`kernels/onexn.cu`), they run as a candle
//! custom op over the packed kernels (`K x K` convs as im2col, then the 1x1 kernel over
//! `C_in K_h K_w` virtual channels, see [`Bsr1xN::taps_as_channels`]); on other devices and
//! dtypes they run candle's dense op on the unpacked weight, so a model that uses them keeps
//! working everywhere. Inference only: no backward.

use super::bsr::Bsr1xN;
use super::kernel::{conv1x1_nchw, conv1x1_nhwc};
use super::{Result, SparseError};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Shape, Tensor};
use rayon::prelude::*;

pub(super) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: expected contiguous f32 input"),
    }
}

fn sparse_err(e: SparseError) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

/// A convolution whose weight is packed in the 1xN format.
#[derive(Debug, Clone)]
pub struct PackedConv2d {
    /// The weight as packed (taps per block).
    packed: Bsr1xN,
    /// The same weight over im2col rows (`kk = 1`).
    virtual_1x1: Bsr1xN,
    bias: Option<Vec<f32>>,
    stride: usize,
    padding: usize,
    /// The dense weight, for devices without the packed kernel.
    dense: Tensor,
    /// `virtual_1x1` and the bias on the last CUDA device that ran the layer.
    #[cfg(feature = "cuda")]
    on_device: std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<crate::gpu::cuda::PackedOnDevice>>>>,
}

impl PackedConv2d {
    /// A layer from a validated packed weight (square kernel), an optional bias of `C_out`
    /// values, stride and padding.
    pub fn new(packed: Bsr1xN, bias: Option<Vec<f32>>, stride: usize, padding: usize) -> Result<Self> {
        packed.validate()?;
        if packed.kernel.0 != packed.kernel.1 || stride == 0 {
            return Err(SparseError::Malformed(format!(
                "packed conv needs a square kernel and stride >= 1, got {:?} / {stride}",
                packed.kernel
            )));
        }
        if bias.as_ref().is_some_and(|b| b.len() != packed.c_out) {
            return Err(SparseError::Malformed(format!("bias must have {} entries", packed.c_out)));
        }
        let dense = packed.to_dense(&Device::Cpu)?;
        Ok(Self {
            virtual_1x1: packed.taps_as_channels(),
            packed,
            bias,
            stride,
            padding,
            dense,
            #[cfg(feature = "cuda")]
            on_device: Default::default(),
        })
    }

    /// Packs `w ⊙ mask` (already masked, `[C_out, C_in, k, k]`) with blocks of `n` outputs.
    pub fn from_dense(w: &Tensor, bias: Option<&Tensor>, n: usize, stride: usize, padding: usize) -> Result<Self> {
        let b = bias.map(|b| b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()).transpose()?;
        Self::new(Bsr1xN::from_dense(w, n)?, b, stride, padding)
    }

    /// The packed weight.
    pub fn packed(&self) -> &Bsr1xN {
        &self.packed
    }

    fn out_side(&self, side: usize) -> Option<usize> {
        let k = self.packed.kernel.0;
        (side + 2 * self.padding >= k).then(|| (side + 2 * self.padding - k) / self.stride + 1)
    }

    /// NCHW `x` of `batch x C_in x h x w` values -> `batch x C_out x oh x ow`.
    pub fn run_nchw(&self, x: &[f32], h: usize, w: usize) -> Result<(Vec<f32>, usize, usize)> {
        let (k, c_in, c_out) = (self.packed.kernel.0, self.packed.c_in, self.packed.c_out);
        let (Some(oh), Some(ow)) = (self.out_side(h), self.out_side(w)) else {
            return Err(SparseError::Malformed(format!("a {h}x{w} input is smaller than the {k}x{k} kernel")));
        };
        let per = c_in * h * w;
        if per == 0 || !x.len().is_multiple_of(per) {
            return Err(SparseError::Malformed(format!("{} values are not whole {c_in}x{h}x{w} samples", x.len())));
        }
        let bias = self.bias.as_deref();
        if k == 1 && self.stride == 1 && self.padding == 0 {
            return Ok((conv1x1_nchw(&self.packed, x, h * w, bias)?, oh, ow));
        }
        let batch = x.len() / per;
        let out = c_out * oh * ow;
        let mut y = vec![0f32; batch * out];
        // Samples one after another; each runs the (group-parallel) 1x1 kernel on its im2col.
        for (b, yb) in y.chunks_mut(out).enumerate() {
            let (cols, _, _) =
                crate::ops::conv2d::im2col_f32(&x[b * per..(b + 1) * per], c_in, h, w, k, self.stride, self.padding);
            yb.copy_from_slice(&conv1x1_nchw(&self.virtual_1x1, &cols, oh * ow, bias)?);
        }
        Ok((y, oh, ow))
    }

    /// NHWC `x` of `batch x h x w x C_in` values -> `batch x oh x ow x C_out`.
    pub fn run_nhwc(&self, x: &[f32], h: usize, w: usize) -> Result<(Vec<f32>, usize, usize)> {
        let (k, c_in) = (self.packed.kernel.0, self.packed.c_in);
        let (Some(oh), Some(ow)) = (self.out_side(h), self.out_side(w)) else {
            return Err(SparseError::Malformed(format!("a {h}x{w} input is smaller than the {k}x{k} kernel")));
        };
        let per = c_in * h * w;
        if per == 0 || !x.len().is_multiple_of(per) {
            return Err(SparseError::Malformed(format!("{} values are not whole {h}x{w}x{c_in} samples", x.len())));
        }
        let bias = self.bias.as_deref();
        if k == 1 && self.stride == 1 && self.padding == 0 {
            return Ok((conv1x1_nhwc(&self.packed, x, bias)?, oh, ow));
        }
        // NHWC im2col: row (b, oy, ox), column j k k + t (the virtual channel order).
        let (batch, kk, s, p) = (x.len() / per, k * k, self.stride, self.padding as isize);
        let mut cols = vec![0f32; batch * oh * ow * c_in * kk];
        cols.par_chunks_mut(c_in * kk).enumerate().for_each(|(r, row)| {
            let (b, oy, ox) = (r / (oh * ow), r / ow % oh, r % ow);
            for ky in 0..k {
                let iy = (oy * s + ky) as isize - p;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for kx in 0..k {
                    let ix = (ox * s + kx) as isize - p;
                    if ix < 0 || ix >= w as isize {
                        continue;
                    }
                    let src = &x[((b * h + iy as usize) * w + ix as usize) * c_in..][..c_in];
                    for (j, &v) in src.iter().enumerate() {
                        row[j * kk + ky * k + kx] = v;
                    }
                }
            }
        });
        Ok((conv1x1_nhwc(&self.virtual_1x1, &cols, bias)?, oh, ow))
    }
}

impl CustomOp1 for PackedConv2d {
    fn name(&self) -> &'static str {
        "packed-1xn-conv2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, _, h, w) = l.shape().dims4()?;
        let x = contiguous_f32(s, l, self.name())?;
        let (y, oh, ow) = self.run_nchw(x, h, w).map_err(sparse_err)?;
        Ok((CpuStorage::F32(y), Shape::from((b, self.packed.c_out, oh, ow))))
    }

    /// On the GPU: im2col (skipped for a 1x1, stride-1, unpadded conv), then the 1xN product
    /// over the virtual channels.
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::gpu::cuda;
        let (b, c, h, w) = l.shape().dims4()?;
        let (Some(oh), Some(ow)) = (self.out_side(h), self.out_side(w)) else {
            candle_core::bail!("{}: a {h}x{w} input is smaller than the kernel", self.name())
        };
        let dev = &s.device;
        let on = {
            let mut slot = self.on_device.lock().map_err(|_| candle_core::Error::Msg("poisoned lock".into()))?;
            match slot.as_ref() {
                Some(p) if p.on(dev) => p.clone(),
                _ => {
                    let p =
                        std::sync::Arc::new(cuda::PackedOnDevice::new(&self.virtual_1x1, self.bias.as_deref(), dev)?);
                    *slot = Some(p.clone());
                    p
                }
            }
        };
        let x = cuda::f32_input(s, l, self.name())?;
        let k = self.packed.kernel.0;
        let y = if k == 1 && self.stride == 1 && self.padding == 0 {
            cuda::conv1x1_nchw(&self.virtual_1x1, &on, &x, b, h * w)?
        } else {
            let cols = cuda::im2col_nchw(dev, &x, (b, c, h, w), k, self.stride, self.padding, (oh, ow))?;
            cuda::conv1x1_nchw(&self.virtual_1x1, &on, &cols.slice(..), b, oh * ow)?
        };
        Ok((candle_core::CudaStorage::wrap_cuda_slice(y, dev.clone()), Shape::from((b, self.packed.c_out, oh, ow))))
    }
}

/// Whether the packed kernels run on `x` (f32 on the CPU, or on CUDA under the `cuda` feature).
fn packed_kernel_runs(x: &Tensor) -> bool {
    x.dtype() == DType::F32 && (x.device().is_cpu() || (cfg!(feature = "cuda") && x.device().is_cuda()))
}

impl Module for PackedConv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, c, _, _) = x.dims4()?;
        if c != self.packed.c_in {
            candle_core::bail!("packed conv expects {} input channels, got {c}", self.packed.c_in)
        }
        if packed_kernel_runs(x) {
            return x.contiguous()?.apply_op1_no_bwd(self);
        }
        let w = self.dense.to_device(x.device())?.to_dtype(x.dtype())?;
        let y = x.conv2d(&w, self.padding, self.stride, 1, 1)?;
        match &self.bias {
            Some(b) => {
                y.broadcast_add(&Tensor::new(b.as_slice(), x.device())?.to_dtype(x.dtype())?.reshape((1, (), 1, 1))?)
            }
            None => Ok(y),
        }
    }
}

/// A linear layer `y = x W^T + b` whose `[C_out, C_in]` weight is packed in the 1xN format (the
/// NHWC kernel with one "pixel" per row of `x`).
#[derive(Debug, Clone)]
pub struct PackedLinear(PackedConv2d);

impl PackedLinear {
    /// A layer from a packed 1x1 weight and an optional bias.
    pub fn new(packed: Bsr1xN, bias: Option<Vec<f32>>) -> Result<Self> {
        if packed.kk() != 1 {
            return Err(SparseError::Malformed(format!("a linear layer needs a 1x1 kernel, got {:?}", packed.kernel)));
        }
        Ok(Self(PackedConv2d::new(packed, bias, 1, 0)?))
    }

    /// Packs `w ⊙ mask` (`[C_out, C_in]`) with blocks of `n` outputs.
    pub fn from_dense(w: &Tensor, bias: Option<&Tensor>, n: usize) -> Result<Self> {
        let b = bias.map(|b| b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()).transpose()?;
        Self::new(Bsr1xN::from_dense(w, n)?, b)
    }

    /// The packed weight.
    pub fn packed(&self) -> &Bsr1xN {
        &self.0.packed
    }
}

struct LinearOp<'a>(&'a PackedConv2d);

impl CustomOp1 for LinearOp<'_> {
    fn name(&self) -> &'static str {
        "packed-1xn-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let y = conv1x1_nhwc(&self.0.packed, x, self.0.bias.as_deref()).map_err(sparse_err)?;
        let mut dims = l.shape().dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = self.0.packed.c_out;
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

impl Module for PackedLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let p = &self.0.packed;
        if x.dims().last() != Some(&p.c_in) {
            candle_core::bail!("packed linear expects {} input features, got {:?}", p.c_in, x.dims())
        }
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            return x.contiguous()?.apply_op1_no_bwd(&LinearOp(&self.0));
        }
        if packed_kernel_runs(x) {
            // On the GPU the rows are the pixels of one NCHW sample: [C_in, rows], the 1x1 conv.
            let rows = x.elem_count() / p.c_in;
            let xt = x.reshape((rows, p.c_in))?.t()?.contiguous()?.reshape((1, p.c_in, rows, 1))?;
            let y = self.0.forward(&xt)?.reshape((p.c_out, rows))?.t()?.contiguous()?;
            let mut dims = x.dims().to_vec();
            if let Some(last) = dims.last_mut() {
                *last = p.c_out;
            }
            return y.reshape(dims);
        }
        let w = self.0.dense.squeeze(3)?.squeeze(2)?.to_device(x.device())?.to_dtype(x.dtype())?;
        let y = x.broadcast_matmul(&w.t()?)?;
        match &self.0.bias {
            Some(b) => y.broadcast_add(&Tensor::new(b.as_slice(), x.device())?.to_dtype(x.dtype())?),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sparse::{BlockOrder, block_mask};
    use proptest::prelude::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i + seed) * 7919 % 1009) as f32 / 1009.0 - 0.5) * 2.0).collect()
    }

    fn close(got: &Tensor, want: &Tensor, c_in: usize) -> bool {
        let g: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        let w: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
        got.dims() == want.dims()
            && g.iter().zip(&w).all(|(a, b)| (a - b).abs() <= 1e-5 * (c_in as f32).sqrt() * (1.0 + b.abs()))
    }

    proptest! {
        /// Any square kernel, stride and padding, NCHW and NHWC, equals candle's dense conv on
        /// the masked weight (plus bias).
        #[test]
        fn packed_conv_matches_the_dense_convolution(
            n in prop::sample::select(vec![1usize, 2, 4, 8, 16, 32]),
            groups in 1usize..3,
            c_in in 1usize..12,
            k in prop::sample::select(vec![1usize, 3, 5]),
            stride in 1usize..3,
            padding in 0usize..3,
            side in 5usize..11,
            batch in prop::sample::select(vec![1usize, 2, 8]),
            rate in 0.0f64..0.95,
            seed in 0usize..1000,
        ) {
            let (c_out, dev) = (n * groups, Device::Cpu);
            let w = Tensor::from_vec(values(c_out * c_in * k * k, seed), (c_out, c_in, k, k), &dev).unwrap();
            let wm = (&w * block_mask(&w, n, rate, BlockOrder::Strict).unwrap()).unwrap();
            let b = Tensor::from_vec(values(c_out, seed + 5), c_out, &dev).unwrap();
            let layer = PackedConv2d::from_dense(&wm, Some(&b), n, stride, padding).unwrap();
            let x = Tensor::from_vec(values(batch * c_in * side * side, seed + 1), (batch, c_in, side, side), &dev).unwrap();
            let want = x.conv2d(&wm, padding, stride, 1, 1).unwrap().broadcast_add(&b.reshape((1, c_out, 1, 1)).unwrap()).unwrap();
            prop_assert!(close(&layer.forward(&x).unwrap(), &want, c_in * k * k));
            // Every other device present runs its own kernel against the same reference.
            for d in crate::gpu::test_devices().into_iter().skip(1) {
                let got = layer.forward(&x.to_device(&d).unwrap()).unwrap().to_device(&dev).unwrap();
                prop_assert!(close(&got, &want, c_in * k * k), "{d:?}");
            }
            let xh: Vec<f32> = x.permute((0, 2, 3, 1)).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let (yh, oh, ow) = layer.run_nhwc(&xh, side, side).unwrap();
            let yh = Tensor::from_vec(yh, (batch, oh, ow, c_out), &dev).unwrap().permute((0, 3, 1, 2)).unwrap();
            prop_assert!(close(&yh, &want, c_in * k * k));
        }
    }

    #[test]
    fn packed_linear_matches_the_dense_product() {
        let dev = Device::Cpu;
        let w = Tensor::from_vec(values(16 * 30, 2), (16, 30), &dev).unwrap();
        let wm = (&w * block_mask(&w, 4, 0.6, BlockOrder::Strict).unwrap()).unwrap();
        let b = Tensor::from_vec(values(16, 9), 16, &dev).unwrap();
        let l = PackedLinear::from_dense(&wm, Some(&b), 4).unwrap();
        let x = Tensor::from_vec(values(5 * 30, 1), (5, 30), &dev).unwrap();
        let want = x.matmul(&wm.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
        assert!(close(&l.forward(&x).unwrap(), &want, 30));
        for d in crate::gpu::test_devices().into_iter().skip(1) {
            let x3 = x.reshape((1, 5, 30)).unwrap().to_device(&d).unwrap();
            let got = l.forward(&x3).unwrap().to_device(&dev).unwrap().reshape((5, 16)).unwrap();
            assert!(close(&got, &want, 30), "{d:?}");
        }
        assert!(l.forward(&Tensor::zeros((5, 29), DType::F32, &dev).unwrap()).is_err());
        // f64 input takes the dense path and agrees.
        let got = l.forward(&x.to_dtype(DType::F64).unwrap()).unwrap().to_dtype(DType::F32).unwrap();
        assert!(close(&got, &want, 30));
        // The ops name themselves when handed what their kernels do not take.
        let e = x.to_dtype(DType::F64).unwrap().apply_op1_no_bwd(&LinearOp(&l.0)).unwrap_err().to_string();
        assert!(e.contains("packed-1xn-linear"), "{e}");
        let x4 = x.reshape((5, 30, 1, 1)).unwrap().to_dtype(DType::F64).unwrap();
        let e = x4.apply_op1_no_bwd(&l.0).unwrap_err().to_string();
        assert!(e.contains("packed-1xn-conv2d"), "{e}");
    }

    #[test]
    fn bad_layers_are_errors() {
        let w = Tensor::from_vec(values(8 * 3 * 9, 0), (8, 3, 3, 3), &Device::Cpu).unwrap();
        assert!(PackedConv2d::from_dense(&w, None, 4, 0, 1).is_err(), "stride 0");
        let bias = Tensor::zeros(7, DType::F32, &Device::Cpu).unwrap();
        assert!(PackedConv2d::from_dense(&w, Some(&bias), 4, 1, 1).is_err(), "bias length");
        assert!(PackedLinear::new(Bsr1xN::from_dense(&w, 4).unwrap(), None).is_err(), "3x3 linear");
        let l = PackedConv2d::from_dense(&w, None, 4, 1, 0).unwrap();
        assert!(l.forward(&Tensor::zeros((1, 3, 2, 2), DType::F32, &Device::Cpu).unwrap()).is_err(), "too small");
        assert!(l.forward(&Tensor::zeros((1, 4, 5, 5), DType::F32, &Device::Cpu).unwrap()).is_err(), "channels");
        // Inputs that are not whole samples, on the im2col path (3x3) and the direct 1x1 path.
        let one =
            PackedConv2d::from_dense(&w.narrow(2, 0, 1).unwrap().narrow(3, 0, 1).unwrap(), None, 4, 1, 0).unwrap();
        for layer in [&l, &one] {
            let x = vec![0.5f32; 3 * 5 * 5 + 1];
            assert!(matches!(layer.run_nchw(&x, 5, 5), Err(SparseError::Malformed(_))));
            assert!(matches!(layer.run_nhwc(&x, 5, 5), Err(SparseError::Malformed(_))));
            assert_eq!(layer.run_nchw(&x[1..], 5, 5).unwrap().0.len(), 8 * layer.out_side(5).unwrap().pow(2));
        }
    }
}
