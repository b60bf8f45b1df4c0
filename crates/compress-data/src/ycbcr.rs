//! The luma channel of ITU-R BT.601, on which SR papers report PSNR and SSIM.
//!
//! `Y = 16 + (65.481 R + 128.553 G + 24.966 B)` for R, G, B in [0, 1]; Y lies in [16, 235].

use candle_core::{Result, Tensor};

/// BT.601 luma weights applied to R, G, B in [0, 1].
pub const BT601: [f64; 3] = [65.481, 128.553, 24.966];

/// Y (in [16, 235]) of one pixel with R, G, B in [0, 1].
pub fn luma(r: f64, g: f64, b: f64) -> f64 {
    16.0 + BT601[0] * r + BT601[1] * g + BT601[2] * b
}

/// Y of an `[N, 3, H, W]` tensor in [0, 1], as `[N, 1, H, W]` in [16, 235].
/// A one-channel input is taken to be Y already, scaled to [0, 255].
pub fn y_channel(rgb: &Tensor) -> Result<Tensor> {
    let (_, c, _, _) = rgb.dims4()?;
    if c == 1 {
        return rgb.affine(255.0, 0.0);
    }
    let r = rgb.narrow(1, 0, 1)?;
    let g = rgb.narrow(1, 1, 1)?;
    let b = rgb.narrow(1, 2, 1)?;
    (r.affine(BT601[0], 16.0)? + g.affine(BT601[1], 0.0)?)? + b.affine(BT601[2], 0.0)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn black_white_and_primaries() {
        assert_eq!(luma(0.0, 0.0, 0.0), 16.0);
        assert!((luma(1.0, 1.0, 1.0) - 235.0).abs() < 1e-9);
        let t = Tensor::from_vec(vec![1f32, 0.0, 0.0, 1.0, 0.0, 0.0], (1, 3, 1, 2), &Device::Cpu).expect("t");
        let y: Vec<f32> = y_channel(&t).expect("y").flatten_all().expect("f").to_vec1().expect("v");
        assert!((y[0] - 81.481).abs() < 1e-4 && (y[1] - 144.553).abs() < 1e-4, "{y:?}");
    }
}
