//! Depthwise convolutions (one input and one output channel per group) run as direct loops:
//! a GEMM per channel would be a 1 x (k k) by (k k) x (oh ow) product, all call overhead.
use super::{Dims, Scalar, valid_range};
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
pub(super) fn forward<T: Scalar>(x: &[T], w: &[T], d: &Dims) -> Vec<T> {
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
pub(super) fn input_grad<T: Scalar>(gy: &[T], w: &[T], d: &Dims) -> Vec<T> {
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
pub(super) fn weight_grad<T: Scalar>(x: &[T], gy: &[T], d: &Dims) -> Vec<T> {
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
