//! Sub-pixel upsampling (Shi et al. 2016) and PReLU.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// PyTorch's `pixel_shuffle`: `[N, C r^2, H, W] -> [N, C, H r, W r]`, input channel
/// `c r^2 + i r + j` going to output `(c, h r + i, w r + j)`.
pub fn pixel_shuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    let (n, crr, h, w) = x.dims4()?;
    if r == 0 || !crr.is_multiple_of(r * r) {
        candle_core::bail!("pixel_shuffle: {crr} channels are not a multiple of {r}^2")
    }
    let c = crr / (r * r);
    x.reshape((n, c, r, r, h, w))?.permute((0, 1, 4, 2, 5, 3))?.reshape((n, c, h * r, w * r))
}

/// `PReLU(x) = max(0, x) + a min(0, x)` with one learned slope `a` (PyTorch default, a = 0.25).
#[derive(Debug, Clone)]
pub struct PRelu {
    a: Tensor,
}

impl PRelu {
    /// One shared slope under `<prefix>.weight`.
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self { a: vb.get_with_hints(1, "weight", candle_nn::Init::Const(0.25))? })
    }
}

impl Module for PRelu {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::count::record(compress_core::cost::Cost { macs: 0, params: 1, elementwise: 0 });
        let neg = x.minimum(0f32)?.broadcast_mul(&self.a)?;
        x.relu()? + neg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn pixel_shuffle_matches_pytorch_layout() {
        // 4 channels of 1x1 -> one 2x2 channel laid out row-major.
        let x = Tensor::from_vec(vec![1f32, 2., 3., 4.], (1, 4, 1, 1), &Device::Cpu).expect("x");
        let y = pixel_shuffle(&x, 2).expect("ps");
        assert_eq!(y.dims(), &[1, 1, 2, 2]);
        assert_eq!(y.flatten_all().expect("f").to_vec1::<f32>().expect("v"), vec![1., 2., 3., 4.]);
        let x = Tensor::arange(0f32, 16., &Device::Cpu).expect("a").reshape((1, 4, 2, 2)).expect("r");
        let y = pixel_shuffle(&x, 2).expect("ps").flatten_all().expect("f").to_vec1::<f32>().expect("v");
        // out(h*2+i, w*2+j) = in(c=i*2+j, h, w)
        assert_eq!(y, vec![0., 4., 1., 5., 8., 12., 9., 13., 2., 6., 3., 7., 10., 14., 11., 15.]);
        assert!(pixel_shuffle(&x, 3).is_err());
    }
}
