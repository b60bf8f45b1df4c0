//! What CF-ViT needs of a vision transformer (section 7's `TokenBackbone`): a patch embedding
//! that accepts both resolutions, the class token, blocks that return their attention map, the
//! final norm and the classifier, plus their MAC counts. Implemented for DeiT ([`deit`], the zoo's
//! ViT) and LV-ViT ([`lvvit`]).

pub mod deit;
pub mod lvvit;

use candle_core::{Result, Tensor};

pub use lvvit::{LvVit, LvVitConfig};

/// Which stage a set of logits belongs to (LV-ViT scales its coarse logits, section 2.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The coarse stage.
    Coarse,
    /// The fine stage.
    Fine,
}

/// A transformer classifier CF-ViT can run at two resolutions.
pub trait TokenBackbone: Send + Sync {
    /// Residual-stream width `D`.
    fn dim(&self) -> usize;
    /// Number of blocks `L`.
    fn depth(&self) -> usize;
    /// Classes.
    fn num_classes(&self) -> usize;
    /// Patch embeddings `[B, N, D]` of `[B, C, S, S]` images (any side that is a multiple of the
    /// embedding's stride; no class token, no position embedding).
    fn embed(&self, img: &Tensor, train: bool) -> Result<Tensor>;
    /// The class token `[1, 1, D]`.
    fn cls_token(&self) -> &Tensor;
    /// The backbone's own position table `[1, 1 + N_f, D]`: CF-ViT's fine table `P_f`.
    fn pos_embed(&self) -> &Tensor;
    /// Block `i` on `[B, T, D]` tokens: the output and the post-softmax attention `[B, H, T, T]`.
    fn block(&self, i: usize, x: &Tensor) -> Result<(Tensor, Tensor)>;
    /// The final LayerNorm.
    fn norm(&self, x: &Tensor) -> Result<Tensor>;
    /// Logits `[B, K]` from normalised tokens `[B, T, D]` (class token first).
    fn logits(&self, z: &Tensor, stage: Stage) -> Result<Tensor>;
    /// MACs of embedding a `g x g` patch grid (one image).
    fn embed_macs(&self, g: usize) -> u64;
    /// MACs of all blocks on `t` tokens (section 2.9: `L (4 T D^2 + 2 T^2 D + 2 r T D^2)`); the
    /// default counts standard blocks with an MLP ratio `r = 4` (override it otherwise).
    fn blocks_macs(&self, t: usize) -> u64 {
        vit_macs(t, self.dim(), self.depth(), 4 * self.dim())
    }
    /// MACs of the classifier on a sequence of `t` tokens; the default: one linear layer on
    /// the class token, `D K`.
    fn head_macs(&self, _t: usize) -> u64 {
        (self.dim() * self.num_classes()) as u64
    }
}

/// Section 2.9's block cost: `depth (4 T D^2 + 2 T^2 D + 2 r T D^2)` with `r = mlp / D`
/// (written with the MLP's hidden width so non-integer ratios count exactly).
pub fn vit_macs(tokens: usize, dim: usize, depth: usize, mlp_hidden: usize) -> u64 {
    let (t, d, h) = (tokens as u64, dim as u64, mlp_hidden as u64);
    depth as u64 * (4 * t * d * d + 2 * t * t * d + 2 * t * d * h)
}
