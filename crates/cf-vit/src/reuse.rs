//! Feature reuse (section 2.5): `R = MLP(LN(z_c[1:]))`, upsampled (nearest) from the coarse to
//! the fine grid and added to the fine patch embeddings.

use crate::error::Result;
use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use compress_nn::layers::{LayerNorm, Linear};

/// `LN -> Linear(D, rD) -> GELU -> Linear(rD, D)` under `reuse.{norm,fc1,fc2}`.
#[derive(Debug, Clone)]
pub struct ReuseMlp {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl ReuseMlp {
    /// The MLP for width `dim` and hidden ratio `ratio`.
    pub fn new(dim: usize, ratio: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: LayerNorm::new(dim, 1e-6, vb.pp("norm"))?,
            fc1: Linear::timm(dim, ratio * dim, true, vb.pp("fc1"))?,
            fc2: Linear::timm(ratio * dim, dim, true, vb.pp("fc2"))?,
        })
    }

    /// `[B, n^2, D]` coarse output tokens (class token excluded) to `[B, 4 n^2, D]` reuse
    /// features in fine-grid order: each coarse token copied to its four children.
    pub fn forward(&self, z: &Tensor, n: usize) -> Result<Tensor> {
        let r = self.fc2.forward(&compress_core::ops::gelu_erf(&self.fc1.forward(&self.norm.forward(z)?)?)?)?;
        Ok(upsample_nearest(&r, n)?)
    }
}

/// `[B, n^2, D]` tokens on an `n x n` grid to `[B, 4 n^2, D]` on the `2n x 2n` grid, nearest.
pub fn upsample_nearest(r: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    let (b, _, d) = r.dims3()?;
    r.reshape((b, n, 1, n, 1, d))?.broadcast_as((b, n, 2, n, 2, d))?.reshape((b, 4 * n * n, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regions::child_indices;

    #[test]
    fn upsampling_copies_each_token_to_its_children() {
        let n = 3;
        let r = Tensor::arange(0f32, (n * n * 2) as f32, &candle_core::Device::Cpu)
            .expect("r")
            .reshape((1, n * n, 2))
            .expect("r");
        let up: Vec<Vec<f32>> = upsample_nearest(&r, n).expect("up").squeeze(0).expect("s").to_vec2().expect("v");
        for j in 0..n * n {
            for c in child_indices(j, n) {
                assert_eq!(up[c], vec![(2 * j) as f32, (2 * j + 1) as f32]);
            }
        }
    }
}
