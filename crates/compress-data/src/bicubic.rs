//! MATLAB-`imresize`-exact bicubic resizing, the convention behind every SR paper's PSNR.
//!
//! Kernel (Keys 1981, a = -0.5):
//! `k(x) = 1.5|x|^3 - 2.5|x|^2 + 1` for `|x| <= 1`,
//! `k(x) = -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2` for `1 < |x| <= 2`, else 0.
//! When shrinking (`scale < 1`) MATLAB antialiases: `h(x) = scale * k(scale * x)` with the
//! support widened to `4 / scale`. Output pixel `i` (1-based) samples input coordinate
//! `u = i / scale + 0.5 (1 - 1 / scale)`, taps `floor(u - width/2) + 0..ceil(width)+2`, weights
//! normalised to sum 1, indices mirrored symmetrically at the borders. Height is resized before
//! width when their scales are equal (MATLAB sorts the dimensions by scale, stably).
//! MATLAB's `uint8` path returns `uint8` from each one-dimensional pass, so the intermediate
//! image is rounded (half away from zero) and saturated: [`imresize_u8`] does the same.

use crate::error::{DataError, Result};

/// The bicubic kernel with a = -0.5.
pub fn cubic(x: f64) -> f64 {
    let a = x.abs();
    let (a2, a3) = (a * a, a * a * a);
    if a <= 1.0 {
        1.5 * a3 - 2.5 * a2 + 1.0
    } else if a <= 2.0 {
        -0.5 * a3 + 2.5 * a2 - 4.0 * a + 2.0
    } else {
        0.0
    }
}

/// The taps of a one-dimensional resize: for each output index, `(input index, weight)` pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Contributions {
    /// `taps[i]` lists the 0-based input indices and weights of output `i`.
    pub taps: Vec<Vec<(usize, f64)>>,
}

/// MATLAB's `contributions(in_length, out_length, scale, @cubic, 4, true)`.
pub fn contributions(in_len: usize, out_len: usize) -> Result<Contributions> {
    if in_len == 0 || out_len == 0 {
        return Err(DataError::Config(format!("cannot resize length {in_len} to {out_len}")));
    }
    let scale = out_len as f64 / in_len as f64;
    let (kscale, width) = if scale < 1.0 { (scale, 4.0 / scale) } else { (1.0, 4.0) };
    let p = width.ceil() as i64 + 2;
    let period = 2 * in_len as i64;
    let taps = (1..=out_len)
        .map(|i| {
            let u = i as f64 / scale + 0.5 * (1.0 - 1.0 / scale);
            let left = (u - width / 2.0).floor() as i64;
            let raw: Vec<(i64, f64)> =
                (0..p).map(|k| (left + k, kscale * cubic(kscale * (u - (left + k) as f64)))).collect();
            let sum: f64 = raw.iter().map(|(_, w)| w).sum();
            raw.into_iter()
                .filter(|(_, w)| *w != 0.0)
                .map(|(j, w)| {
                    // 1-based j mirrored: aux = [1..n, n..1], aux(mod(j - 1, 2n) + 1).
                    let m = (j - 1).rem_euclid(period);
                    let idx = if m < in_len as i64 { m } else { period - 1 - m };
                    (idx as usize, w / sum)
                })
                .collect()
        })
        .collect();
    Ok(Contributions { taps })
}

/// Resizes one `h x w` plane (row-major) along height then width, calling `pass_end` on every
/// value after each pass.
fn resize_plane(src: &[f64], h: usize, w: usize, oh: usize, ow: usize, pass_end: fn(f64) -> f64) -> Result<Vec<f64>> {
    if src.len() != h * w {
        return Err(DataError::Config(format!("plane of {} values is not {h}x{w}", src.len())));
    }
    let ch = contributions(h, oh)?;
    let cw = contributions(w, ow)?;
    let height_first = (oh as f64 / h as f64) <= (ow as f64 / w as f64);
    let along_h = |s: &[f64], cols: usize| -> Vec<f64> {
        let mut out = vec![0.0; oh * cols];
        for (y, taps) in ch.taps.iter().enumerate() {
            for x in 0..cols {
                out[y * cols + x] = pass_end(taps.iter().map(|&(j, wt)| s[j * cols + x] * wt).sum());
            }
        }
        out
    };
    let along_w = |s: &[f64], rows: usize| -> Vec<f64> {
        let mut out = vec![0.0; rows * ow];
        for y in 0..rows {
            for (x, taps) in cw.taps.iter().enumerate() {
                out[y * ow + x] = pass_end(taps.iter().map(|&(j, wt)| s[y * w + j] * wt).sum());
            }
        }
        out
    };
    Ok(if height_first { along_w(&along_h(src, w), oh) } else { along_h(&along_w(src, h), ow) })
}

/// Resizes a `C x H x W` `f64` image to `C x oh x ow` without intermediate rounding
/// (MATLAB's `double` path).
pub fn imresize_f64(src: &[f64], c: usize, h: usize, w: usize, oh: usize, ow: usize) -> Result<Vec<f64>> {
    check_len(src.len(), c, h, w)?;
    let mut out = Vec::with_capacity(c * oh * ow);
    for plane in src.chunks_exact(h * w) {
        out.extend(resize_plane(plane, h, w, oh, ow, |v| v)?);
    }
    Ok(out)
}

/// Resizes a `C x H x W` `u8` image to `C x oh x ow` as MATLAB's `imresize(uint8, ..., 'bicubic')`:
/// each pass rounds half away from zero and saturates to 0..=255.
pub fn imresize_u8(src: &[u8], c: usize, h: usize, w: usize, oh: usize, ow: usize) -> Result<Vec<u8>> {
    check_len(src.len(), c, h, w)?;
    let mut out = Vec::with_capacity(c * oh * ow);
    for plane in src.chunks_exact(h * w) {
        let f: Vec<f64> = plane.iter().map(|&v| f64::from(v)).collect();
        out.extend(resize_plane(&f, h, w, oh, ow, |v| v.round().clamp(0.0, 255.0))?.into_iter().map(|v| v as u8));
    }
    Ok(out)
}

fn check_len(len: usize, c: usize, h: usize, w: usize) -> Result<()> {
    if c == 0 || h == 0 || w == 0 || len != c * h * w {
        return Err(DataError::Config(format!("image of {len} values is not {c}x{h}x{w}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_values() {
        assert_eq!(cubic(0.0), 1.0);
        assert_eq!(cubic(1.0), 0.0);
        assert_eq!(cubic(2.0), 0.0);
        assert_eq!(cubic(0.5), 0.5625);
        assert_eq!(cubic(-1.5), -0.0625);
    }

    /// imresize(1:8, 0.5) by hand from the kernel definition: output 1 samples u = 1.5 with
    /// the antialiased kernel h(x) = 0.5 k(x/2) over taps -3..6, mirrored to
    /// [4 3 2 1 1 2 3 4 5 6]; weights h(4.5..-4.5) = [0, -3/256, -9/256, 29/256, 111/256,
    /// 111/256, 29/256, -9/256, -3/256, 0], giving 371/256 = 1.44921875.
    #[test]
    fn matches_hand_computed_downscale() {
        let src: Vec<f64> = (1..=8).map(f64::from).collect();
        let out = imresize_f64(&src, 1, 1, 8, 1, 4).expect("resize");
        assert!((out[0] - 371.0 / 256.0).abs() < 1e-12, "{out:?}");
        // Output 2 samples u = 3.5 over taps -1..8 mirrored to [2 1 1 2 .. 8]: the mirrored
        // border still reaches it, 893/256. The last two outputs mirror the first two about 4.5.
        assert!((out[1] - 893.0 / 256.0).abs() < 1e-12, "{out:?}");
        assert!((out[2] - (9.0 - 893.0 / 256.0)).abs() < 1e-12, "{out:?}");
        assert!((out[3] - (9.0 - 371.0 / 256.0)).abs() < 1e-12, "{out:?}");
        let c = contributions(8, 4).expect("taps");
        let w: Vec<f64> = c.taps[0].iter().map(|t| t.1 * 256.0).collect();
        assert_eq!(w, vec![-3.0, -9.0, 29.0, 111.0, 111.0, 29.0, -9.0, -3.0]);
    }

    /// 2x upscale of [0, 10, 20, 30]: output 2 samples u = 1.25 with taps 0..3 mirrored to
    /// [1, 1, 2, 3] -> values [0, 0, 10, 20] with k(1.25, 0.25, -0.75, -1.75) =
    /// [-0.0703125, 0.8671875, 0.2265625, -0.0234375], giving 1.796875.
    #[test]
    fn matches_hand_computed_upscale() {
        let out = imresize_f64(&[0.0, 10.0, 20.0, 30.0], 1, 4, 1, 8, 1).expect("resize");
        assert!((out[1] - 1.796875).abs() < 1e-12, "{out:?}");
        // Output 4 samples u = 2.25 inside the ramp, where the cubic reproduces a line exactly.
        assert!((out[3] - 12.5).abs() < 1e-12, "{out:?}");
    }

    #[test]
    fn constant_stays_constant_and_identity_is_exact() {
        let src = vec![77u8; 3 * 9 * 7];
        assert!(imresize_u8(&src, 3, 9, 7, 3, 3).expect("r").iter().all(|&v| v == 77));
        let ramp: Vec<u8> = (0..35).map(|i| (i * 7) as u8).collect();
        assert_eq!(imresize_u8(&ramp, 1, 5, 7, 5, 7).expect("r"), ramp);
    }

    #[test]
    fn u8_path_rounds_and_saturates() {
        // A hard edge overshoots under the cubic kernel; uint8 output saturates at 0 and 255.
        let src: Vec<u8> = (0..16).map(|i| if i % 8 < 4 { 0 } else { 255 }).collect();
        let f = imresize_f64(&src.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), 1, 2, 8, 4, 16).expect("r");
        assert!(f.iter().any(|&v| !(0.0..=255.0).contains(&v)), "cubic overshoots: {f:?}");
        let u = imresize_u8(&src, 1, 2, 8, 4, 16).expect("r");
        for (a, b) in u.iter().zip(&f) {
            assert_eq!(f64::from(*a), b.round().clamp(0.0, 255.0));
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(imresize_u8(&[1, 2, 3], 1, 2, 2, 1, 1).is_err());
        assert!(imresize_u8(&[1, 2, 3, 4], 1, 2, 2, 0, 1).is_err());
    }
}
