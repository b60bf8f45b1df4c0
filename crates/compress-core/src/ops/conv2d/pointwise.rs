//! Pointwise convolutions over tiny planes (the last MobileNetV2 stages at 32 x 32 input: 2 x 2
//! pixels) as one GEMM over the whole batch. Per sample the product is `cout x cin` by
//! `cin x (h w)` with `h w = 4`: the GEMM would repack the weight matrix for every sample to
//! produce four columns. With the batch laid out channel-major (`[C, N h w]`, sample planes side by side)
//! the forward is `Y' = W X'`, the input gradient `dX' = W^T dY'` and the weight gradient
//! `dW = dY' X'^T`, each one multi-threaded GEMM.
use super::{Dims, Scalar, matmul, written};
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
fn to_channel_major<T: Scalar>(x: &[T], (n, c, p): (usize, usize, usize)) -> Vec<T> {
    // SAFETY: each GEMM (no accumulation) or channel-major copy writes every value.
    unsafe {
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
}

/// `[C, N P] -> [N, C, P]`.
fn from_channel_major<T: Scalar>(y: &[T], (n, c, p): (usize, usize, usize)) -> Vec<T> {
    // SAFETY: each GEMM (no accumulation) or channel-major copy writes every value.
    unsafe {
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
}

/// `y = conv(x, w)`: `Y' (cout x NP) = W (cout x cin) . X' (cin x NP)`.
pub(super) fn forward<T: Scalar>(x: &[T], w: &[T], d: &Dims) -> Vec<T> {
    let np = d.n * d.ohw();
    let xt = to_channel_major(x, (d.n, d.cin, d.ohw()));
    // SAFETY: each GEMM (no accumulation) or channel-major copy writes every value.
    let yt =
        unsafe { written(d.cout * np, |y| matmul(d.cout, np, d.cin, y, false, w, d.cin, 1, &xt, np, 1, threads())) };
    from_channel_major(&yt, (d.n, d.cout, d.ohw()))
}

/// `dX' (cin x NP) = W^T (cin x cout) . dY' (cout x NP)`.
pub(super) fn input_grad<T: Scalar>(gy: &[T], w: &[T], d: &Dims) -> Vec<T> {
    let np = d.n * d.ohw();
    let gt = to_channel_major(gy, (d.n, d.cout, d.ohw()));
    // SAFETY: each GEMM (no accumulation) or channel-major copy writes every value.
    let dxt =
        unsafe { written(d.cin * np, |dx| matmul(d.cin, np, d.cout, dx, false, w, 1, d.cin, &gt, np, 1, threads())) };
    from_channel_major(&dxt, (d.n, d.cin, d.ohw()))
}

/// `dW (cout x cin) = dY' (cout x NP) . X'^T (NP x cin)`.
pub(super) fn weight_grad<T: Scalar>(x: &[T], gy: &[T], d: &Dims) -> Vec<T> {
    let np = d.n * d.ohw();
    let (xt, gt) = (to_channel_major(x, (d.n, d.cin, d.ohw())), to_channel_major(gy, (d.n, d.cout, d.ohw())));
    // SAFETY: each GEMM (no accumulation) or channel-major copy writes every value.
    unsafe { written(d.cout * d.cin, |dw| matmul(d.cout, d.cin, np, dw, false, &gt, np, 1, &xt, 1, np, threads())) }
}
