//! The weight gradient through channels-last copies (groups 1). `dW = sum_n dY_n . cols_n^T`
//! contracts over the output pixels, the contiguous dimension of both NCHW operands, so the GEMM
//! would have to transpose-pack the whole column matrix; with the input and `dY` transposed to
//! `[pixel, channel]` (small copies) and the patches gathered as `[pixel, (ky, kx, c)]` rows
//! (contiguous runs of `cin` values), both operands are already in the layout the GEMM wants.
use super::{Dims, SEQ, Scalar, matmul, per_worker, sum_partials};
use crate::cpu::transpose;

/// `cols[(oy ow + ox), (ky k + kx) cin + c] = x[iy, ix, c]` from a channels-last sample,
/// writing only in-bounds entries (the buffer starts zeroed, as `im2col`'s). Without
/// dilation the taps `kx` of one kernel row read adjacent pixels: one copy of up to `k cin`
/// values.
fn im2row<T: Scalar>(xt: &[T], d: &Dims, cols: &mut [T]) {
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
fn copy_short<T: Scalar>(dst: &mut [T], src: &[T]) {
    let (d16, dt) = dst.as_chunks_mut::<16>();
    let (s16, st) = src.as_chunks::<16>();
    for (a, b) in d16.iter_mut().zip(s16) {
        *a = *b;
    }
    for (a, b) in dt.iter_mut().zip(st) {
        *a = *b;
    }
}

pub(super) fn weight_grad<T: Scalar>(x: &[T], gy: &[T], d: &Dims) -> Vec<T> {
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
