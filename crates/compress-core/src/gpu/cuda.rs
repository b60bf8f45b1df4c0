//! Running the kernels of `kernels/` on candle's CUDA device: the PTX `build.rs` compiled, loaded
//! once per device as a custom module, launched with the geometry of [`super::launch`].

use super::launch::{self, Launch};
use crate::sparse::bsr::Bsr1xN;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
use candle_core::{Layout, Result};

const ONEXN_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/onexn.ptx"));
const QUANT_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fake_quant.ptx"));

fn config(l: Launch) -> LaunchConfig {
    LaunchConfig { grid_dim: l.grid, block_dim: l.block, shared_mem_bytes: 0 }
}

fn geometry(l: std::result::Result<Launch, launch::LaunchError>) -> Result<LaunchConfig> {
    l.map(config).map_err(candle_core::Error::wrap)
}

/// The contiguous f32 values of an input.
pub(crate) fn f32_input<'a>(s: &'a CudaStorage, l: &Layout, op: &str) -> Result<CudaView<'a, f32>> {
    let Some((a, b)) = l.contiguous_offsets() else { candle_core::bail!("{op}: expected a contiguous input") };
    Ok(s.as_cuda_slice::<f32>()?.slice(a..b))
}

fn u32_arg(v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("{v} exceeds a kernel's 32-bit argument")))
}

/// A packed 1xN weight (and bias) copied to one device.
pub(crate) struct PackedOnDevice {
    device: CudaDevice,
    indptr: CudaSlice<u32>,
    indices: CudaSlice<u32>,
    data: CudaSlice<f32>,
    bias: Option<CudaSlice<f32>>,
}

impl std::fmt::Debug for PackedOnDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedOnDevice").field("device", &self.device).finish_non_exhaustive()
    }
}

impl PackedOnDevice {
    /// Copies `w` and `bias` to `device`.
    pub(crate) fn new(w: &Bsr1xN, bias: Option<&[f32]>, device: &CudaDevice) -> Result<Self> {
        Ok(Self {
            device: device.clone(),
            indptr: device.clone_htod(&w.indptr)?,
            indices: device.clone_htod(&w.indices)?,
            data: device.clone_htod(&w.data)?,
            bias: bias.map(|b| device.clone_htod(b)).transpose()?,
        })
    }

    /// Whether these buffers live on `device`.
    pub(crate) fn on(&self, device: &CudaDevice) -> bool {
        self.device.id() == device.id()
    }
}

/// `y = W x (+ bias)` for NCHW `x` (`batch x C_in x pixels`, contiguous) on the GPU:
/// `batch x C_out x pixels`.
pub(crate) fn conv1x1_nchw(
    w: &Bsr1xN,
    on: &PackedOnDevice,
    x: &CudaView<'_, f32>,
    batch: usize,
    pixels: usize,
) -> Result<CudaSlice<f32>> {
    let dev = &on.device;
    let cfg = geometry(launch::onexn(batch, w.c_in, w.c_out, w.n, pixels))?;
    let entry = launch::onexn_entry(w.n);
    let func = dev.get_or_load_custom_func(entry, "compress_onexn", ONEXN_PTX)?;
    // SAFETY: every output is written by the kernel (one thread per (pixel, group, sample)).
    let y = unsafe { dev.alloc::<f32>(batch * w.c_out * pixels)? };
    let (c_in, c_out, px, n) = (u32_arg(w.c_in)?, u32_arg(w.c_out)?, u32_arg(pixels)?, u32_arg(w.n)?);
    let null = 0u64;
    let mut b = func.builder();
    b.arg(x).arg(&on.indptr).arg(&on.indices).arg(&on.data);
    match &on.bias {
        Some(bias) => b.arg(bias),
        None => b.arg(&null),
    };
    b.arg(&y).arg(&c_in).arg(&c_out).arg(&px);
    if entry == "onexn_nchw_any" {
        b.arg(&n);
    }
    // SAFETY: the argument list matches the kernel's signature in kernels/onexn.cu.
    unsafe { b.launch(cfg) }.w()?;
    Ok(y)
}

/// NCHW im2col of `x` (`batch x C_in x h x w`): `batch x C_in k k x oh ow`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn im2col_nchw(
    dev: &CudaDevice,
    x: &CudaView<'_, f32>,
    (batch, c_in, h, w): (usize, usize, usize, usize),
    k: usize,
    stride: usize,
    pad: usize,
    (oh, ow): (usize, usize),
) -> Result<CudaSlice<f32>> {
    let cfg = geometry(launch::im2col(batch, c_in, k, oh * ow))?;
    let func = dev.get_or_load_custom_func("im2col_nchw", "compress_onexn", ONEXN_PTX)?;
    // SAFETY: every column entry is written (0 outside the image).
    let cols = unsafe { dev.alloc::<f32>(batch * c_in * k * k * oh * ow)? };
    let (c_in, h, w, k) = (u32_arg(c_in)?, u32_arg(h)?, u32_arg(w)?, u32_arg(k)?);
    let (stride, pad, oh, ow) = (u32_arg(stride)?, u32_arg(pad)?, u32_arg(oh)?, u32_arg(ow)?);
    let mut b = func.builder();
    b.arg(x).arg(&cols).arg(&c_in).arg(&h).arg(&w).arg(&k).arg(&stride).arg(&pad).arg(&oh).arg(&ow);
    // SAFETY: the argument list matches `im2col_nchw` in kernels/onexn.cu.
    unsafe { b.launch(cfg) }.w()?;
    Ok(cols)
}

/// The affine fake quantizer's forward (`kernels/fake_quant.cu`): `x` contiguous, bounds one
/// per group of [`launch::bound_grouping`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn affine_fake_quant(
    dev: &CudaDevice,
    x: &CudaView<'_, f32>,
    lower: &CudaView<'_, f32>,
    upper: &CudaView<'_, f32>,
    (groups, inner): (usize, usize),
    bits: u32,
    clip_codes: bool,
) -> Result<CudaSlice<f32>> {
    let len = x.len();
    let cfg = geometry(launch::elementwise(len))?;
    let func = dev.get_or_load_custom_func("affine_fake_quant_f32", "compress_quant", QUANT_PTX)?;
    // SAFETY: one thread writes each output.
    let q = unsafe { dev.alloc::<f32>(len)? };
    let (len, groups, inner, codes) = (u32_arg(len)?, u32_arg(groups)?, u32_arg(inner)?, u32::from(clip_codes));
    let mut b = func.builder();
    b.arg(x).arg(lower).arg(upper).arg(&q).arg(&len).arg(&groups).arg(&inner).arg(&bits).arg(&codes);
    // SAFETY: the argument list matches `affine_fake_quant_f32`.
    unsafe { b.launch(cfg) }.w()?;
    Ok(q)
}

/// The symmetric fake quantizer's forward: `up = 2^(b-1) - 1`, `down = 1 / up` (f32, as the CPU op).
pub(crate) fn symmetric_fake_quant(
    dev: &CudaDevice,
    x: &CudaView<'_, f32>,
    alpha: &CudaView<'_, f32>,
    up: f32,
    down: f32,
) -> Result<CudaSlice<f32>> {
    let len = x.len();
    let cfg = geometry(launch::elementwise(len))?;
    let func = dev.get_or_load_custom_func("symmetric_fake_quant_f32", "compress_quant", QUANT_PTX)?;
    // SAFETY: one thread writes each output.
    let q = unsafe { dev.alloc::<f32>(len)? };
    let len = u32_arg(len)?;
    let mut b = func.builder();
    b.arg(x).arg(alpha).arg(&q).arg(&len).arg(&up).arg(&down);
    // SAFETY: the argument list matches `symmetric_fake_quant_f32`.
    unsafe { b.launch(cfg) }.w()?;
    Ok(q)
}
