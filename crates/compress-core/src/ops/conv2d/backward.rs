//! The backward kernels of the general path: the input gradient (as a forward convolution at
//! stride 1, else GEMM + col2im) and the weight gradient (per-worker partial sums).

use super::{
    Conv2dGeometry, Dims, SEQ, Scalar, channels_last, col2im, column_buffer, depthwise, depthwise_flat, forward,
    im2col, matmul, pointwise,
};
use rayon::prelude::*;

/// The input gradient of a stride-1 convolution as a forward convolution of `dY`:
/// `dX = conv(dY, W')` with `W'[g, ci, co, ky, kx] = W[g, co, ci, k-1-ky, k-1-kx]` (per group,
/// input and output channels swapped, taps reversed), padding `dl (k - 1) - p`, same dilation.
/// One GEMM of depth `cout_g k k` per sample and group writes `dX` directly, where the general
/// path's depth-`cout_g` GEMM fills a `k k`-times larger column buffer for `col2im` to add up.
/// `None` when the padding exceeds the kernel's span (a negative padding here).
pub(super) fn input_grad_as_conv<T: Scalar>(gy: &[T], w: &[T], d: &Dims) -> Option<Vec<T>> {
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

pub(super) fn backward_input<T: Scalar>(gy: &[T], w: &[T], d: &Dims) -> Vec<T> {
    if pointwise::applies(d) {
        return pointwise::input_grad(gy, w, d);
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

pub(super) fn backward_weight<T: Scalar>(x: &[T], gy: &[T], d: &Dims) -> Vec<T> {
    if pointwise::applies(d) {
        return pointwise::weight_grad(x, gy, d);
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

/// Runs `f(partial, scratch, sample)` over the samples in [`crate::cpu::PARTS`] contiguous
/// chunks, each with its own zeroed `size`-value partial result and its own copy of `scratch`.
/// The chunks follow from `n` alone, not from the threads, so the partials (summed in order by
/// [`sum_partials`]) give the same bits on any number of threads.
pub(super) fn per_worker<T: Scalar, S: Clone + Send + Sync>(
    n: usize,
    size: usize,
    scratch: S,
    f: impl Fn(&mut [T], &mut S, usize) + Sync,
) -> Vec<Vec<T>> {
    let chunk = n.div_ceil(crate::cpu::PARTS).max(1);
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

pub(super) fn sum_partials<T: Scalar>(partials: Vec<Vec<T>>, size: usize) -> Vec<T> {
    let mut out = vec![T::default(); size];
    for p in partials {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    out
}
