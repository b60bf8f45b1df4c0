//! Depthwise convolutions that keep small planes' size (stride 1, "same" padding; MobileNetV2's
//! 2 x 2 to 8 x 8 stages) with the whole `C x plane` block of a sample as one flat vector: tap
//! `(ky, kx)` reads the value a constant `shift = (ky dl - p) w + kx dl - p` away, so each tap is
//! one vectorised multiply-add over the block against a per-value weight table that is zero
//! where the tap falls outside its plane. The plane-by-plane kernels spend their time in loop
//! overhead here (four pixels a plane, nine taps). Values a zero weight meets are multiplied,
//! not skipped: an infinite activation would spread NaN to its neighbours' gradients (training
//! has diverged by then; the NaN guard stops it).
use super::{Dims, Scalar, per_worker, sum_partials, written};
use rayon::prelude::*;

/// Planes up to this many pixels take the flat path. At 16 x 16 (MobileNetV2, batch 64)
/// its input gradient was faster, its weight gradient slower than the plane kernels'; at
/// 2 x 2 to 8 x 8 both were faster (the network's step 12 % faster).
const MAX_PLANE: usize = 64;

pub(super) fn applies(d: &Dims) -> bool {
    d.depthwise() && d.geo.stride == 1 && d.oh == d.h && d.ow == d.w && d.ohw() <= MAX_PLANE
}

/// The taps' flat shifts and their validity per output pixel (`[tap][pixel]`, 1 or 0).
fn taps<T: Scalar>(d: &Dims) -> (Vec<isize>, Vec<T>) {
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
fn weight_table<T: Scalar>(w: &[T], d: &Dims, valid: &[T]) -> Vec<T> {
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
fn padded<T: Scalar>(block: &[T], margin: usize, buf: &mut [T]) {
    buf[margin..margin + block.len()].copy_from_slice(block);
}

fn margin(shifts: &[isize]) -> usize {
    shifts.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0)
}

/// `y[j] = sum_tap w_e[tap][j] x[j + shift_tap]`.
pub(super) fn forward<T: Scalar>(x: &[T], w: &[T], d: &Dims) -> Vec<T> {
    let (shifts, valid) = taps::<T>(d);
    let (we, cp, m) = (weight_table(w, d, &valid), d.cin * d.ohw(), margin(&shifts));
    // SAFETY: each sample block is written whole from its sums (`yb` pairs with `acc`).
    unsafe {
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
}

/// `dx[j + shift_tap] += w_e[tap][j] dy[j]`.
pub(super) fn input_grad<T: Scalar>(gy: &[T], w: &[T], d: &Dims) -> Vec<T> {
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
pub(super) fn weight_grad<T: Scalar>(x: &[T], gy: &[T], d: &Dims) -> Vec<T> {
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
