//! Bilinear resampling with `align_corners = true` as two matrix products `M X M^T` (CF-ViT's
//! coarse image; PSS-Net's input resolution inside the network).

use candle_core::{Device, Result, Tensor};

/// The `[out, in]` matrix of 1-D linear interpolation with `align_corners = true`: output `o`
/// samples input position `o (in - 1) / (out - 1)` (PyTorch's `interpolate(mode="bilinear",
/// align_corners=True)`; no antialiasing).
pub fn interpolation_matrix(input: usize, out: usize) -> Vec<f32> {
    let mut m = vec![0f32; out * input];
    for o in 0..out {
        let x = if out > 1 { o as f64 * (input - 1) as f64 / (out - 1) as f64 } else { 0.0 };
        let i0 = (x.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let w1 = x - i0 as f64;
        m[o * input + i0] += (1.0 - w1) as f32;
        m[o * input + i1] += w1 as f32;
    }
    m
}

/// Resamples `[B, C, H, W]` images to `side x side`.
pub fn bilinear_align_corners(x: &Tensor, side: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h == side && w == side {
        return Ok(x.clone());
    }
    let dev: &Device = x.device();
    let my = Tensor::from_vec(interpolation_matrix(h, side), (side, h), dev)?.to_dtype(x.dtype())?;
    let mx = Tensor::from_vec(interpolation_matrix(w, side), (side, w), dev)?.to_dtype(x.dtype())?;
    // Rows then columns: (My X) Mx^T.
    my.broadcast_matmul(x)?.broadcast_matmul(&mx.t()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_align_corners_by_hand() {
        // 4 -> 3: positions 0, 1.5, 3.
        let m = interpolation_matrix(4, 3);
        assert_eq!(m, vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 1.0]);
        // A plane a + b y + c x is reproduced exactly (linear interpolation), corners kept.
        let dev = Device::Cpu;
        let (h, s) = (32, 16);
        let v: Vec<f32> = (0..h * h).map(|i| 1.0 + 0.5 * (i / h) as f32 - 0.25 * (i % h) as f32).collect();
        let x = Tensor::from_vec(v, (1, 1, h, h), &dev).expect("x");
        let y: Vec<f32> = bilinear_align_corners(&x, s).expect("y").flatten_all().expect("f").to_vec1().expect("v");
        let step = (h - 1) as f32 / (s - 1) as f32;
        for oy in 0..s {
            for ox in 0..s {
                let want = 1.0 + 0.5 * oy as f32 * step - 0.25 * ox as f32 * step;
                assert!((y[oy * s + ox] - want).abs() < 1e-4, "{oy},{ox}: {} vs {want}", y[oy * s + ox]);
            }
        }
    }
}
