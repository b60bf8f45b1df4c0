//! 1x1 convolution over the packed 1xN format (spec section 2, "Inference"): for every group of
//! N output channels, the K loop visits only the kept blocks, each an input row broadcast
//! against N contiguous weights. Two layouts:
//! - NCHW: `y[b, gN + i, p] += data[e][i] x[b, indices[e], p]` on tiles of pixels, N
//!   accumulator rows in L1, contiguous loads (no gathers);
//! - NHWC: `y[b, p, gN + i] += x[b, p, indices[e]] data[e][i]`, N lanes per pixel.
//!
//! On x86-64 the NCHW tile is a register-blocked micro-kernel with explicit intrinsics (N
//! accumulators of 16 pixels with AVX-512, of 8 with AVX2 + FMA; N up to 16 / 8); other N, the
//! NHWC loop and other targets use loops written for the vectoriser, compiled for AVX-512, AVX2 +
//! FMA and the baseline (NEON on aarch64). The CPU's best is picked at run time, so one binary
//! runs on any x86-64. Batches, groups and pixel tiles run in parallel on rayon.

use super::bsr::Bsr1xN;
use super::{Result, SparseError};

/// Pixels per tile in the NCHW kernel (`N x TILE` accumulators stay in L1).
const TILE: usize = 128;

/// Which instruction set the kernels run with on this CPU.
pub fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return "avx2+fma";
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        return "neon";
    }
    #[allow(unreachable_code)]
    "baseline"
}

/// One output tile of group `g` in NCHW: `out` is `N x len`, `x` is one sample `[C_in, P]`.
#[inline(always)]
fn nchw_tile(w: &Bsr1xN, g: usize, x: &[f32], p: usize, start: usize, len: usize, out: &mut [f32]) {
    generic_tile(w, g, x, p, start, len, out)
}

/// The portable tile: the N accumulator rows stay in L1; each kept block adds `data[e][i] x_row`
/// to row `i`. (A register-blocked version written for the vectoriser measured 3-4x slower; the
/// intrinsics in `x86` are what made register blocking pay.)
#[inline(always)]
fn generic_tile(w: &Bsr1xN, g: usize, x: &[f32], p: usize, start: usize, len: usize, out: &mut [f32]) {
    let n = w.n;
    out.fill(0.0);
    for e in w.indptr[g] as usize..w.indptr[g + 1] as usize {
        let j = w.indices[e] as usize;
        let row = &x[j * p + start..j * p + start + len];
        let d = &w.data[e * n..(e + 1) * n];
        for (i, &di) in d.iter().enumerate() {
            let acc = &mut out[i * len..(i + 1) * len];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += di * v;
            }
        }
    }
}

macro_rules! dispatch {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

pub(crate) use dispatch;

dispatch!(nchw_tile_auto, nchw_tile, (w: &Bsr1xN, g: usize, x: &[f32], p: usize, start: usize, len: usize, out: &mut [f32]));

/// Register-blocked NCHW micro-kernels with explicit intrinsics: `N` accumulator registers of
/// `LANES` pixels, one unaligned load of the input row and `N` broadcast FMAs per kept block.
/// The caller guarantees (validated format, whole samples) that every `indices[e] p + start + q
/// + LANES <= x.len()` for `q + LANES <= len <= p - start`, and `out.len() >= N len`.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Bsr1xN;
    use std::arch::x86_64::*;

    macro_rules! micro {
        ($name:ident, $feat:literal, $lanes:expr, $vec:ty, $zero:ident, $load:ident, $set1:ident, $fma:ident, $store:ident, $tail:ident) => {
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn $name<const N: usize>(
                w: &Bsr1xN,
                g: usize,
                x: &[f32],
                p: usize,
                start: usize,
                len: usize,
                out: &mut [f32],
            ) {
                let (lo, hi) = (w.indptr[g] as usize, w.indptr[g + 1] as usize);
                let mut q = 0;
                while q + $lanes <= len {
                    let mut acc: [$vec; N] = [$zero(); N];
                    for e in lo..hi {
                        let base = w.indices[e] as usize * p + start + q;
                        // SAFETY: base + LANES <= x.len() by the caller's contract.
                        let xv = unsafe { $load(x.as_ptr().add(base)) };
                        let d = &w.data[e * N..(e + 1) * N];
                        for i in 0..N {
                            acc[i] = $fma($set1(d[i]), xv, acc[i]);
                        }
                    }
                    for (i, a) in acc.iter().enumerate() {
                        // SAFETY: i len + q + LANES <= N len <= out.len().
                        unsafe { $store(out.as_mut_ptr().add(i * len + q), *a) };
                    }
                    q += $lanes;
                }
                if q < len {
                    // SAFETY: as above, for the ragged pixels q..len.
                    unsafe { $tail::<N>(w, lo, hi, x, p, start, q, len, out) };
                }
            }
        };
    }

    /// The ragged pixels `q..len` of a tile, scalar.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tail_scalar<const N: usize>(
        w: &Bsr1xN,
        lo: usize,
        hi: usize,
        x: &[f32],
        p: usize,
        start: usize,
        q: usize,
        len: usize,
        out: &mut [f32],
    ) {
        for i in 0..N {
            out[i * len + q..(i + 1) * len].fill(0.0);
        }
        for e in lo..hi {
            let base = w.indices[e] as usize * p + start;
            for i in 0..N {
                let di = w.data[e * N + i];
                for t in q..len {
                    out[i * len + t] += di * x[base + t];
                }
            }
        }
    }

    /// The ragged pixels `q..len` (fewer than 16) with masked AVX-512 loads and stores.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn tail_avx512<const N: usize>(
        w: &Bsr1xN,
        lo: usize,
        hi: usize,
        x: &[f32],
        p: usize,
        start: usize,
        q: usize,
        len: usize,
        out: &mut [f32],
    ) {
        let mask: __mmask16 = ((1u32 << (len - q)) - 1) as __mmask16;
        let mut acc: [__m512; N] = [_mm512_setzero_ps(); N];
        for e in lo..hi {
            let base = w.indices[e] as usize * p + start + q;
            // SAFETY: masked-off lanes are not read; the others lie before base + len - q <= x.len().
            let xv = unsafe { _mm512_maskz_loadu_ps(mask, x.as_ptr().add(base)) };
            let d = &w.data[e * N..(e + 1) * N];
            for i in 0..N {
                acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(d[i]), xv, acc[i]);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            // SAFETY: only the len - q unmasked lanes are written, inside row i of out.
            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(i * len + q), mask, *a) };
        }
    }

    micro!(
        avx512,
        "avx512f",
        16,
        __m512,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_storeu_ps,
        tail_avx512
    );
    micro!(
        avx2,
        "avx2,fma",
        8,
        __m256,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_storeu_ps,
        tail_scalar
    );
}

/// The fastest NCHW tile kernel for this CPU and N.
fn nchw_tile_best(w: &Bsr1xN, g: usize, x: &[f32], p: usize, start: usize, len: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! run {
            ($f:ident, $($n:literal),*) => {
                match w.n {
                    // SAFETY: the CPU feature was detected; the bounds contract holds (see `x86`).
                    $($n => return unsafe { x86::$f::<$n>(w, g, x, p, start, len, out) },)*
                    _ => {}
                }
            };
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            run!(avx512, 1, 2, 4, 8, 16);
        } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            run!(avx2, 1, 2, 4, 8);
        }
    }
    nchw_tile_auto(w, g, x, p, start, len, out)
}

fn check(w: &Bsr1xN, x_len: usize, per_sample: usize, bias: Option<&[f32]>) -> Result<usize> {
    w.validate()?;
    if w.kk() != 1 {
        return Err(SparseError::Malformed(format!("the 1x1 kernel got a {:?} kernel", w.kernel)));
    }
    if per_sample == 0 || !x_len.is_multiple_of(per_sample) {
        return Err(SparseError::Malformed(format!("{x_len} input values are not whole samples of {per_sample}")));
    }
    if bias.is_some_and(|b| b.len() != w.c_out) {
        return Err(SparseError::Malformed(format!("bias must have {} entries", w.c_out)));
    }
    Ok(x_len / per_sample)
}

/// `y = W x (+ bias)` for NCHW `x` of `batch x C_in x pixels` values; returns `batch x C_out x pixels`.
pub fn conv1x1_nchw(w: &Bsr1xN, x: &[f32], pixels: usize, bias: Option<&[f32]>) -> Result<Vec<f32>> {
    let batch = check(w, x.len(), w.c_in * pixels, bias)?;
    let (n, groups) = (w.n, w.c_out / w.n);
    // One task per (sample, group): its N output rows are contiguous.
    let y = crate::cpu::par_pieces(
        batch * w.c_out * pixels,
        n * pixels,
        || vec![0f32; n * TILE],
        |tile, task, out| {
            let (b, g) = (task / groups, task % groups);
            let xs = &x[b * w.c_in * pixels..(b + 1) * w.c_in * pixels];
            for start in (0..pixels).step_by(TILE) {
                let len = TILE.min(pixels - start);
                let acc = &mut tile[..n * len];
                nchw_tile_best(w, g, xs, pixels, start, len, acc);
                for i in 0..n {
                    let dst = &mut out[i * pixels + start..i * pixels + start + len];
                    let bi = bias.map_or(0.0, |b| b[g * n + i]);
                    for (d, a) in dst.iter_mut().zip(&acc[i * len..(i + 1) * len]) {
                        *d = a + bi;
                    }
                }
            }
        },
    );
    Ok(y)
}

/// Pixels per NHWC tile: the tile is transposed to `[C_in, NHWC_TILE]` (32 KB at 256 channels)
/// and every group runs the NCHW micro-kernel on it.
const NHWC_TILE: usize = 32;

/// `y = W x (+ bias)` for NHWC `x` of `rows x C_in` values (rows = batch x pixels); returns
/// `rows x C_out`. Each tile of pixels is transposed once into channel-major order, so the K loop
/// runs the same register-blocked micro-kernel as NCHW (one contiguous load of the tile's row
/// `indices[e]` and N broadcast FMAs per kept block); the `N x tile` result is written back
/// transposed. (A per-pixel loop of N-lane accumulators ran at scalar speed: N = 4 fills a
/// quarter of an AVX-512 register.)
pub fn conv1x1_nhwc(w: &Bsr1xN, x: &[f32], bias: Option<&[f32]>) -> Result<Vec<f32>> {
    let rows = check(w, x.len(), w.c_in, bias)?;
    let (n, c_in, c_out) = (w.n, w.c_in, w.c_out);
    let y = crate::cpu::par_pieces(
        rows * c_out,
        NHWC_TILE * c_out,
        || (vec![0f32; c_in * NHWC_TILE], vec![0f32; n * NHWC_TILE]),
        |(xt, acc), t, out| {
            let start = t * NHWC_TILE;
            let len = NHWC_TILE.min(rows - start);
            for q in 0..len {
                for (j, &v) in x[(start + q) * c_in..(start + q + 1) * c_in].iter().enumerate() {
                    xt[j * len + q] = v;
                }
            }
            for g in 0..c_out / n {
                let acc = &mut acc[..n * len];
                nchw_tile_best(w, g, &xt[..c_in * len], len, 0, len, acc);
                for i in 0..n {
                    let o = g * n + i;
                    let bi = bias.map_or(0.0, |b| b[o]);
                    for q in 0..len {
                        out[q * c_out + o] = acc[i * len + q] + bi;
                    }
                }
            }
        },
    );
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparse::{BlockOrder, block_mask};
    use candle_core::{Device, Tensor};
    use proptest::prelude::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i + seed) * 7919 % 1009) as f32 / 1009.0 - 0.5) * 2.0).collect()
    }

    proptest! {
        /// Both layouts equal candle's dense 1x1 convolution on the masked weight.
        #[test]
        fn matches_the_dense_convolution(
            n in prop::sample::select(vec![1usize, 2, 4, 8, 16, 32]),
            groups in 1usize..4,
            c_in in 1usize..40,
            side in 1usize..12,
            batch in prop::sample::select(vec![1usize, 3, 8]),
            rate in 0.0f64..0.95,
            seed in 0usize..1000,
            bias in any::<bool>(),
        ) {
            let c_out = n * groups;
            let dev = Device::Cpu;
            let w = Tensor::from_vec(values(c_out * c_in, seed), (c_out, c_in, 1, 1), &dev).unwrap();
            let wm = (&w * block_mask(&w, n, rate, BlockOrder::Strict).unwrap()).unwrap();
            let packed = Bsr1xN::from_dense(&wm, n).unwrap();
            let xv = values(batch * c_in * side * side, seed + 1);
            let x = Tensor::from_vec(xv.clone(), (batch, c_in, side, side), &dev).unwrap();
            let b = values(c_out, seed + 2);
            let mut dense = x.conv2d(&wm, 0, 1, 1, 1).unwrap();
            if bias {
                dense = dense.broadcast_add(&Tensor::from_vec(b.clone(), (1, c_out, 1, 1), &dev).unwrap()).unwrap();
            }
            let want: Vec<f32> = dense.flatten_all().unwrap().to_vec1().unwrap();
            // The forward error bound of a sum of c_in + 1 products: |error| <= (c_in + 1) u
            // sum |w x| (+ |b|), u the f32 unit roundoff, doubled for the reference's own error.
            let mut magnitude = x.abs().unwrap().conv2d(&wm.abs().unwrap(), 0, 1, 1, 1).unwrap();
            if bias {
                let bb = Tensor::from_vec(b.iter().map(|v| v.abs()).collect::<Vec<f32>>(), (1, c_out, 1, 1), &dev).unwrap();
                magnitude = magnitude.broadcast_add(&bb).unwrap();
            }
            let bound = |m: f32| 2.0 * (c_in as f32 + 1.0) * f32::EPSILON / 2.0 * m + f32::MIN_POSITIVE;
            let mags: Vec<f32> = magnitude.flatten_all().unwrap().to_vec1().unwrap();
            let bias_ref = bias.then_some(b.as_slice());
            let got = conv1x1_nchw(&packed, &xv, side * side, bias_ref).unwrap();
            for ((a, b), m) in got.iter().zip(&want).zip(&mags) {
                prop_assert!((a - b).abs() <= bound(*m), "{a} vs {b}: beyond the rounding bound {}", bound(*m));
            }
            // NHWC: transpose in and out.
            let x_nhwc: Vec<f32> = x.permute((0, 2, 3, 1)).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let got = conv1x1_nhwc(&packed, &x_nhwc, bias_ref).unwrap();
            let want_nhwc: Vec<f32> = dense.permute((0, 2, 3, 1)).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let mags_nhwc: Vec<f32> = magnitude.permute((0, 2, 3, 1)).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            for ((a, b), m) in got.iter().zip(&want_nhwc).zip(&mags_nhwc) {
                prop_assert!((a - b).abs() <= bound(*m), "NHWC {a} vs {b}: beyond the rounding bound {}", bound(*m));
            }
        }
    }

    /// Every micro-kernel this CPU can run equals the portable tile (the dispatcher only ever
    /// picks the widest, so the narrower ones are checked here directly).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_micro_kernel_equals_the_portable_tile() {
        let (c_in, p) = (13, 37); // ragged: 37 = 2 x 16 + 5 = 4 x 8 + 5
        let x = values(c_in * p, 3);
        macro_rules! check {
            ($f:ident, $feature:expr, $($n:literal),*) => {$(
                if $feature {
                    let w = Tensor::from_vec(values($n * 2 * c_in, $n), ($n * 2, c_in, 1, 1), &Device::Cpu).unwrap();
                    let wm = (&w * block_mask(&w, $n, 0.4, BlockOrder::Strict).unwrap()).unwrap();
                    let b = Bsr1xN::from_dense(&wm, $n).unwrap();
                    for g in 0..2 {
                        let (mut want, mut got) = (vec![0f32; $n * p], vec![0f32; $n * p]);
                        generic_tile(&b, g, &x, p, 0, p, &mut want);
                        // SAFETY: feature detected; whole sample, validated format.
                        unsafe { x86::$f::<$n>(&b, g, &x, p, 0, p, &mut got) };
                        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5), "{} N={}", stringify!($f), $n);
                    }
                }
            )*};
        }
        let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        check!(avx2, avx2, 1, 2, 4, 8);
        check!(avx512, avx512, 1, 2, 4, 8, 16);
        // Say which ran: on a CPU without a feature its kernels were not checked here.
        let state = |on: bool| if on { "checked" } else { "NOT checked (CPU lacks the feature)" };
        eprintln!("1xN micro-kernels: AVX2 {}, AVX-512 {}", state(avx2), state(avx512));
    }

    /// The reported level is the widest instruction set this CPU has.
    #[test]
    fn the_simd_level_names_the_widest_feature() {
        #[cfg(target_arch = "x86_64")]
        let want = if std::arch::is_x86_feature_detected!("avx512f") {
            "avx512f"
        } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            "avx2+fma"
        } else {
            "baseline"
        };
        #[cfg(target_arch = "aarch64")]
        let want = "neon";
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let want = "baseline";
        assert_eq!(simd_level(), want);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let w = Tensor::from_vec(values(8 * 4, 0), (8, 4, 1, 1), &Device::Cpu).unwrap();
        let p = Bsr1xN::from_dense(&w, 4).unwrap();
        assert!(conv1x1_nchw(&p, &[0.0; 7], 2, None).is_err(), "not whole samples");
        assert!(conv1x1_nhwc(&p, &[0.0; 8], Some(&[0.0; 3])).is_err(), "bias length");
        let k3 = Tensor::from_vec(values(8 * 4 * 9, 0), (8, 4, 3, 3), &Device::Cpu).unwrap();
        assert!(conv1x1_nhwc(&Bsr1xN::from_dense(&k3, 4).unwrap(), &[0.0; 8], None).is_err());
        assert!(!simd_level().is_empty());
    }
}
