//! im2col / col2im: the patches of a sample as a `(cin_g k k) x (oh ow)` column matrix and back,
//! "same" stride-1 rows as one shifted copy per tap.

use super::{Conv2dGeometry, Dims, Scalar};

/// The output columns `ox` whose input column `ox s + kx - p` lies inside `0..w`.
pub(super) fn valid_range(kx: usize, s: usize, p: usize, w: usize, ow: usize) -> (usize, usize) {
    // ox s + kx >= p  and  ox s + kx - p <= w - 1
    let lo = if p > kx { (p - kx).div_ceil(s) } else { 0 };
    let hi = if w + p > kx { ((w - 1 + p - kx) / s + 1).min(ow) } else { 0 };
    (lo.min(hi), hi)
}

/// `cols[(c k + ky) k + kx, oy ow + ox] = x[c, oy s + ky dl - p, ox s + kx dl - p]`, writing only the
/// entries inside the input. The entries outside (the zero padding) sit at the same positions
/// for every sample and channel, so a buffer that starts zeroed and is only ever filled by this
/// function keeps them zero: callers allocate `cols` zeroed once per thread and reuse it.
pub(super) fn im2col<T: Scalar>(x: &[T], d: &Dims, cols: &mut [T]) {
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
pub(super) fn shifted_rows<T: Scalar>(
    plane: &[T],
    d: &Dims,
    ky: usize,
    (lo, hi, first): (usize, usize, usize),
    row: &mut [T],
) {
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
pub(super) fn shifted_add<T: Scalar>(
    row: &mut [T],
    d: &Dims,
    ky: usize,
    (lo, hi, first): (usize, usize, usize),
    plane: &mut [T],
) {
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
pub(super) fn col2im<T: Scalar>(cols: &mut [T], d: &Dims, dx: &mut [T]) {
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
