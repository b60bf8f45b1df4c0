//! 2-D convolution on the CPU as im2col + one GEMM per sample and group, with a backward pass.
//!
//! candle 0.11's CPU convolution runs its forward on small tiles and its input gradient
//! (`conv_transpose2d`) as a plain loop, about 7x and 12x slower than PyTorch here. This op
//! computes, per sample `n` and group `g` (all matrices row-major):
//! - forward: `Y[n,g] = W[g] . im2col(X[n,g])`, `W[g]: [cout_g, cin_g k k]`, cols `[cin_g k k, oh ow]`;
//! - input gradient: `dX[n,g] = col2im(W[g]^T . dY[n,g])`, at stride 1 the forward convolution
//!   of `dY` with swapped, reversed taps;
//! - weight gradient: `dW[g] = sum_n dY[n,g] . im2col(X[n,g])^T` (channels-last operands).
//!
//! Samples run in parallel on the rayon pool, each with a single-threaded GEMM (the `gemm` crate,
//! the one candle uses). Two shapes that a GEMM per sample serves badly have their own kernels:
//! pointwise convolutions over planes of at most 4 pixels (one GEMM over the batch) and depthwise
//! ones (direct loops; flat over whole samples for small "same" planes). Other devices and dtypes
//! fall back to candle's `conv2d`.

mod backward;
mod channels_last;
mod depthwise;
mod depthwise_flat;
mod depthwise_padded;
mod gemm;
mod im2col;
mod pointwise;

use super::scalar::Scalar;
use backward::{backward_input, backward_weight, per_worker, sum_partials};
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use gemm::{SEQ, matmul, written};
pub(crate) use im2col::im2col_f32;
use im2col::{col2im, im2col, valid_range};
use rayon::prelude::*;

/// Stride, padding, dilation and groups of a convolution (square kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeometry {
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Channel groups.
    pub groups: usize,
    /// Spacing of the kernel taps (1: a plain convolution).
    pub dilation: usize,
}

impl Conv2dGeometry {
    /// A convolution with `stride`, `padding` and `groups`, dilation 1.
    pub fn new(stride: usize, padding: usize, groups: usize) -> Self {
        Self { stride, padding, groups, dilation: 1 }
    }
}

/// Shapes of one convolution call.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dims {
    pub(super) n: usize,
    pub(super) cin: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) cout: usize,
    pub(super) k: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
    pub(super) geo: Conv2dGeometry,
}

impl std::fmt::Display for Dims {
    /// `cin -> cout, h x w, k, stride, groups (, dilation)`, as the op profile names shapes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.geo;
        write!(f, "{}->{} {}x{} k{} s{} g{}", self.cin, self.cout, self.h, self.w, self.k, g.stride, g.groups)?;
        if g.dilation > 1 { write!(f, " d{}", g.dilation) } else { Ok(()) }
    }
}

impl Dims {
    pub(super) fn cin_g(&self) -> usize {
        self.cin / self.geo.groups
    }
    fn cout_g(&self) -> usize {
        self.cout / self.geo.groups
    }
    pub(super) fn kk(&self) -> usize {
        self.cin_g() * self.k * self.k
    }
    fn ohw(&self) -> usize {
        self.oh * self.ow
    }
    /// One input and one output channel per group.
    fn depthwise(&self) -> bool {
        self.cin_g() == 1 && self.cout_g() == 1 && self.geo.groups > 1
    }
    /// A 1x1, stride-1, unpadded conv reads its input directly as the column matrix.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.geo.stride == 1 && self.geo.padding == 0
    }
}

/// A zeroed `(k k cin_g) x (oh ow)` column buffer (none for a pointwise convolution, which
/// reads its input in place).
fn column_buffer<T: Scalar>(d: &Dims) -> Vec<T> {
    if d.pointwise() { Vec::new() } else { vec![T::default(); d.kk() * d.ohw()] }
}

pub(super) fn forward<T: Scalar>(x: &[T], w: &[T], d: &Dims) -> Vec<T> {
    if pointwise::applies(d) {
        return pointwise::forward(x, w, d);
    }
    if depthwise_flat::applies(d) {
        return depthwise_flat::forward(x, w, d);
    }
    if d.depthwise() && d.geo.stride == 1 {
        return depthwise_padded::forward(x, w, d);
    }
    if d.depthwise() {
        return depthwise::forward(x, w, d);
    }
    let (cin_g, cout_g, kk, ohw) = (d.cin_g(), d.cout_g(), d.kk(), d.ohw());
    // The GEMMs overwrite every output: no zeroing. One zeroed column buffer per worker, reused
    // across samples (see `im2col`).
    // SAFETY: the per-sample GEMMs (no accumulation) write every output value.
    unsafe {
        written(d.n * d.cout * ohw, |y| {
            y.par_chunks_mut(d.cout * ohw).enumerate().for_each_init(
                || column_buffer(d),
                |cols, (n, yn)| {
                    for g in 0..d.geo.groups {
                        let xg = &x[(n * d.cin + g * cin_g) * d.h * d.w..][..cin_g * d.h * d.w];
                        let c: &[T] = if d.pointwise() {
                            xg
                        } else {
                            im2col(xg, d, cols);
                            cols
                        };
                        let wg = &w[g * cout_g * kk..(g + 1) * cout_g * kk];
                        let yg = &mut yn[g * cout_g * ohw..(g + 1) * cout_g * ohw];
                        matmul(cout_g, ohw, kk, yg, false, wg, kk, 1, c, ohw, 1, SEQ);
                    }
                },
            )
        })
    }
}

fn slice<'a, T>(v: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("conv2d: operands must be contiguous"),
    }
}

/// The forward op: `(x, w) -> y`.
#[derive(Debug, Clone, Copy)]
struct Conv(Dims);

/// `(dy, w) -> dx`.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConvInputGrad(pub(super) Dims);

/// `(x, dy) -> dw`.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConvWeightGrad(pub(super) Dims);

macro_rules! dispatch {
    ($s1:expr, $l1:expr, $s2:expr, $l2:expr, $f:expr, $name:expr) => {
        match ($s1, $s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32($f(slice(a, $l1)?, slice(b, $l2)?)),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64($f(slice(a, $l1)?, slice(b, $l2)?)),
            _ => candle_core::bail!("{}: only f32 and f64 are supported", $name),
        }
    };
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "compress-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let _span = super::profile::span(|| format!("{} {}", self.name(), self.0));
        let d = self.0;
        let out = dispatch!(s1, l1, s2, l2, |x, w| forward(x, w, &d), self.name());
        Ok((out, Shape::from((d.n, d.cout, d.oh, d.ow))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gy = gy.contiguous()?;
        // No input gradient for an input that needs none (the data batch).
        let dx = if x.track_op() { Some(gy.apply_op2_no_bwd(w, &ConvInputGrad(self.0))?) } else { None };
        let dw = if w.track_op() { Some(x.apply_op2_no_bwd(&gy, &ConvWeightGrad(self.0))?) } else { None };
        Ok((dx, dw))
    }
}

impl CustomOp2 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "compress-conv2d-input-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let _span = super::profile::span(|| format!("{} {}", self.name(), self.0));
        let d = self.0;
        let out = dispatch!(s1, l1, s2, l2, |gy, w| backward_input(gy, w, &d), self.name());
        Ok((out, Shape::from((d.n, d.cin, d.h, d.w))))
    }
}

impl CustomOp2 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "compress-conv2d-weight-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let _span = super::profile::span(|| format!("{} {}", self.name(), self.0));
        let d = self.0;
        let out = dispatch!(s1, l1, s2, l2, |x, gy| backward_weight(x, gy, &d), self.name());
        Ok((out, Shape::from((d.cout, d.cin_g(), d.k, d.k))))
    }
}

/// Convolution of NCHW `x` with `w: [cout, cin / groups, k, k]` (no bias): the im2col + GEMM op
/// on the CPU for f32/f64 and square kernels, candle's `conv2d` elsewhere.
pub fn conv2d(x: &Tensor, w: &Tensor, geo: Conv2dGeometry) -> Result<Tensor> {
    match plan(x, w, geo)? {
        Some(d) => x.contiguous()?.apply_op2(&w.contiguous()?, Conv(d)),
        None => x.conv2d(w, geo.padding, geo.stride, geo.dilation, geo.groups),
    }
}

/// Checks the shapes of a convolution and returns its dimensions when the toolkit's kernels run
/// it (CPU, f32 / f64, square kernel); `None` where candle's `conv2d` does.
pub(super) fn plan(x: &Tensor, w: &Tensor, geo: Conv2dGeometry) -> Result<Option<Dims>> {
    let (n, cin, h, wd) = x.dims4()?;
    let (cout, cin_g, kh, kw) = w.dims4()?;
    if geo.groups == 0 || geo.stride == 0 || cin != cin_g * geo.groups || !cout.is_multiple_of(geo.groups) {
        candle_core::bail!("conv2d: input {:?} and weight {:?} do not match groups {}", x.dims(), w.dims(), geo.groups)
    }
    if geo.dilation == 0 {
        candle_core::bail!("conv2d: dilation must be at least 1")
    }
    let fast = !super::candle_only()
        && x.device().is_cpu()
        && kh == kw
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.dtype() == w.dtype();
    // The span of the dilated kernel.
    let (sh, sw) = (geo.dilation * (kh - 1) + 1, geo.dilation * (kw - 1) + 1);
    if !fast || h + 2 * geo.padding < sh || wd + 2 * geo.padding < sw {
        return Ok(None);
    }
    let oh = (h + 2 * geo.padding - sh) / geo.stride + 1;
    let ow = (wd + 2 * geo.padding - sw) / geo.stride + 1;
    Ok(Some(Dims { n, cin, h, w: wd, cout, k: kh, oh, ow, geo }))
}

#[cfg(test)]
mod tests;
