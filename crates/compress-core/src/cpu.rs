//! Access to the `f32` data of CPU tensors inside the toolkit's custom ops.

use candle_core::{CpuStorage, Layout, Tensor};
use rayon::prelude::*;

/// The contiguous `f32` slice a layout addresses.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("custom op: not contiguous".into()))?;
    match s {
        CpuStorage::F32(v) => Ok(&v[a..b]),
        _ => candle_core::bail!("custom op: f32 only"),
    }
}

/// Runs `f` on the contiguous `f32` data of a CPU tensor (copying only a strided tensor).
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (st, l) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cs) = &*st else { candle_core::bail!("custom op: CPU tensors only") };
    Ok(f(f32_slice(cs, l)?))
}

/// Rows of `d` values per parallel task: about 16 K values, at least one row.
pub(crate) fn rows_per_task(d: usize) -> usize {
    ((1 << 14) / d.max(1)).max(1)
}

/// How many parts a reduction over the samples of a batch is split into: a constant, not the
/// thread count, so that partial sums (combined in a fixed order) give the same bits on one
/// thread or many. Eight parts keep two to eight cores busy at a few extra partials' cost.
pub(crate) const PARTS: usize = 8;

/// A new `len`-value vector filled by `fill`, with no zeroing pass first.
///
/// # Safety
/// `fill` must initialise every element of the slice it is given (the parallel maps below pair
/// its chunks one to one with their inputs; a GEMM without accumulation covers its output).
pub(crate) unsafe fn written<U>(len: usize, fill: impl FnOnce(&mut [std::mem::MaybeUninit<U>])) -> Vec<U> {
    let mut v = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the capacity is at least `len`, and the caller guarantees `fill` initialised
    // elements 0..len.
    unsafe { v.set_len(len) };
    v
}

/// A new `len`-value vector computed in `chunk`-value pieces on the rayon pool: each task zeroes
/// its piece (in cache, no separate zeroing pass over the whole output) and hands it to
/// `f(scratch, piece index, piece)`, `scratch` made once per worker by `init`. The sparse
/// kernels write outputs far larger than the work at high sparsity: a serial `vec![0; len]` first
/// cost as much as the kernel.
pub(crate) fn par_pieces<S, I, F>(len: usize, chunk: usize, init: I, f: F) -> Vec<f32>
where
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize, &mut [f32]) + Sync + Send,
{
    let chunk = chunk.max(1);
    let run = |s: &mut S, (t, o): (usize, &mut [std::mem::MaybeUninit<f32>])| {
        for v in o.iter_mut() {
            v.write(0.0);
        }
        // SAFETY: every element of `o` was written just above, and `MaybeUninit<f32>` has the
        // layout of `f32`.
        let o = unsafe { &mut *(o as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
        f(s, t, o);
    };
    // SAFETY: the pieces cover the output and each is written whole by `run` (on the caller's
    // thread when there is one piece: a hand-off to the pool costs microseconds).
    unsafe {
        written(len, |spare| {
            if len <= chunk {
                run(&mut init(), (0, spare));
            } else {
                spare.par_chunks_mut(chunk).enumerate().for_each_init(&init, run);
            }
        })
    }
}

/// Applies `f` to matching `chunk`-value pieces of `out` and `inp`: on the rayon pool when there
/// are several, on the caller's thread when there is one (a hand-off to the pool costs
/// microseconds, more than a small op: batch-1 inference).
pub(crate) fn zip_chunks<F>(out: &mut [f32], inp: &[f32], chunk: usize, f: F)
where
    F: Fn(&mut [f32], &[f32]) + Sync + Send,
{
    let chunk = chunk.max(1);
    if out.len() <= chunk {
        f(out, inp);
    } else {
        out.par_chunks_mut(chunk).zip(inp.par_chunks(chunk)).for_each(|(o, i)| f(o, i));
    }
}

/// [`zip_chunks`] over two inputs.
pub(crate) fn zip_chunks2<F>(out: &mut [f32], a: &[f32], b: &[f32], chunk: usize, f: F)
where
    F: Fn(&mut [f32], &[f32], &[f32]) + Sync + Send,
{
    let chunk = chunk.max(1);
    if out.len() <= chunk {
        f(out, a, b);
    } else {
        out.par_chunks_mut(chunk).zip(a.par_chunks(chunk).zip(b.par_chunks(chunk))).for_each(|(o, (x, y))| f(o, x, y));
    }
}

/// `f` applied to every element of `x`, in parallel `chunk`-value pieces (on the caller's thread
/// when there is one), written straight into the new vector (no zero-filling pass).
pub(crate) fn par_map<T, U, F>(x: &[T], chunk: usize, f: F) -> Vec<U>
where
    T: Copy + Sync,
    U: Send,
    F: Fn(T) -> U + Sync,
{
    let chunk = chunk.max(1);
    let fill = |o: &mut [std::mem::MaybeUninit<U>], i: &[T]| {
        for (o, &v) in o.iter_mut().zip(i) {
            o.write(f(v));
        }
    };
    // SAFETY: every element is written (the chunks of the output and of `x` pair up one to one
    // and cover both).
    unsafe {
        written(x.len(), |spare| {
            if x.len() <= chunk {
                fill(spare, x);
            } else {
                spare.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(o, i)| fill(o, i));
            }
        })
    }
}

/// `f` applied to matching elements of `a` and `b` (equal lengths), as [`par_map`].
pub(crate) fn par_map2<T, U, F>(a: &[T], b: &[T], chunk: usize, f: F) -> Vec<U>
where
    T: Copy + Sync,
    U: Send,
    F: Fn(T, T) -> U + Sync,
{
    assert_eq!(a.len(), b.len(), "par_map2: operands differ in length");
    let chunk = chunk.max(1);
    let fill = |o: &mut [std::mem::MaybeUninit<U>], x: &[T], y: &[T]| {
        for ((o, &u), &v) in o.iter_mut().zip(x).zip(y) {
            o.write(f(u, v));
        }
    };
    // SAFETY: as in `par_map`: every element is written.
    unsafe {
        written(a.len(), |spare| {
            if a.len() <= chunk {
                fill(spare, a, b);
            } else {
                spare
                    .par_chunks_mut(chunk)
                    .zip(a.par_chunks(chunk).zip(b.par_chunks(chunk)))
                    .for_each(|(o, (x, y))| fill(o, x, y));
            }
        })
    }
}

/// `f(&consts(ch), v)` for every value `v` of `x: [N, C, plane]` with `(c, p) = (C, plane)`, `ch`
/// the value's channel (`consts` is evaluated once per channel), written straight into the
/// result.
pub(crate) fn par_map_planes<T, U, C, G, F>(x: &[T], (c, p): (usize, usize), consts: G, f: F) -> Vec<U>
where
    T: Copy + Sync,
    U: Send,
    C: Copy + Send + Sync,
    G: Fn(usize) -> C,
    F: Fn(&C, T) -> U + Sync,
{
    par_map3_planes(x, x, x, (c, p), consts, |k, u, _, _| f(k, u))
}

/// [`par_map_planes`] over matching planes of `a` and `b` (equal lengths).
pub(crate) fn par_map2_planes<T, U, C, G, F>(a: &[T], b: &[T], (c, p): (usize, usize), consts: G, f: F) -> Vec<U>
where
    T: Copy + Sync,
    U: Send,
    C: Copy + Send + Sync,
    G: Fn(usize) -> C,
    F: Fn(&C, T, T) -> U + Sync,
{
    // The repeated operand reads the same cache lines: no extra traffic.
    par_map3_planes(a, b, b, (c, p), consts, |k, u, v, _| f(k, u, v))
}

/// Planes shorter than this are mapped with per-value constants (one flat loop per sample)
/// rather than plane by plane: a loop over four values (late MobileNet layers) is mostly
/// overhead.
const SHORT_PLANE: usize = 32;

/// [`par_map_planes`] over matching planes of `a`, `b` and `c3` (equal lengths).
pub(crate) fn par_map3_planes<T, U, C, G, F>(
    a: &[T],
    b: &[T],
    c3: &[T],
    (c, p): (usize, usize),
    consts: G,
    f: F,
) -> Vec<U>
where
    T: Copy + Sync,
    U: Send,
    C: Copy + Send + Sync,
    G: Fn(usize) -> C,
    F: Fn(&C, T, T, T) -> U + Sync,
{
    assert!(a.len() == b.len() && a.len() == c3.len(), "par_map3_planes: operands differ in length");
    let (c, p) = (c.max(1), p.max(1));
    let per_channel: Vec<C> = (0..c).map(consts).collect();
    // Short planes: one run per sample (`c p` values) against a table of per-value constants;
    // long ones: one run per plane with its channel's constants.
    let short = p < SHORT_PLANE;
    let (table, run) = if short {
        (per_channel.iter().flat_map(|k| std::iter::repeat_n(*k, p)).collect::<Vec<C>>(), c * p)
    } else {
        (per_channel, p)
    };
    let fill = |first: usize, o: &mut [std::mem::MaybeUninit<U>], x: &[T], y: &[T], z: &[T]| {
        let runs = o.chunks_mut(run).zip(x.chunks(run)).zip(y.chunks(run)).zip(z.chunks(run));
        for (j, (((op, xp), yp), zp)) in runs.enumerate() {
            let values = op.iter_mut().zip(xp).zip(yp).zip(zp);
            if short {
                for ((((o, &u), &v), &w), k) in values.zip(&table) {
                    o.write(f(k, u, v, w));
                }
            } else {
                let k = &table[(first + j) % c];
                for (((o, &u), &v), &w) in values {
                    o.write(f(k, u, v, w));
                }
            }
        }
    };
    // Whole runs per task.
    let per_task = rows_per_task(run);
    // SAFETY: every element is written (the output's runs pair up with those of the operands and
    // cover them).
    unsafe {
        written(a.len(), |spare| {
            if a.len() <= per_task * run {
                fill(0, spare, a, b, c3);
            } else {
                let chunk = per_task * run;
                spare
                    .par_chunks_mut(chunk)
                    .zip(a.par_chunks(chunk).zip(b.par_chunks(chunk)).zip(c3.par_chunks(chunk)))
                    .enumerate()
                    .for_each(|(t, (o, ((x, y), z)))| fill(t * per_task, o, x, y, z));
            }
        })
    }
}

/// `[f(0), f(1), .., f(n - 1)]` computed in parallel `chunk`-index pieces (on the caller's thread
/// when there is one), written straight into the new vector.
pub(crate) fn par_from_fn<U, F>(n: usize, chunk: usize, f: F) -> Vec<U>
where
    U: Send,
    F: Fn(usize) -> U + Sync,
{
    let chunk = chunk.max(1);
    let fill = |first: usize, o: &mut [std::mem::MaybeUninit<U>]| {
        for (j, o) in o.iter_mut().enumerate() {
            o.write(f(first + j));
        }
    };
    // SAFETY: every element is written (the chunks cover the output).
    unsafe {
        written(n, |spare| {
            if n <= chunk {
                fill(0, spare);
            } else {
                spare.par_chunks_mut(chunk).enumerate().for_each(|(t, o)| fill(t * chunk, o));
            }
        })
    }
}

/// `dst[j rows + i] = src[i cols + j]`: the transpose of a row-major `rows x cols` matrix, in
/// 8 x 8 tiles (AVX shuffles for `f32` where the CPU has them; a scalar tile elsewhere).
pub(crate) fn transpose<T: Copy + 'static>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols, "transpose: buffers smaller than {rows} x {cols}");
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: T is f32 (same size and layout: the casts only rename the type), the lengths
        // were checked above, and the CPU supports AVX.
        unsafe {
            let s = std::slice::from_raw_parts(src.as_ptr().cast::<f32>(), rows * cols);
            let d = std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<f32>(), rows * cols);
            return avx::transpose(s, rows, cols, d);
        }
    }
    const B: usize = 8;
    for i0 in (0..rows).step_by(B) {
        for j0 in (0..cols).step_by(B) {
            for i in i0..(i0 + B).min(rows) {
                for j in j0..(j0 + B).min(cols) {
                    dst[j * rows + i] = src[i * cols + j];
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// The transpose of one 8 x 8 tile: rows `src + r ss`, written to rows `dst + c ds`.
    ///
    /// # Safety
    /// AVX must be available; `src + r ss + 0..8` and `dst + c ds + 0..8` must be in bounds for
    /// `r, c < 8`.
    #[target_feature(enable = "avx")]
    unsafe fn tile(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
        // SAFETY: the caller's bounds; unaligned loads and stores.
        unsafe {
            let r = |i: usize| _mm256_loadu_ps(src.add(i * ss));
            let (r0, r1, r2, r3, r4, r5, r6, r7) = (r(0), r(1), r(2), r(3), r(4), r(5), r(6), r(7));
            // Pairs of rows interleaved, then quads, then the 128-bit halves swapped.
            let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
            let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
            let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
            let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
            let (s0, s1) = (_mm256_shuffle_ps::<0x44>(t0, t2), _mm256_shuffle_ps::<0xEE>(t0, t2));
            let (s2, s3) = (_mm256_shuffle_ps::<0x44>(t1, t3), _mm256_shuffle_ps::<0xEE>(t1, t3));
            let (s4, s5) = (_mm256_shuffle_ps::<0x44>(t4, t6), _mm256_shuffle_ps::<0xEE>(t4, t6));
            let (s6, s7) = (_mm256_shuffle_ps::<0x44>(t5, t7), _mm256_shuffle_ps::<0xEE>(t5, t7));
            let w = |i: usize, v: __m256| _mm256_storeu_ps(dst.add(i * ds), v);
            w(0, _mm256_permute2f128_ps::<0x20>(s0, s4));
            w(1, _mm256_permute2f128_ps::<0x20>(s1, s5));
            w(2, _mm256_permute2f128_ps::<0x20>(s2, s6));
            w(3, _mm256_permute2f128_ps::<0x20>(s3, s7));
            w(4, _mm256_permute2f128_ps::<0x31>(s0, s4));
            w(5, _mm256_permute2f128_ps::<0x31>(s1, s5));
            w(6, _mm256_permute2f128_ps::<0x31>(s2, s6));
            w(7, _mm256_permute2f128_ps::<0x31>(s3, s7));
        }
    }

    /// [`super::transpose`] with AVX tiles over the whole 8 x 8 blocks.
    ///
    /// # Safety
    /// AVX must be available; the slices hold `rows cols` values.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
        let (rf, cf) = (rows / 8 * 8, cols / 8 * 8);
        for i0 in (0..rf).step_by(8) {
            for j0 in (0..cf).step_by(8) {
                // SAFETY: rows i0..i0 + 8 <= rows and columns j0..j0 + 8 <= cols of both.
                unsafe { tile(src.as_ptr().add(i0 * cols + j0), cols, dst.as_mut_ptr().add(j0 * rows + i0), rows) };
            }
        }
        // The ragged right columns of the full rows, then the ragged bottom rows.
        for i in 0..rf {
            for j in cf..cols {
                dst[j * rows + i] = src[i * cols + j];
            }
        }
        for i in rf..rows {
            for j in 0..cols {
                dst[j * rows + i] = src[i * cols + j];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{par_map_planes, par_map3_planes, transpose};

    /// Short planes (per-value constants) and long ones (per plane), on tensors large enough
    /// for several parallel tasks, against the definition.
    #[test]
    fn plane_maps_apply_each_channels_constants() {
        for (n, c, p) in [(64, 960, 4), (3, 5, 1), (40, 16, 1024), (7, 3, 31), (9, 6, 33)] {
            let len = n * c * p;
            let x: Vec<f32> = (0..len).map(|i| (i % 97) as f32).collect();
            let y: Vec<f32> = (0..len).map(|i| (i % 89) as f32).collect();
            let z: Vec<f32> = (0..len).map(|i| (i % 83) as f32).collect();
            let consts = |ch: usize| (ch as f32, 2.0 * ch as f32);
            let got = par_map3_planes(&x, &y, &z, (c, p), consts, |&(a, b), u, v, w| a * u + b * v - w);
            let one = par_map_planes(&x, (c, p), consts, |&(a, _), u| a + u);
            for i in 0..len {
                let ch = (i / p) % c;
                let (a, b) = consts(ch);
                assert_eq!(got[i], a * x[i] + b * y[i] - z[i], "({n}, {c}, {p}) at {i}");
                assert_eq!(one[i], a + x[i], "({n}, {c}, {p}) at {i}");
            }
        }
    }

    #[test]
    fn transpose_matches_the_definition_on_ragged_shapes() {
        for (rows, cols) in [(1, 1), (8, 8), (16, 1024), (3, 17), (13, 9), (64, 64), (9, 8), (8, 15)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut dst = vec![-1f32; rows * cols];
            transpose(&src, rows, cols, &mut dst);
            let src64: Vec<f64> = src.iter().map(|&v| f64::from(v)).collect();
            let mut dst64 = vec![-1f64; rows * cols];
            transpose(&src64, rows, cols, &mut dst64);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(dst[j * rows + i], src[i * cols + j], "f32 {rows}x{cols} at ({i}, {j})");
                    assert_eq!(dst64[j * rows + i], src64[i * cols + j], "f64 {rows}x{cols} at ({i}, {j})");
                }
            }
        }
    }
}
