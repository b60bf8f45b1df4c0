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

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

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

/// Element types the kernel runs on.
pub(super) trait Elem:
    Copy + Default + Send + Sync + 'static + std::ops::AddAssign + std::ops::Mul<Output = Self>
{
    const ONE: Self;
}

impl Elem for f32 {
    const ONE: Self = 1.0;
}

impl Elem for f64 {
    const ONE: Self = 1.0;
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

/// The output columns `ox` whose input column `ox s + kx - p` lies inside `0..w`.
fn valid_range(kx: usize, s: usize, p: usize, w: usize, ow: usize) -> (usize, usize) {
    // ox s + kx >= p  and  ox s + kx - p <= w - 1
    let lo = if p > kx { (p - kx).div_ceil(s) } else { 0 };
    let hi = if w + p > kx { ((w - 1 + p - kx) / s + 1).min(ow) } else { 0 };
    (lo.min(hi), hi)
}

/// `cols[(c k + ky) k + kx, oy ow + ox] = x[c, oy s + ky dl - p, ox s + kx dl - p]`, writing only the
/// entries inside the input. The entries outside (the zero padding) sit at the same positions
/// for every sample and channel, so a buffer that starts zeroed and is only ever filled by this
/// function keeps them zero: callers allocate `cols` zeroed once per thread and reuse it.
fn im2col<T: Elem>(x: &[T], d: &Dims, cols: &mut [T]) {
    let (k, s, p, dl) = (d.k, d.geo.stride, d.geo.padding, d.geo.dilation);
    for c in 0..d.cin_g() {
        let plane = &x[c * d.h * d.w..(c + 1) * d.h * d.w];
        for ky in 0..k {
            for kx in 0..k {
                let (lo, hi) = valid_range(kx * dl, s, p, d.w, d.ow);
                if lo >= hi {
                    continue;
                }
                let row = &mut cols[((c * k + ky) * k + kx) * d.ohw()..][..d.ohw()];
                let first = lo * s + kx * dl - p;
                if s == 1 && d.ow == d.w {
                    shifted_rows(plane, d, ky * dl, (lo, hi, first), row);
                    continue;
                }
                for oy in 0..d.oh {
                    let iy = (oy * s + ky * dl) as isize - p as isize;
                    if iy < 0 || iy >= d.h as isize {
                        continue;
                    }
                    let src = &plane[iy as usize * d.w + first..];
                    let out = &mut row[oy * d.ow + lo..oy * d.ow + hi];
                    if s == 1 {
                        for (o, v) in out.iter_mut().zip(src) {
                            *o = *v;
                        }
                    } else {
                        for (o, v) in out.iter_mut().zip(src.iter().step_by(s)) {
                            *o = *v;
                        }
                    }
                }
            }
        }
    }
}

/// One im2col row at stride 1 when output and input rows have the same width (a "same"
/// convolution): output `(oy, ox)` reads input `(oy + ky - p, ox + kx - p)`, a constant shift of
/// the flat index, so the valid output rows are one contiguous copy (instead of a short copy per
/// row); the `p` columns each side that the copy fills from the neighbouring rows are then
/// zeroed again.
fn shifted_rows<T: Elem>(plane: &[T], d: &Dims, ky: usize, (lo, hi, first): (usize, usize, usize), row: &mut [T]) {
    let p = d.geo.padding;
    // Output rows oy with 0 <= oy + ky - p < h.
    let oy_lo = p.saturating_sub(ky);
    let oy_hi = (d.h + p).saturating_sub(ky).min(d.oh);
    if oy_lo >= oy_hi {
        return;
    }
    let (a, b) = (oy_lo * d.ow + lo, (oy_hi - 1) * d.ow + hi);
    let src = (oy_lo + ky - p) * d.w + first;
    row[a..b].copy_from_slice(&plane[src..src + (b - a)]);
    for oy in oy_lo..oy_hi {
        let r = &mut row[oy * d.ow..(oy + 1) * d.ow];
        r[..lo].fill(T::default());
        r[hi..].fill(T::default());
    }
}

/// [`im2col`] of one sample `x: [cin, h, w]` for a `k x k` kernel (groups 1) into a fresh
/// `(cin k k) x (oh ow)` buffer; returns it with `(oh, ow)`. For the packed sparse convolution.
pub(crate) fn im2col_f32(
    x: &[f32],
    cin: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> (Vec<f32>, usize, usize) {
    let oh = (h + 2 * padding - k) / stride + 1;
    let ow = (w + 2 * padding - k) / stride + 1;
    let geo = Conv2dGeometry::new(stride, padding, 1);
    let d = Dims { n: 1, cin, h, w, cout: 1, k, oh, ow, geo };
    let mut cols = vec![0f32; d.kk() * d.ohw()];
    im2col(x, &d, &mut cols);
    (cols, oh, ow)
}

/// The adjoint of [`shifted_rows`]: `plane[shifted] += row` as one contiguous add over the valid
/// output rows, after zeroing the `p` entries each side of every row that fall outside the
/// input (so the add leaves the neighbouring rows' edges unchanged). `row` is scratch.
fn shifted_add<T: Elem>(row: &mut [T], d: &Dims, ky: usize, (lo, hi, first): (usize, usize, usize), plane: &mut [T]) {
    let p = d.geo.padding;
    let oy_lo = p.saturating_sub(ky);
    let oy_hi = (d.h + p).saturating_sub(ky).min(d.oh);
    if oy_lo >= oy_hi {
        return;
    }
    for oy in oy_lo..oy_hi {
        let r = &mut row[oy * d.ow..(oy + 1) * d.ow];
        r[..lo].fill(T::default());
        r[hi..].fill(T::default());
    }
    let (a, b) = (oy_lo * d.ow + lo, (oy_hi - 1) * d.ow + hi);
    let dst = (oy_lo + ky - p) * d.w + first;
    for (o, v) in plane[dst..dst + (b - a)].iter_mut().zip(&row[a..b]) {
        *o += *v;
    }
}

/// The adjoint of [`im2col`]: `dx[c, iy, ix] += cols[...]`. `cols` is scratch (its entries
/// that fall in the padding are zeroed on the way).
fn col2im<T: Elem>(cols: &mut [T], d: &Dims, dx: &mut [T]) {
    let (k, s, p, dl) = (d.k, d.geo.stride, d.geo.padding, d.geo.dilation);
    for c in 0..d.cin_g() {
        let plane = &mut dx[c * d.h * d.w..(c + 1) * d.h * d.w];
        for ky in 0..k {
            for kx in 0..k {
                let (lo, hi) = valid_range(kx * dl, s, p, d.w, d.ow);
                if lo >= hi {
                    continue;
                }
                let row = &mut cols[((c * k + ky) * k + kx) * d.ohw()..][..d.ohw()];
                if s == 1 && d.ow == d.w {
                    shifted_add(row, d, ky * dl, (lo, hi, lo + kx * dl - p), plane);
                    continue;
                }
                for oy in 0..d.oh {
                    let iy = (oy * s + ky * dl) as isize - p as isize;
                    if iy < 0 || iy >= d.h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * d.w..(iy as usize + 1) * d.w];
                    let first = lo * s + kx * dl - p;
                    let src = &row[oy * d.ow + lo..oy * d.ow + hi];
                    if s == 1 {
                        for (o, v) in dst[first..first + hi - lo].iter_mut().zip(src) {
                            *o += *v;
                        }
                    } else {
                        for (o, v) in dst[first..].iter_mut().step_by(s).zip(src) {
                            *o += *v;
                        }
                    }
                }
            }
        }
    }
}

/// `dst (m x n) = [dst +] a (m x k) . b (k x n)`, with explicit row/column strides for a and b.
/// When `m` is below one register tile and `n` is larger, the transposed product
/// `dst^T = b^T a^T` is computed instead (same memory, strides swapped): the microkernels tile
/// the row dimension, so 16 output channels against 1,024 pixels would waste half of each tile.
#[allow(clippy::too_many_arguments)]
fn matmul<T: Elem, D: Dest<T> + ?Sized>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut D,
    acc: bool,
    a: &[T],
    a_rs: usize,
    a_cs: usize,
    b: &[T],
    b_rs: usize,
    b_cs: usize,
    par: gemm::Parallelism,
) {
    const TILE_ROWS: usize = 32;
    let dst = dst.target(acc);
    assert!(dst.1 >= m * n, "matmul: destination holds {} values, the product {m} x {n}", dst.1);
    gemm_call(m, n, k, dst.0, acc, (a, a_rs, a_cs), (b, b_rs, b_cs), m < TILE_ROWS && n > m, par)
}

/// One GEMM per sample: each on one thread (the samples run in parallel).
const SEQ: gemm::Parallelism = gemm::Parallelism::None;

/// Where a GEMM writes: initialised values (which it may accumulate into) or uninitialised ones
/// (which it only overwrites: no zeroing pass for outputs the product fills completely).
trait Dest<T> {
    /// The first element and the length; `acc` says whether the GEMM reads them.
    fn target(&mut self, acc: bool) -> (*mut T, usize);
}

impl<T> Dest<T> for [T] {
    fn target(&mut self, _acc: bool) -> (*mut T, usize) {
        (self.as_mut_ptr(), self.len())
    }
}

impl<T> Dest<T> for [MaybeUninit<T>] {
    fn target(&mut self, acc: bool) -> (*mut T, usize) {
        assert!(!acc, "matmul: cannot accumulate into uninitialised memory");
        (self.as_mut_ptr().cast(), self.len())
    }
}

/// [`crate::cpu::written`] for the kernels below, whose fills are GEMMs without accumulation
/// over the whole output or loops over every element.
fn written<T: Elem>(len: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    // SAFETY: each caller's `fill` covers the buffer (the contract of this module's outputs,
    // checked by the tests against candle on every path).
    unsafe { crate::cpu::written(len, fill) }
}

/// `dst (m x n, row-major) = [dst +] a . b`, as `dst^T = b^T a^T` when `transpose`.
#[allow(clippy::too_many_arguments)]
fn gemm_call<T: Elem>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    acc: bool,
    (a, a_rs, a_cs): (&[T], usize, usize),
    (b, b_rs, b_cs): (&[T], usize, usize),
    transpose: bool,
    par: gemm::Parallelism,
) {
    // SAFETY: dst holds m n values (checked by `matmul`) and the slices cover every index the
    // strides reach: dst m x n row-major, a reaches
    // (m-1) a_rs + (k-1) a_cs, b reaches (k-1) b_rs + (n-1) b_cs, all checked by the callers'
    // shapes; the pointers are not aliased (dst is a distinct mutable slice). The transposed
    // call addresses the same elements.
    unsafe {
        if transpose {
            gemm::gemm(
                n,
                m,
                k,
                dst,
                n as isize,
                1,
                acc,
                b.as_ptr(),
                b_rs as isize,
                b_cs as isize,
                a.as_ptr(),
                a_rs as isize,
                a_cs as isize,
                T::ONE,
                T::ONE,
                false,
                false,
                false,
                par,
            )
        } else {
            gemm::gemm(
                m,
                n,
                k,
                dst,
                1,
                n as isize,
                acc,
                a.as_ptr(),
                a_cs as isize,
                a_rs as isize,
                b.as_ptr(),
                b_cs as isize,
                b_rs as isize,
                T::ONE,
                T::ONE,
                false,
                false,
                false,
                par,
            )
        }
    }
}

/// Depthwise convolutions (one input and one output channel per group) run as direct loops:
/// a GEMM per channel would be a 1 x (k k) by (k k) x (oh ow) product, all call overhead.
mod depthwise {
    use super::{Dims, Elem, valid_range};
    use rayon::prelude::*;

    /// Calls `f(oy, iy, lo, hi, first)` for every output row `oy` whose input row `iy` exists,
    /// with the valid output columns `lo..hi` and the input column `first` of output `lo`.
    fn rows(d: &Dims, ky: usize, kx: usize, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
        let (s, p) = (d.geo.stride, d.geo.padding);
        let (ky, kx) = (ky * d.geo.dilation, kx * d.geo.dilation);
        let (lo, hi) = valid_range(kx, s, p, d.w, d.ow);
        if lo >= hi {
            return;
        }
        let first = lo * s + kx - p;
        for oy in 0..d.oh {
            let iy = (oy * s + ky) as isize - p as isize;
            if iy >= 0 && iy < d.h as isize {
                f(oy, iy as usize, lo, hi, first);
            }
        }
    }

    /// `y[n, c] = sum_{ky, kx} w[c, ky, kx] x[n, c, shifted]`.
    pub(super) fn forward<T: Elem>(x: &[T], w: &[T], d: &Dims) -> Vec<T> {
        let (k, s, hw, ohw) = (d.k, d.geo.stride, d.h * d.w, d.ohw());
        let mut y = vec![T::default(); d.n * d.cout * ohw];
        y.par_chunks_mut(ohw).enumerate().for_each(|(i, yp)| {
            let (xp, wk) = (&x[i * hw..(i + 1) * hw], &w[(i % d.cout) * k * k..][..k * k]);
            for ky in 0..k {
                for kx in 0..k {
                    let wv = wk[ky * k + kx];
                    rows(d, ky, kx, |oy, iy, lo, hi, first| {
                        let out = &mut yp[oy * d.ow + lo..oy * d.ow + hi];
                        let src = &xp[iy * d.w + first..];
                        if s == 1 {
                            // Contiguous: vectorizes.
                            for (o, v) in out.iter_mut().zip(src) {
                                *o += wv * *v;
                            }
                        } else {
                            for (o, v) in out.iter_mut().zip(src.iter().step_by(s)) {
                                *o += wv * *v;
                            }
                        }
                    });
                }
            }
        });
        y
    }

    /// `dx[n, c, shifted] += w[c, ky, kx] dy[n, c]`.
    pub(super) fn input_grad<T: Elem>(gy: &[T], w: &[T], d: &Dims) -> Vec<T> {
        let (k, s, hw, ohw) = (d.k, d.geo.stride, d.h * d.w, d.ohw());
        let mut dx = vec![T::default(); d.n * d.cin * hw];
        dx.par_chunks_mut(hw).enumerate().for_each(|(i, dp)| {
            let (gp, wk) = (&gy[i * ohw..(i + 1) * ohw], &w[(i % d.cout) * k * k..][..k * k]);
            for ky in 0..k {
                for kx in 0..k {
                    let wv = wk[ky * k + kx];
                    rows(d, ky, kx, |oy, iy, lo, hi, first| {
                        let src = &gp[oy * d.ow + lo..oy * d.ow + hi];
                        let dst = &mut dp[iy * d.w + first..];
                        if s == 1 {
                            for (o, g) in dst.iter_mut().zip(src) {
                                *o += wv * *g;
                            }
                        } else {
                            for (o, g) in dst.iter_mut().step_by(s).zip(src) {
                                *o += wv * *g;
                            }
                        }
                    });
                }
            }
        });
        dx
    }

    /// `dw[c, ky, kx] = sum_n sum_o dy[n, c, o] x[n, c, shifted]`.
    pub(super) fn weight_grad<T: Elem>(x: &[T], gy: &[T], d: &Dims) -> Vec<T> {
        let (k, s, hw, ohw) = (d.k, d.geo.stride, d.h * d.w, d.ohw());
        let mut dw = vec![T::default(); d.cout * k * k];
        dw.par_chunks_mut(k * k).enumerate().for_each(|(c, wk)| {
            for n in 0..d.n {
                let i = n * d.cout + c;
                let (xp, gp) = (&x[i * hw..(i + 1) * hw], &gy[i * ohw..(i + 1) * ohw]);
                for ky in 0..k {
                    for kx in 0..k {
                        // Eight independent sums (a single running sum cannot vectorize).
                        let mut acc = [T::default(); 8];
                        rows(d, ky, kx, |oy, iy, lo, hi, first| {
                            let gr = &gp[oy * d.ow + lo..oy * d.ow + hi];
                            let src = &xp[iy * d.w + first..];
                            if s == 1 {
                                let (g8, x8) = (gr.chunks_exact(8), src[..gr.len()].chunks_exact(8));
                                let (gt, xt) = (g8.remainder(), x8.remainder());
                                for (g, v) in g8.zip(x8) {
                                    for l in 0..8 {
                                        acc[l] += g[l] * v[l];
                                    }
                                }
                                for (g, v) in gt.iter().zip(xt) {
                                    acc[0] += *g * *v;
                                }
                            } else {
                                for (g, v) in gr.iter().zip(src.iter().step_by(s)) {
                                    acc[0] += *g * *v;
                                }
                            }
                        });
                        let mut total = T::default();
                        for a in acc {
                            total += a;
                        }
                        wk[ky * k + kx] += total;
                    }
                }
            }
        });
        dw
    }
}

/// Depthwise convolutions that keep small planes' size (stride 1, "same" padding; MobileNetV2's
/// 2 x 2 to 8 x 8 stages) with the whole `C x plane` block of a sample as one flat vector: tap
/// `(ky, kx)` reads the value a constant `shift = (ky dl - p) w + kx dl - p` away, so each tap is
/// one vectorised multiply-add over the block against a per-value weight table that is zero
/// where the tap falls outside its plane. The plane-by-plane kernels spend their time in loop
/// overhead here (four pixels a plane, nine taps). Values a zero weight meets are multiplied,
/// not skipped: an infinite activation would spread NaN to its neighbours' gradients (training
/// has diverged by then; the NaN guard stops it).
mod depthwise_flat {
    use super::{Dims, Elem, per_worker, sum_partials, written};
    use rayon::prelude::*;

    /// Planes up to this many pixels take the flat path. At 16 x 16 (MobileNetV2, batch 64)
    /// its input gradient was faster, its weight gradient slower than the plane kernels'; at
    /// 2 x 2 to 8 x 8 both were faster (the network's step 12 % faster).
    const MAX_PLANE: usize = 64;

    pub(super) fn applies(d: &Dims) -> bool {
        d.depthwise() && d.geo.stride == 1 && d.oh == d.h && d.ow == d.w && d.ohw() <= MAX_PLANE
    }

    /// The taps' flat shifts and their validity per output pixel (`[tap][pixel]`, 1 or 0).
    fn taps<T: Elem>(d: &Dims) -> (Vec<isize>, Vec<T>) {
        let (k, dl, p) = (d.k, d.geo.dilation as isize, d.geo.padding as isize);
        let (h, w) = (d.h as isize, d.w as isize);
        let mut shifts = Vec::with_capacity(k * k);
        let mut valid = Vec::with_capacity(k * k * d.ohw());
        for ky in 0..k as isize {
            for kx in 0..k as isize {
                let (dy, dx) = (ky * dl - p, kx * dl - p);
                shifts.push(dy * w + dx);
                for oy in 0..h {
                    for ox in 0..w {
                        let inside = (0..h).contains(&(oy + dy)) && (0..w).contains(&(ox + dx));
                        valid.push(if inside { T::ONE } else { T::default() });
                    }
                }
            }
        }
        (shifts, valid)
    }

    /// `w_e[tap][c p + o] = w[c, tap] valid[tap][o]`.
    fn weight_table<T: Elem>(w: &[T], d: &Dims, valid: &[T]) -> Vec<T> {
        let (kk, c, p) = (d.k * d.k, d.cin, d.ohw());
        let mut t = Vec::with_capacity(kk * c * p);
        for tap in 0..kk {
            for ch in 0..c {
                let wv = w[ch * kk + tap];
                t.extend(valid[tap * p..(tap + 1) * p].iter().map(|&v| wv * v));
            }
        }
        t
    }

    /// A sample block with `margin` zeros each side.
    fn padded<T: Elem>(block: &[T], margin: usize, buf: &mut [T]) {
        buf[margin..margin + block.len()].copy_from_slice(block);
    }

    fn margin(shifts: &[isize]) -> usize {
        shifts.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0)
    }

    /// `y[j] = sum_tap w_e[tap][j] x[j + shift_tap]`.
    pub(super) fn forward<T: Elem>(x: &[T], w: &[T], d: &Dims) -> Vec<T> {
        let (shifts, valid) = taps::<T>(d);
        let (we, cp, m) = (weight_table(w, d, &valid), d.cin * d.ohw(), margin(&shifts));
        written(d.n * cp, |y| {
            // Per worker: the padded sample and the sums (reused across samples).
            y.par_chunks_mut(cp).enumerate().for_each_init(
                || (vec![T::default(); cp + 2 * m], vec![T::default(); cp]),
                |(buf, acc), (i, yb)| {
                    padded(&x[i * cp..(i + 1) * cp], m, buf);
                    acc.fill(T::default());
                    for (tap, &sh) in shifts.iter().enumerate() {
                        let src = &buf[(m as isize + sh) as usize..][..cp];
                        for ((a, &wv), &v) in acc.iter_mut().zip(&we[tap * cp..(tap + 1) * cp]).zip(src) {
                            *a += wv * v;
                        }
                    }
                    for (o, a) in yb.iter_mut().zip(acc.iter()) {
                        o.write(*a);
                    }
                },
            )
        })
    }

    /// `dx[j + shift_tap] += w_e[tap][j] dy[j]`.
    pub(super) fn input_grad<T: Elem>(gy: &[T], w: &[T], d: &Dims) -> Vec<T> {
        let (shifts, valid) = taps::<T>(d);
        let (we, cp, m) = (weight_table(w, d, &valid), d.cin * d.ohw(), margin(&shifts));
        let mut dx = vec![T::default(); d.n * cp];
        dx.par_chunks_mut(cp).enumerate().for_each_init(
            || vec![T::default(); cp + 2 * m],
            |buf, (i, dxb)| {
                buf.fill(T::default());
                let g = &gy[i * cp..(i + 1) * cp];
                for (tap, &sh) in shifts.iter().enumerate() {
                    let dst = &mut buf[(m as isize + sh) as usize..][..cp];
                    for ((o, &wv), &gv) in dst.iter_mut().zip(&we[tap * cp..(tap + 1) * cp]).zip(g) {
                        *o += wv * gv;
                    }
                }
                dxb.copy_from_slice(&buf[m..m + cp]);
            },
        );
        dx
    }

    /// `dw[c, tap] = sum_n sum_{o in plane c} valid[tap][o] dy[j] x[j + shift_tap]`: per-value
    /// products accumulated over each worker's samples, folded per channel at the end.
    pub(super) fn weight_grad<T: Elem>(x: &[T], gy: &[T], d: &Dims) -> Vec<T> {
        let (shifts, valid) = taps::<T>(d);
        let (kk, cp, p, m) = (d.k * d.k, d.cin * d.ohw(), d.ohw(), margin(&shifts));
        // Validity per value of a sample block: [tap][c p].
        let valid_e: Vec<T> = (0..kk).flat_map(|tap| valid[tap * p..(tap + 1) * p].repeat(d.cin)).collect();
        let partials = per_worker(d.n, kk * cp, vec![T::default(); cp + 2 * m], |acc, buf, i| {
            padded(&x[i * cp..(i + 1) * cp], m, buf);
            let g = &gy[i * cp..(i + 1) * cp];
            for (tap, &sh) in shifts.iter().enumerate() {
                let src = &buf[(m as isize + sh) as usize..][..cp];
                let run = acc[tap * cp..(tap + 1) * cp].iter_mut().zip(&valid_e[tap * cp..(tap + 1) * cp]);
                for (((a, &ok), &gv), &v) in run.zip(g).zip(src) {
                    *a += ok * gv * v;
                }
            }
        });
        let acc = sum_partials(partials, kk * cp);
        let mut dw = vec![T::default(); d.cin * kk];
        for tap in 0..kk {
            for ch in 0..d.cin {
                let mut t = T::default();
                for &v in &acc[tap * cp + ch * p..tap * cp + (ch + 1) * p] {
                    t += v;
                }
                dw[ch * kk + tap] = t;
            }
        }
        dw
    }
}

/// The depthwise forward at stride 1 over a zero-padded copy of each plane: every tap is then one
/// contiguous multiply-add over an output row, with no bounds logic per row (64 x 96 x 32 x 32:
/// 8.3 -> 7.2 ms). The backward passes gained nothing this way (memory-bound either way) and keep
/// the row-range kernels of `depthwise`.
mod depthwise_padded {
    use super::{Dims, Elem};
    use rayon::prelude::*;

    /// The padded plane's `(rows, cols)`.
    fn padded(d: &Dims) -> (usize, usize) {
        (d.h + 2 * d.geo.padding, d.w + 2 * d.geo.padding)
    }

    /// Copies plane `src` into the interior of `buf` (its border stays as it was: zero).
    fn fill<T: Elem>(src: &[T], d: &Dims, buf: &mut [T]) {
        let (p, (_, wp)) = (d.geo.padding, padded(d));
        for (r, row) in src.chunks(d.w).enumerate() {
            buf[(r + p) * wp + p..][..d.w].copy_from_slice(row);
        }
    }

    /// `y[oy, ox] = sum_{ky, kx} w[ky, kx] xpad[oy + ky dl, ox + kx dl]`.
    pub(super) fn forward<T: Elem>(x: &[T], w: &[T], d: &Dims) -> Vec<T> {
        let (k, dl, hw, ohw) = (d.k, d.geo.dilation, d.h * d.w, d.ohw());
        let (hp, wp) = padded(d);
        let mut y = vec![T::default(); d.n * d.cout * ohw];
        y.par_chunks_mut(ohw).enumerate().for_each_init(
            || vec![T::default(); hp * wp],
            |buf, (i, yp)| {
                fill(&x[i * hw..(i + 1) * hw], d, buf);
                let wk = &w[(i % d.cout) * k * k..][..k * k];
                for (oy, out) in yp.chunks_mut(d.ow).enumerate() {
                    for ky in 0..k {
                        let row = &buf[(oy + ky * dl) * wp..];
                        for kx in 0..k {
                            let wv = wk[ky * k + kx];
                            for (o, v) in out.iter_mut().zip(&row[kx * dl..kx * dl + d.ow]) {
                                *o += wv * *v;
                            }
                        }
                    }
                }
            },
        );
        y
    }
}

/// Pointwise convolutions over tiny planes (the last MobileNetV2 stages at 32 x 32 input: 2 x 2
/// pixels) as one GEMM over the whole batch. Per sample the product is `cout x cin` by
/// `cin x (h w)` with `h w = 4`: the GEMM would repack the weight matrix for every sample to
/// produce four columns. With the batch laid out channel-major (`[C, N h w]`, sample planes side by side)
/// the forward is `Y' = W X'`, the input gradient `dX' = W^T dY'` and the weight gradient
/// `dW = dY' X'^T`, each one multi-threaded GEMM.
mod batched {
    use super::{Dims, Elem, matmul, written};
    use rayon::prelude::*;

    /// Planes up to this many pixels take the batched path. Measured on MobileNetV2's layers
    /// (batch 64): 2-4x faster at 2 x 2; at 4 x 4 and 8 x 8 the per-sample kernels (channels-last
    /// weight gradient) were up to 2x faster than the batched GEMMs.
    const MAX_PLANE: usize = 4;

    /// Whether `d` is a pointwise, ungrouped convolution over small planes.
    pub(super) fn applies(d: &Dims) -> bool {
        d.pointwise() && d.geo.groups == 1 && d.ohw() <= MAX_PLANE && d.n > 1
    }

    fn threads() -> gemm::Parallelism {
        gemm::Parallelism::Rayon(rayon::current_num_threads().max(1))
    }

    /// `[N, C, P] -> [C, N P]`.
    fn to_channel_major<T: Elem>(x: &[T], (n, c, p): (usize, usize, usize)) -> Vec<T> {
        written(c * n * p, |out| {
            out.par_chunks_mut(n * p).enumerate().for_each(|(ch, row)| {
                for (s, run) in row.chunks_mut(p).enumerate() {
                    for (o, v) in run.iter_mut().zip(&x[(s * c + ch) * p..][..p]) {
                        o.write(*v);
                    }
                }
            })
        })
    }

    /// `[C, N P] -> [N, C, P]`.
    fn from_channel_major<T: Elem>(y: &[T], (n, c, p): (usize, usize, usize)) -> Vec<T> {
        written(n * c * p, |out| {
            out.par_chunks_mut(c * p).enumerate().for_each(|(s, sample)| {
                for (ch, run) in sample.chunks_mut(p).enumerate() {
                    for (o, v) in run.iter_mut().zip(&y[ch * n * p + s * p..][..p]) {
                        o.write(*v);
                    }
                }
            })
        })
    }

    /// `y = conv(x, w)`: `Y' (cout x NP) = W (cout x cin) . X' (cin x NP)`.
    pub(super) fn forward<T: Elem>(x: &[T], w: &[T], d: &Dims) -> Vec<T> {
        let np = d.n * d.ohw();
        let xt = to_channel_major(x, (d.n, d.cin, d.ohw()));
        let yt = written(d.cout * np, |y| matmul(d.cout, np, d.cin, y, false, w, d.cin, 1, &xt, np, 1, threads()));
        from_channel_major(&yt, (d.n, d.cout, d.ohw()))
    }

    /// `dX' (cin x NP) = W^T (cin x cout) . dY' (cout x NP)`.
    pub(super) fn input_grad<T: Elem>(gy: &[T], w: &[T], d: &Dims) -> Vec<T> {
        let np = d.n * d.ohw();
        let gt = to_channel_major(gy, (d.n, d.cout, d.ohw()));
        let dxt = written(d.cin * np, |dx| matmul(d.cin, np, d.cout, dx, false, w, 1, d.cin, &gt, np, 1, threads()));
        from_channel_major(&dxt, (d.n, d.cin, d.ohw()))
    }

    /// `dW (cout x cin) = dY' (cout x NP) . X'^T (NP x cin)`.
    pub(super) fn weight_grad<T: Elem>(x: &[T], gy: &[T], d: &Dims) -> Vec<T> {
        let np = d.n * d.ohw();
        let (xt, gt) = (to_channel_major(x, (d.n, d.cin, d.ohw())), to_channel_major(gy, (d.n, d.cout, d.ohw())));
        written(d.cout * d.cin, |dw| matmul(d.cout, d.cin, np, dw, false, &gt, np, 1, &xt, 1, np, threads()))
    }
}

/// A zeroed `(k k cin_g) x (oh ow)` column buffer (none for a pointwise convolution, which
/// reads its input in place).
fn column_buffer<T: Elem>(d: &Dims) -> Vec<T> {
    if d.pointwise() { Vec::new() } else { vec![T::default(); d.kk() * d.ohw()] }
}

pub(super) fn forward<T: Elem>(x: &[T], w: &[T], d: &Dims) -> Vec<T> {
    if batched::applies(d) {
        return batched::forward(x, w, d);
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

/// The input gradient of a stride-1 convolution as a forward convolution of `dY`:
/// `dX = conv(dY, W')` with `W'[g, ci, co, ky, kx] = W[g, co, ci, k-1-ky, k-1-kx]` (per group,
/// input and output channels swapped, taps reversed), padding `dl (k - 1) - p`, same dilation.
/// One GEMM of depth `cout_g k k` per sample and group writes `dX` directly, where the general
/// path's depth-`cout_g` GEMM fills a `k k`-times larger column buffer for `col2im` to add up.
/// `None` when the padding exceeds the kernel's span (a negative padding here).
fn input_grad_as_conv<T: Elem>(gy: &[T], w: &[T], d: &Dims) -> Option<Vec<T>> {
    let (k, dl, p) = (d.k, d.geo.dilation, d.geo.padding);
    if d.geo.stride != 1 || p > dl * (k - 1) {
        return None;
    }
    let (g, cin_g, cout_g, kk) = (d.geo.groups, d.cin_g(), d.cout_g(), k * k);
    let mut wt = vec![T::default(); w.len()];
    for gi in 0..g {
        for co in 0..cout_g {
            for ci in 0..cin_g {
                let src = &w[((gi * cout_g + co) * cin_g + ci) * kk..][..kk];
                let dst = &mut wt[((gi * cin_g + ci) * cout_g + co) * kk..][..kk];
                for (t, v) in dst.iter_mut().zip(src.iter().rev()) {
                    *t = *v;
                }
            }
        }
    }
    let geo = Conv2dGeometry { padding: dl * (k - 1) - p, ..d.geo };
    let dt = Dims { n: d.n, cin: d.cout, h: d.oh, w: d.ow, cout: d.cin, k, oh: d.h, ow: d.w, geo };
    Some(forward(gy, &wt, &dt))
}

fn backward_input<T: Elem>(gy: &[T], w: &[T], d: &Dims) -> Vec<T> {
    if batched::applies(d) {
        return batched::input_grad(gy, w, d);
    }
    if depthwise_flat::applies(d) {
        return depthwise_flat::input_grad(gy, w, d);
    }
    if d.depthwise() {
        return depthwise::input_grad(gy, w, d);
    }
    if !d.pointwise()
        && let Some(dx) = input_grad_as_conv(gy, w, d)
    {
        return dx;
    }
    let (cin_g, cout_g, kk, ohw) = (d.cin_g(), d.cout_g(), d.kk(), d.ohw());
    let mut dx = vec![T::default(); d.n * d.cin * d.h * d.w];
    // The GEMM overwrites every entry of `dcols`: one buffer per worker.
    dx.par_chunks_mut(d.cin * d.h * d.w).enumerate().for_each_init(
        || column_buffer(d),
        |dcols, (n, dxn)| {
            for g in 0..d.geo.groups {
                let wg = &w[g * cout_g * kk..(g + 1) * cout_g * kk];
                let gyg = &gy[(n * d.cout + g * cout_g) * ohw..][..cout_g * ohw];
                let dxg = &mut dxn[g * cin_g * d.h * d.w..(g + 1) * cin_g * d.h * d.w];
                if d.pointwise() {
                    // W^T (kk x cout_g) . dY (cout_g x ohw) straight into dX.
                    matmul(kk, ohw, cout_g, dxg, false, wg, 1, kk, gyg, ohw, 1, SEQ);
                } else {
                    matmul(kk, ohw, cout_g, &mut dcols[..], false, wg, 1, kk, gyg, ohw, 1, SEQ);
                    col2im(dcols, d, dxg);
                }
            }
        },
    );
    dx
}

fn backward_weight<T: Elem>(x: &[T], gy: &[T], d: &Dims) -> Vec<T> {
    if batched::applies(d) {
        return batched::weight_grad(x, gy, d);
    }
    if depthwise_flat::applies(d) {
        return depthwise_flat::weight_grad(x, gy, d);
    }
    if d.depthwise() {
        return depthwise::weight_grad(x, gy, d);
    }
    if d.geo.groups == 1 {
        return channels_last::weight_grad(x, gy, d);
    }
    let (cin_g, cout_g, kk, ohw) = (d.cin_g(), d.cout_g(), d.kk(), d.ohw());
    let size = d.cout * kk;
    let partials = per_worker(d.n, size, column_buffer(d), |dw, cols, n| {
        for g in 0..d.geo.groups {
            let xg = &x[(n * d.cin + g * cin_g) * d.h * d.w..][..cin_g * d.h * d.w];
            let cm: &[T] = if d.pointwise() {
                xg
            } else {
                im2col(xg, d, cols);
                cols
            };
            let gyg = &gy[(n * d.cout + g * cout_g) * ohw..][..cout_g * ohw];
            // dW (cout_g x kk) += dY (cout_g x ohw) . cols^T (ohw x kk)
            matmul(
                cout_g,
                kk,
                ohw,
                &mut dw[g * cout_g * kk..(g + 1) * cout_g * kk],
                true,
                gyg,
                ohw,
                1,
                cm,
                1,
                ohw,
                SEQ,
            );
        }
    });
    sum_partials(partials, size)
}

/// Runs `f(partial, scratch, sample)` over the samples in one contiguous chunk per worker, each
/// worker with its own zeroed `size`-value partial result and its own copy of `scratch`.
fn per_worker<T: Elem, S: Clone + Send + Sync>(
    n: usize,
    size: usize,
    scratch: S,
    f: impl Fn(&mut [T], &mut S, usize) + Sync,
) -> Vec<Vec<T>> {
    let threads = rayon::current_num_threads().max(1);
    let chunk = n.div_ceil(threads).max(1);
    (0..n.div_ceil(chunk))
        .into_par_iter()
        .map(|c| {
            let mut part = vec![T::default(); size];
            let mut s = scratch.clone();
            for i in c * chunk..((c + 1) * chunk).min(n) {
                f(&mut part, &mut s, i);
            }
            part
        })
        .collect()
}

fn sum_partials<T: Elem>(partials: Vec<Vec<T>>, size: usize) -> Vec<T> {
    let mut out = vec![T::default(); size];
    for p in partials {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    out
}

/// The weight gradient through channels-last copies (groups 1). `dW = sum_n dY_n . cols_n^T`
/// contracts over the output pixels, the contiguous dimension of both NCHW operands, so the GEMM
/// would have to transpose-pack the whole column matrix; with the input and `dY` transposed to
/// `[pixel, channel]` (small copies) and the patches gathered as `[pixel, (ky, kx, c)]` rows
/// (contiguous runs of `cin` values), both operands are already in the layout the GEMM wants.
mod channels_last {
    use super::{Dims, Elem, SEQ, matmul, per_worker, sum_partials};
    use crate::cpu::transpose;

    /// `cols[(oy ow + ox), (ky k + kx) cin + c] = x[iy, ix, c]` from a channels-last sample,
    /// writing only in-bounds entries (the buffer starts zeroed, as `im2col`'s). Without
    /// dilation the taps `kx` of one kernel row read adjacent pixels: one copy of up to `k cin`
    /// values.
    fn im2row<T: Elem>(xt: &[T], d: &Dims, cols: &mut [T]) {
        let (k, s, p, cin, dl) = (d.k, d.geo.stride, d.geo.padding, d.cin, d.geo.dilation);
        let row = k * k * cin;
        for oy in 0..d.oh {
            for ox in 0..d.ow {
                let out = &mut cols[(oy * d.ow + ox) * row..][..row];
                // Taps kx with 0 <= ox s + kx dl - p < w.
                let x0 = ox * s;
                let kx_lo = p.saturating_sub(x0).div_ceil(dl);
                let kx_hi = if d.w + p > x0 { ((d.w - 1 + p - x0) / dl + 1).min(k) } else { 0 };
                if kx_lo >= kx_hi {
                    continue;
                }
                for ky in 0..k {
                    let iy = (oy * s + ky * dl) as isize - p as isize;
                    if iy < 0 || iy >= d.h as isize {
                        continue;
                    }
                    let line = &xt[iy as usize * d.w * cin..][..d.w * cin];
                    let dst = &mut out[ky * k * cin..][..k * cin];
                    if dl == 1 {
                        let ix = ox * s + kx_lo - p;
                        let len = (kx_hi - kx_lo) * cin;
                        copy_short(&mut dst[kx_lo * cin..][..len], &line[ix * cin..][..len]);
                    } else {
                        for kx in kx_lo..kx_hi {
                            let ix = ox * s + kx * dl - p;
                            copy_short(&mut dst[kx * cin..][..cin], &line[ix * cin..][..cin]);
                        }
                    }
                }
            }
        }
    }

    /// `dst.copy_from_slice(src)` in 16-value pieces the compiler moves in registers: the copies
    /// here are a few dozen values, where a call to `memcpy` costs more than the copy.
    #[inline(always)]
    fn copy_short<T: Elem>(dst: &mut [T], src: &[T]) {
        let (d16, dt) = dst.as_chunks_mut::<16>();
        let (s16, st) = src.as_chunks::<16>();
        for (a, b) in d16.iter_mut().zip(s16) {
            *a = *b;
        }
        for (a, b) in dt.iter_mut().zip(st) {
            *a = *b;
        }
    }

    pub(super) fn weight_grad<T: Elem>(x: &[T], gy: &[T], d: &Dims) -> Vec<T> {
        let (hw, ohw, row) = (d.h * d.w, d.ohw(), d.k * d.k * d.cin);
        let size = d.cout * row;
        // Scratch per worker: the transposed sample, its patch rows, the transposed dY.
        let cols = if d.pointwise() { Vec::new() } else { vec![T::default(); ohw * row] };
        let scratch = (vec![T::default(); hw * d.cin], cols, vec![T::default(); ohw * d.cout]);
        let partials = per_worker(d.n, size, scratch, |dw, (xt, cols, gt), n| {
            transpose(&x[n * d.cin * hw..][..d.cin * hw], d.cin, hw, xt);
            // A pointwise conv's patch rows are the transposed sample itself.
            let c: &[T] = if d.pointwise() {
                xt
            } else {
                im2row(xt, d, cols);
                cols
            };
            transpose(&gy[n * d.cout * ohw..][..d.cout * ohw], d.cout, ohw, gt);
            // dW' (cout x row) += dY_n (cout x ohw, from its transpose) . cols (ohw x row)
            matmul(d.cout, row, ohw, dw, true, gt, 1, d.cout, c, row, 1, SEQ);
        });
        // (co, (ky, kx, c)) -> (co, c, ky, kx).
        let dw = sum_partials(partials, size);
        let kk = d.k * d.k;
        let mut out = vec![T::default(); size];
        for co in 0..d.cout {
            for t in 0..kk {
                for c in 0..d.cin {
                    out[(co * d.cin + c) * kk + t] = dw[co * row + t * d.cin + c];
                }
            }
        }
        out
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
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use proptest::prelude::*;

    fn values(n: usize, seed: u64) -> Vec<f64> {
        (0..n).map(|i| (((i as u64 * 2654435761 + seed * 97) % 2001) as f64 / 1000.0) - 1.0).collect()
    }

    /// Forward against candle's conv2d; both gradients against central differences (exact up to
    /// rounding: the loss `sum(conv(x, w) * r)` is linear in x and in w), in f64. candle's own
    /// conv backward cannot be the reference: it fails with a shape mismatch whenever
    /// `h + 2p - k` is not a multiple of the stride.
    fn check(n: usize, cin: usize, cout: usize, h: usize, w: usize, k: usize, geo: Conv2dGeometry) {
        let dev = Device::Cpu;
        let xv = values(n * cin * h * w, 1);
        let wv = values(cout * cin / geo.groups * k * k, 2);
        let (xs, ws) = ((n, cin, h, w), (cout, cin / geo.groups, k, k));
        let x = Var::from_vec(xv.clone(), xs, &dev).expect("x");
        let wt = Var::from_vec(wv.clone(), ws, &dev).expect("w");
        let ours = conv2d(x.as_tensor(), wt.as_tensor(), geo).expect("ours");
        let theirs =
            x.as_tensor().conv2d(wt.as_tensor(), geo.padding, geo.stride, geo.dilation, geo.groups).expect("candle");
        assert_eq!(ours.dims(), theirs.dims());
        let d = (&ours - &theirs).expect("d").abs().expect("a").max_all().expect("m").to_scalar::<f64>().expect("s");
        assert!(d < 1e-10, "forward differs by {d}");
        let r = Tensor::from_vec(values(ours.elem_count(), 3), ours.shape(), &dev).expect("r");
        let loss = |xv: &[f64], wv: &[f64]| -> f64 {
            let x = Tensor::from_vec(xv.to_vec(), xs, &dev).expect("x");
            let w = Tensor::from_vec(wv.to_vec(), ws, &dev).expect("w");
            (conv2d(&x, &w, geo).expect("c") * &r).expect("m").sum_all().expect("s").to_scalar::<f64>().expect("v")
        };
        let g = (ours * &r).expect("m").sum_all().expect("s").backward().expect("backward");
        let gx = g.get(x.as_tensor()).expect("dx").flatten_all().expect("f").to_vec1::<f64>().expect("v");
        let gw = g.get(wt.as_tensor()).expect("dw").flatten_all().expect("f").to_vec1::<f64>().expect("v");
        for i in 0..xv.len() {
            let (mut a, mut b) = (xv.clone(), xv.clone());
            a[i] += 0.5;
            b[i] -= 0.5;
            let fd = loss(&a, &wv) - loss(&b, &wv);
            assert!((fd - gx[i]).abs() < 1e-9, "dx[{i}]: {} vs {fd}", gx[i]);
        }
        for i in 0..wv.len() {
            let (mut a, mut b) = (wv.clone(), wv.clone());
            a[i] += 0.5;
            b[i] -= 0.5;
            let fd = loss(&xv, &a) - loss(&xv, &b);
            assert!((fd - gw[i]).abs() < 1e-9, "dw[{i}]: {} vs {fd}", gw[i]);
        }
    }

    #[test]
    fn matches_candle_on_the_zoo_shapes() {
        let g = Conv2dGeometry::new;
        check(2, 3, 8, 9, 9, 3, g(1, 1, 1));
        check(2, 8, 16, 9, 7, 3, g(2, 1, 1));
        check(3, 8, 8, 6, 6, 3, g(1, 1, 8)); // depthwise
        check(2, 6, 6, 7, 9, 3, g(2, 1, 6)); // strided depthwise, ragged
        check(2, 4, 4, 5, 5, 5, g(1, 2, 4)); // 5x5 depthwise
        check(2, 8, 12, 5, 5, 1, g(1, 0, 1)); // pointwise
        check(2, 8, 12, 7, 7, 1, g(2, 0, 1)); // strided projection
        check(1, 2, 3, 11, 13, 7, g(2, 3, 1)); // ImageNet stem
        check(2, 4, 6, 10, 10, 5, g(5, 0, 2)); // patch embedding-like, grouped
        let dilated = |s, p, gr| Conv2dGeometry { dilation: 2, ..g(s, p, gr) };
        check(2, 3, 5, 9, 8, 3, dilated(1, 2, 1)); // atrous, "same"
        check(2, 4, 4, 9, 9, 3, dilated(2, 1, 4)); // strided dilated depthwise
        check(1, 4, 6, 11, 10, 5, dilated(2, 3, 2)); // grouped, ragged
    }

    /// Stride-1 "same" convolutions (output rows as wide as the input's) take the shifted-plane
    /// im2col and col2im, depthwise ones the flat kernels: every kernel size and dilation,
    /// narrow and wide planes, groups.
    #[test]
    fn same_convolutions_take_the_shifted_copies() {
        let g = Conv2dGeometry::new;
        let dilated = |p, gr| Conv2dGeometry { dilation: 2, ..g(1, p, gr) };
        for (h, w) in [(1, 1), (2, 7), (7, 2), (9, 5), (4, 12)] {
            check(2, 3, 4, h, w, 3, g(1, 1, 1));
            check(1, 2, 3, h, w, 5, g(1, 2, 1));
            check(1, 2, 2, h, w, 7, g(1, 3, 1));
            check(2, 4, 6, h, w, 3, g(1, 1, 2));
            check(1, 3, 2, h, w, 3, dilated(2, 1));
            // Depthwise: the flat kernels (planes up to 64 pixels).
            check(2, 6, 6, h, w, 3, g(1, 1, 6));
            check(3, 4, 4, h, w, 5, g(1, 2, 4));
            check(2, 4, 4, h, w, 3, dilated(2, 4));
        }
    }

    /// Pointwise convolutions over planes of at most four pixels run as one GEMM over the batch
    /// (`batched`); a batch of one keeps the per-sample path.
    #[test]
    fn small_plane_pointwise_convolutions_match() {
        let g = Conv2dGeometry::new;
        for (n, cin, cout, h, w) in
            [(3, 5, 7, 2, 2), (4, 16, 9, 1, 1), (2, 3, 4, 1, 3), (5, 8, 8, 2, 1), (1, 6, 5, 2, 2)]
        {
            let d = Dims { n, cin, h, w, cout, k: 1, oh: h, ow: w, geo: g(1, 0, 1) };
            assert_eq!(batched::applies(&d), n > 1);
            check(n, cin, cout, h, w, 1, g(1, 0, 1));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn matches_candle_on_random_shapes(
            n in 1usize..3, gi in 1usize..3, cin_g in 1usize..4, cout_g in 1usize..4,
            h in 1usize..9, w in 1usize..9, k in prop::sample::select(vec![1usize, 2, 3, 5]),
            stride in 1usize..4, padding in 0usize..3,
        ) {
            prop_assume!(h + 2 * padding >= k && w + 2 * padding >= k);
            check(n, cin_g * gi, cout_g * gi, h, w, k, Conv2dGeometry::new(stride, padding, gi));
        }
    }

    /// `(x, w, dy)` in f64 and the op's `(y, dx, dw)` for the loss `sum(conv(x, w) dy)`, in `dt`.
    fn run(
        x: &[f64],
        w: &[f64],
        r: &[f64],
        xs: (usize, usize, usize, usize),
        ws: (usize, usize, usize, usize),
        geo: Conv2dGeometry,
        dt: candle_core::DType,
    ) -> (Tensor, Vec<f64>, Vec<f64>) {
        let dev = Device::Cpu;
        let xv = Var::from_tensor(&Tensor::from_vec(x.to_vec(), xs, &dev).expect("x").to_dtype(dt).expect("dt"))
            .expect("var");
        let wv = Var::from_tensor(&Tensor::from_vec(w.to_vec(), ws, &dev).expect("w").to_dtype(dt).expect("dt"))
            .expect("var");
        let y = conv2d(xv.as_tensor(), wv.as_tensor(), geo).expect("conv");
        let rt = Tensor::from_vec(r.to_vec(), y.shape(), &dev).expect("r").to_dtype(dt).expect("dt");
        let g = (&y * rt).expect("m").sum_all().expect("s").backward().expect("backward");
        let flat = |t: &Tensor| {
            t.to_dtype(candle_core::DType::F64).expect("f64").flatten_all().expect("f").to_vec1::<f64>().expect("v")
        };
        (y, flat(g.get(xv.as_tensor()).expect("dx")), flat(g.get(wv.as_tensor()).expect("dw")))
    }

    fn max_abs(v: &[f64]) -> f64 {
        v.iter().fold(1.0f64, |m, x| m.max(x.abs()))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
        /// The issue's ranges: batch 1-16, channels 1-64, kernels 1/3/5/7, stride 1/2, padding
        /// 0-3, dilation 1/2, groups 1, 2 and depthwise, odd sizes. f32 forward against candle's
        /// within 1e-4 of the largest value; f64 gradients exact along a random direction (the
        /// loss is linear in x and in w); f32 gradients within 1e-4 of the f64 ones.
        #[test]
        fn matches_candle_on_the_issue_ranges(
            n in 1usize..17, kind in 0usize..3, c1 in 1usize..33, c2 in 1usize..33,
            h in 1usize..20, w in 1usize..20, k in prop::sample::select(vec![1usize, 3, 5, 7]),
            stride in 1usize..3, padding in 0usize..4, dilation in 1usize..3, seed in 0u64..1000,
        ) {
            let (cin, cout, groups) = match kind {
                // Odd channel counts too.
                0 => (2 * c1 - (seed % 2) as usize, 2 * c2 - (seed / 2 % 2) as usize, 1),
                1 => (2 * c1, 2 * c2, 2),
                _ => (2 * c1, 2 * c1, 2 * c1),
            };
            let span = dilation * (k - 1) + 1;
            prop_assume!(h + 2 * padding >= span && w + 2 * padding >= span);
            let geo = Conv2dGeometry { dilation, ..Conv2dGeometry::new(stride, padding, groups) };
            let (xs, ws) = ((n, cin, h, w), (cout, cin / groups, k, k));
            let x = values(n * cin * h * w, seed);
            let wt = values(cout * cin / groups * k * k, seed + 1);
            let (oh, ow) = ((h + 2 * padding - span) / stride + 1, (w + 2 * padding - span) / stride + 1);
            let r = values(n * cout * oh * ow, seed + 2);
            // f32 forward against candle's.
            let dev = Device::Cpu;
            let x32 = Tensor::from_vec(x.clone(), xs, &dev).unwrap().to_dtype(candle_core::DType::F32).unwrap();
            let w32 = Tensor::from_vec(wt.clone(), ws, &dev).unwrap().to_dtype(candle_core::DType::F32).unwrap();
            let theirs = x32.conv2d(&w32, padding, stride, dilation, groups).unwrap();
            let (y32, dx32, dw32) = run(&x, &wt, &r, xs, ws, geo, candle_core::DType::F32);
            prop_assert_eq!(y32.dims(), theirs.dims());
            let flat = |t: &Tensor| t.to_dtype(candle_core::DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let (a, b) = (flat(&y32), flat(&theirs));
            let scale = max_abs(&b);
            for (u, v) in a.iter().zip(&b) {
                prop_assert!((u - v).abs() <= 1e-4 * scale, "forward {} vs {}", u, v);
            }
            // f64 gradients along a random direction.
            let (_, dx, dw) = run(&x, &wt, &r, xs, ws, geo, candle_core::DType::F64);
            let loss = |xv: &[f64], wv: &[f64]| -> f64 {
                let y = conv2d(&Tensor::from_vec(xv.to_vec(), xs, &dev).unwrap(), &Tensor::from_vec(wv.to_vec(), ws, &dev).unwrap(), geo).unwrap();
                (y * Tensor::from_vec(r.clone(), (n, cout, oh, ow), &dev).unwrap()).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
            };
            let vx = values(x.len(), seed + 3);
            let vw = values(wt.len(), seed + 4);
            let plus = |a: &[f64], v: &[f64], sgn: f64| a.iter().zip(v).map(|(p, q)| p + sgn * q).collect::<Vec<_>>();
            let fx = (loss(&plus(&x, &vx, 1.0), &wt) - loss(&plus(&x, &vx, -1.0), &wt)) / 2.0;
            let gx: f64 = dx.iter().zip(&vx).map(|(g, v)| g * v).sum();
            prop_assert!((fx - gx).abs() <= 1e-9 * (1.0 + fx.abs()), "dx along v: {} vs {}", gx, fx);
            let fw = (loss(&x, &plus(&wt, &vw, 1.0)) - loss(&x, &plus(&wt, &vw, -1.0))) / 2.0;
            let gw: f64 = dw.iter().zip(&vw).map(|(g, v)| g * v).sum();
            prop_assert!((fw - gw).abs() <= 1e-9 * (1.0 + fw.abs()), "dw along v: {} vs {}", gw, fw);
            // f32 gradients against the f64 ones.
            for (g32, g64) in [(&dx32, &dx), (&dw32, &dw)] {
                let scale = max_abs(g64);
                for (u, v) in g32.iter().zip(g64.iter()) {
                    prop_assert!((u - v).abs() <= 1e-4 * scale, "gradient {} vs {}", u, v);
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = Tensor::zeros((1, 3, 4, 4), DType::F32, &Device::Cpu).expect("x");
        let w = Tensor::zeros((4, 2, 3, 3), DType::F32, &Device::Cpu).expect("w");
        assert!(conv2d(&x, &w, Conv2dGeometry::new(1, 1, 1)).is_err());
        assert!(conv2d(&x, &w, Conv2dGeometry::new(0, 1, 1)).is_err());
        assert!(conv2d(&x, &w, Conv2dGeometry { dilation: 0, ..Conv2dGeometry::new(1, 1, 1) }).is_err());
    }
}
