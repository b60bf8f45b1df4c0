//! Metrics: top-k accuracy; PSNR and SSIM on the BT.601 Y channel of 8-bit-rounded images with
//! `shave` border pixels removed (the super-resolution convention of EDSR's evaluation).

use candle_core::{D, DType, Result, Tensor};
use compress_data::ycbcr::luma;

/// Number of samples whose label is among the `k` largest logits.
pub fn topk_correct(logits: &Tensor, labels: &Tensor, k: usize) -> Result<usize> {
    let (b, classes) = logits.dims2()?;
    let k = k.min(classes);
    let order = logits.arg_sort_last_dim(false)?.narrow(D::Minus1, 0, k)?;
    let hits = order.broadcast_eq(&labels.to_dtype(DType::U32)?.unsqueeze(1)?)?.to_dtype(DType::F32)?.sum_all()?;
    let n = hits.to_scalar::<f32>()? as usize;
    debug_assert!(n <= b);
    Ok(n)
}

/// The Y channel (in [16, 235]) of an RGB `[1, 3, H, W]` or `[3, H, W]` image in [0, 1], after
/// rounding each colour to 8 bits, as `H x W` values.
fn y_plane(img: &Tensor) -> Result<(Vec<f64>, usize, usize)> {
    let img = if img.rank() == 4 { img.squeeze(0)? } else { img.clone() };
    let (c, h, w) = img.dims3()?;
    let v: Vec<f32> = img.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let q = |x: f32| (f64::from(x) * 255.0).round().clamp(0.0, 255.0) / 255.0;
    let y = (0..h * w)
        .map(|i| if c == 1 { q(v[i]) * 255.0 } else { luma(q(v[i]), q(v[h * w + i]), q(v[2 * h * w + i])) })
        .collect();
    Ok((y, h, w))
}

fn shaved(p: &(Vec<f64>, usize, usize), s: usize) -> Result<(Vec<f64>, usize, usize)> {
    let (v, h, w) = p;
    if h <= &(2 * s) || w <= &(2 * s) {
        candle_core::bail!("image {h}x{w} is too small to shave {s} pixels");
    }
    let (nh, nw) = (h - 2 * s, w - 2 * s);
    let mut out = Vec::with_capacity(nh * nw);
    for y in s..h - s {
        out.extend_from_slice(&v[y * w + s..y * w + w - s]);
    }
    Ok((out, nh, nw))
}

/// PSNR (dB) of `sr` against `hr` on Y, peak 255, `shave` pixels removed from each border.
pub fn psnr_y(sr: &Tensor, hr: &Tensor, shave: usize) -> Result<f64> {
    let (a, _, _) = shaved(&y_plane(sr)?, shave)?;
    let (b, _, _) = shaved(&y_plane(hr)?, shave)?;
    if a.len() != b.len() {
        candle_core::bail!("psnr: images differ in size");
    }
    let mse = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len() as f64;
    Ok(if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0f64 * 255.0 / mse).log10() })
}

/// SSIM of Wang et al. (2004) on Y: 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
/// L = 255, averaged over the valid window positions (MATLAB `ssim_index`).
pub fn ssim_y(sr: &Tensor, hr: &Tensor, shave: usize) -> Result<f64> {
    let (a, h, w) = shaved(&y_plane(sr)?, shave)?;
    let (b, _, _) = shaved(&y_plane(hr)?, shave)?;
    if a.len() != b.len() || h < 11 || w < 11 {
        candle_core::bail!("ssim: images differ in size or are smaller than the 11x11 window");
    }
    let g: Vec<f64> = (0..11).map(|i| (-((i as f64 - 5.0).powi(2)) / (2.0 * 1.5 * 1.5)).exp()).collect();
    let gs: f64 = g.iter().sum();
    let g: Vec<f64> = g.iter().map(|x| x / gs).collect();
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let mut total = 0.0;
    let (oh, ow) = (h - 10, w - 10);
    for y in 0..oh {
        for x in 0..ow {
            let (mut ma, mut mb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for (i, gi) in g.iter().enumerate() {
                for (j, gj) in g.iter().enumerate() {
                    let wgt = gi * gj;
                    let (p, q) = (a[(y + i) * w + x + j], b[(y + i) * w + x + j]);
                    ma += wgt * p;
                    mb += wgt * q;
                    saa += wgt * p * p;
                    sbb += wgt * q * q;
                    sab += wgt * p * q;
                }
            }
            let (va, vb, cov) = (saa - ma * ma, sbb - mb * mb, sab - ma * mb);
            total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
        }
    }
    Ok(total / (oh * ow) as f64)
}

/// Arithmetic mean (0 for no values): the averages over seeds of the reproductions.
pub fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (s, n) = values.into_iter().fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n.max(1) as f64
}

/// The median (mean of the two middle values for an even count; NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

/// Pearson's correlation of `a` and `b` (NaN with fewer than two points or no spread).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return f64::NAN;
    }
    let (ma, mb) = (mean(a[..n].iter().copied()), mean(b[..n].iter().copied()));
    let cov: f64 = (0..n).map(|i| (a[i] - ma) * (b[i] - mb)).sum();
    let va: f64 = a[..n].iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b[..n].iter().map(|x| (x - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_pearson_of_known_series() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert!(median(vec![]).is_nan());
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-12);
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert!(pearson(&[1.0], &[2.0]).is_nan());
        assert!(pearson(&[1.0, 1.0], &[2.0, 3.0]).is_nan());
    }
    use candle_core::Device;

    #[test]
    fn topk_counts() {
        let l = Tensor::from_vec(vec![0.1f32, 0.7, 0.2, 0.5, 0.3, 0.2], (2, 3), &Device::Cpu).expect("l");
        let y = Tensor::from_vec(vec![2u32, 0], 2, &Device::Cpu).expect("y");
        assert_eq!(topk_correct(&l, &y, 1).expect("t1"), 1);
        assert_eq!(topk_correct(&l, &y, 2).expect("t2"), 2);
    }

    #[test]
    fn psnr_by_hand_and_ssim_bounds() {
        // Grey images (Y = 16 + 219 v): a difference of 10/255 in every colour is 219 * 10 / 255
        // in Y... computed exactly from the BT.601 weights.
        let dev = Device::Cpu;
        let a = Tensor::full(100f32 / 255.0, (1, 3, 16, 16), &dev).expect("a");
        let b = Tensor::full(110f32 / 255.0, (1, 3, 16, 16), &dev).expect("b");
        let dy = (65.481 + 128.553 + 24.966) * 10.0 / 255.0;
        let want = 10.0 * (255.0f64 * 255.0 / (dy * dy)).log10();
        let got = psnr_y(&a, &b, 2).expect("psnr");
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        assert!(psnr_y(&a, &a, 2).expect("psnr").is_infinite());
        assert!((ssim_y(&a, &a, 0).expect("ssim") - 1.0).abs() < 1e-12);
        let s = ssim_y(&a, &b, 0).expect("ssim");
        assert!(s < 1.0 && s > 0.9, "{s}");
        assert!(psnr_y(&a, &b, 8).is_err());
    }

    #[test]
    fn ssim_of_a_textured_pair_equals_its_closed_form() {
        // A = 100 + 40 X + 20 Y and B = 110 + 25 X (8-bit values, one channel), X = (-1)^x,
        // Y = (-1)^y. Under the normalised 11-tap Gaussian g, a window at (y0, x0) sees
        // E[X] = (-1)^x0 s, E[Y] = (-1)^y0 s, E[XY] = (-1)^(x0 + y0) s^2, E[X^2] = E[Y^2] = 1,
        // with s = sum_j g_j (-1)^j: every window's SSIM in closed form, averaged over the
        // 10 x 13 positions of a 20 x 23 image. A swapped axis, a wrong weight or covariance
        // term moves the value.
        let (h, w) = (20usize, 23usize);
        let (c, d, e, c2_, d2) = (100.0f64, 40.0, 20.0, 110.0, 25.0);
        let px = |v: f64| v / 255.0;
        let a: Vec<f32> = (0..h * w)
            .map(|i| px(c + d * (-1f64).powi((i % w) as i32) + e * (-1f64).powi((i / w) as i32)) as f32)
            .collect();
        let b: Vec<f32> = (0..h * w).map(|i| px(c2_ + d2 * (-1f64).powi((i % w) as i32)) as f32).collect();
        let dev = Device::Cpu;
        let (ta, tb) =
            (Tensor::from_vec(a, (1, h, w), &dev).expect("a"), Tensor::from_vec(b, (1, h, w), &dev).expect("b"));
        let g: Vec<f64> = (0..11).map(|i| (-((i as f64 - 5.0).powi(2)) / 4.5).exp()).collect();
        let gs: f64 = g.iter().sum();
        let s: f64 = g.iter().enumerate().map(|(j, v)| v / gs * (-1f64).powi(j as i32)).sum();
        let (k1, k2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
        let mut total = 0.0;
        for y0 in 0..h - 10 {
            for x0 in 0..w - 10 {
                let (sx, sy) = ((-1f64).powi(x0 as i32) * s, (-1f64).powi(y0 as i32) * s);
                let sxy = sx * sy;
                let ma = c + d * sx + e * sy;
                let mb = c2_ + d2 * sx;
                let eaa = c * c + d * d + e * e + 2.0 * c * d * sx + 2.0 * c * e * sy + 2.0 * d * e * sxy;
                let ebb = c2_ * c2_ + d2 * d2 + 2.0 * c2_ * d2 * sx;
                let eab = c * c2_ + c * d2 * sx + d * c2_ * sx + d * d2 + e * c2_ * sy + e * d2 * sxy;
                let (va, vb, cov) = (eaa - ma * ma, ebb - mb * mb, eab - ma * mb);
                total += ((2.0 * ma * mb + k1) * (2.0 * cov + k2)) / ((ma * ma + mb * mb + k1) * (va + vb + k2));
            }
        }
        let want = total / ((h - 10) * (w - 10)) as f64;
        let got = ssim_y(&ta, &tb, 0).expect("ssim");
        assert!((got - want).abs() < 1e-10, "{got} vs closed form {want}");
        assert!(want > 0.1 && want < 0.95, "a pair that is neither equal nor unrelated: {want}");
        // Symmetric in its arguments.
        assert!((ssim_y(&tb, &ta, 0).expect("ssim") - got).abs() < 1e-12);
    }
}
