//! Local object reinforcement's augmentation (intraq spec 2.1): torchvision's
//! `RandomResizedCrop` (area scale, log-uniform aspect ratio, 10 tries, then a centre crop) with a
//! bilinear resize back (`align_corners = false`, no antialiasing) and an optional horizontal
//! flip, differentiable in the image: every image's crop is two interpolation matrices,
//! `out = R_y X R_x^T`.

use candle_core::{Device, Result, Tensor};
use rand::Rng;
use rand::rngs::StdRng;

/// A crop box `(top, left, height, width)` in pixels.
pub type CropBox = (usize, usize, usize, usize);

/// torchvision's `RandomResizedCrop.get_params` for an `h x w` image.
pub fn sample_box(h: usize, w: usize, scale: (f64, f64), ratio: (f64, f64), rng: &mut StdRng) -> CropBox {
    let area = (h * w) as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..=scale.1);
        let aspect = if lr1 > lr0 { rng.random_range(lr0..=lr1).exp() } else { lr0.exp() };
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let top = rng.random_range(0..=h - ch);
            let left = rng.random_range(0..=w - cw);
            return (top, left, ch, cw);
        }
    }
    // Fallback: the centre crop at the closest allowed ratio.
    let in_ratio = w as f64 / h as f64;
    let (ch, cw) = if in_ratio < ratio.0 {
        ((w as f64 / ratio.0).round() as usize, w)
    } else if in_ratio > ratio.1 {
        (h, (h as f64 * ratio.1).round() as usize)
    } else {
        (h, w)
    };
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

/// `[out, size]` matrix resampling the segment `[start, start + len)` of a `size`-long axis to
/// `out` samples, bilinear with `align_corners = false` (PyTorch: source `(o + 0.5) len / out -
/// 0.5`, clamped at 0), reversed when `flip`.
pub fn resample_matrix(size: usize, start: usize, len: usize, out: usize, flip: bool) -> Vec<f32> {
    let mut m = vec![0f32; out * size];
    let scale = len as f64 / out as f64;
    for o in 0..out {
        let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(len - 1);
        let i1 = (i0 + 1).min(len - 1);
        let w1 = (src - i0 as f64) as f32;
        let row = if flip { out - 1 - o } else { o };
        m[row * size + start + i0] += 1.0 - w1;
        m[row * size + start + i1] += w1;
    }
    m
}

/// Crops every image of `[B, C, H, W]` to its box, resizes to `out x out` and flips where asked,
/// differentiably in `x`.
pub fn crop_resize(x: &Tensor, boxes: &[CropBox], flips: &[bool], out: usize) -> Result<Tensor> {
    let (b, _, h, w) = x.dims4()?;
    if boxes.len() != b || flips.len() != b {
        candle_core::bail!("crop_resize: {} boxes and {} flips for {b} images", boxes.len(), flips.len())
    }
    let dev: &Device = x.device();
    let (mut ry, mut rx) = (Vec::with_capacity(b * out * h), Vec::with_capacity(b * out * w));
    for (&(top, left, ch, cw), &flip) in boxes.iter().zip(flips) {
        ry.extend(resample_matrix(h, top, ch, out, false));
        rx.extend(resample_matrix(w, left, cw, out, flip));
    }
    let ry = Tensor::from_vec(ry, (b, 1, out, h), dev)?.to_dtype(x.dtype())?;
    let rxt = Tensor::from_vec(rx, (b, 1, out, w), dev)?.to_dtype(x.dtype())?.transpose(2, 3)?;
    ry.broadcast_matmul(x)?.broadcast_matmul(&rxt)
}

/// One LOR draw for a batch: boxes of area scale `(eta, 1)` and aspect `[3/4, 4/3]`, flips with
/// probability 1/2 when `flip`.
pub fn random_resized_crop(x: &Tensor, eta: f64, flip: bool, rng: &mut StdRng) -> Result<Tensor> {
    let (b, _, h, w) = x.dims4()?;
    let boxes: Vec<CropBox> = (0..b).map(|_| sample_box(h, w, (eta, 1.0), (0.75, 4.0 / 3.0), rng)).collect();
    let flips: Vec<bool> = (0..b).map(|_| flip && rng.random_bool(0.5)).collect();
    crop_resize(x, &boxes, &flips, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn scale_and_ratio_one_on_a_square_image_is_the_identity() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 2, 9, 9), &dev).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let boxes: Vec<CropBox> = (0..3).map(|_| sample_box(9, 9, (1.0, 1.0), (1.0, 1.0), &mut rng)).collect();
        assert!(boxes.iter().all(|b| *b == (0, 0, 9, 9)));
        let y = crop_resize(&x, &boxes, &[false; 3], 9).unwrap();
        assert_eq!((x - y).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn crops_resize_like_pytorch_and_flip() {
        // Upsampling [0, 1, 2, 3] (a crop of 4 of 6) to 8 samples: PyTorch gives
        // 0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3 (offset by the crop start 1 here).
        let m = resample_matrix(6, 1, 4, 8, false);
        let v: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let y: Vec<f32> = (0..8).map(|o| (0..6).map(|i| m[o * 6 + i] * v[i]).sum()).collect();
        for (a, b) in y.iter().zip([1.0, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 4.0]) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
        let f = resample_matrix(6, 1, 4, 8, true);
        for o in 0..8 {
            assert_eq!(&f[o * 6..o * 6 + 6], &m[(7 - o) * 6..(7 - o) * 6 + 6]);
        }
        // Boxes stay inside the image and have area at least eta of it (or the fallback).
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let (t, l, h, w) = sample_box(28, 28, (0.5, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(t + h <= 28 && l + w <= 28 && h * w >= 28 * 28 / 2 - 28);
        }
        // Gradients reach the image.
        let x =
            candle_core::Var::from_tensor(&Tensor::ones((2, 1, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap())
                .unwrap();
        let y = random_resized_crop(x.as_tensor(), 0.5, true, &mut rng).unwrap();
        assert_eq!(y.dims(), &[2, 1, 8, 8]);
        let s = y.sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!((s - 128.0).abs() < 1e-3, "bilinear weights sum to one: {s}");
        assert!(y.sum_all().unwrap().backward().unwrap().get(x.as_tensor()).is_some());
    }
}
