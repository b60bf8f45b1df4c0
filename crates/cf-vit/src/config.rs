//! The CF-ViT hyperparameters of section 2 (grid sides, selection ratio, EMA, reuse MLP).

use crate::error::{CfVitError, Result};
use serde::{Deserialize, Serialize};

/// How a CF-ViT splits its input and re-uses the coarse stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CfVitConfig {
    /// `n`: the coarse grid is `n x n` tokens, the fine grid `2n x 2n`.
    pub coarse_side: usize,
    /// Stride of the shared patch embedding (16 for DeiT/LV-ViT): the coarse image is
    /// `patch * n` pixels, the fine image `2 * patch * n`.
    pub patch: usize,
    /// Fraction of coarse patches re-split (alpha = 0.5, hard-coded officially).
    pub alpha: f64,
    /// EMA factor of the global class attention (beta = 0.99).
    pub beta: f64,
    /// First block (0-based) whose attention enters the EMA (3 for DeiT-S / LV-ViT-S).
    pub ema_from_layer: usize,
    /// Hidden width of the reuse MLP in units of the embedding width (4 DeiT, 3 LV-ViT).
    pub reuse_ratio: usize,
    /// Add the fine position table while selection is off (true: the recommended default; false:
    /// the official DeiT code's behaviour during epochs 0-200).
    pub pos_fine_without_selection: bool,
}

impl CfVitConfig {
    /// CF-ViT on DeiT-S with an `n x n` coarse grid (n = 7 or 9).
    pub fn deit_s(n: usize) -> Self {
        Self {
            coarse_side: n,
            patch: 16,
            alpha: 0.5,
            beta: 0.99,
            ema_from_layer: 3,
            reuse_ratio: 4,
            pos_fine_without_selection: true,
        }
    }

    /// CF-ViT on LV-ViT-S (reuse MLP ratio 3).
    pub fn lvvit_s(n: usize) -> Self {
        Self { reuse_ratio: 3, ..Self::deit_s(n) }
    }

    /// The CPU-scale setting of section 9: 32-px MNIST, patch 4, coarse 4 x 4, fine 8 x 8, EMA
    /// over blocks 1..3, reuse ratio 2 (the reference run's choice).
    pub fn mini() -> Self {
        Self { coarse_side: 4, patch: 4, ema_from_layer: 1, reuse_ratio: 2, ..Self::deit_s(4) }
    }

    /// Checks the configuration is possible for a backbone of `depth` blocks.
    pub fn validate(&self, depth: usize) -> Result<()> {
        if self.coarse_side == 0 || self.patch == 0 {
            return Err(CfVitError::Config("the coarse grid side and the patch must be at least 1".into()));
        }
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(CfVitError::Config(format!("alpha {} is not in (0, 1]", self.alpha)));
        }
        if !(0.0..1.0).contains(&self.beta) {
            return Err(CfVitError::Config(format!("beta {} is not in [0, 1)", self.beta)));
        }
        if self.ema_from_layer >= depth {
            return Err(CfVitError::Config(format!(
                "the class-attention EMA starts at block {} of a {depth}-block backbone",
                self.ema_from_layer
            )));
        }
        if self.reuse_ratio == 0 {
            return Err(CfVitError::Config("the reuse MLP needs a ratio of at least 1".into()));
        }
        Ok(())
    }

    /// Coarse tokens `N_c = n^2`.
    pub fn coarse_tokens(&self) -> usize {
        self.coarse_side * self.coarse_side
    }

    /// Fine tokens `N_f = 4 N_c`.
    pub fn fine_tokens(&self) -> usize {
        4 * self.coarse_tokens()
    }

    /// Side of the coarse image (`patch * n`).
    pub fn coarse_image(&self) -> usize {
        self.patch * self.coarse_side
    }

    /// Side of the fine image (`2 * patch * n`).
    pub fn fine_image(&self) -> usize {
        2 * self.coarse_image()
    }

    /// Re-split coarse patches `k = ceil(alpha N_c)`.
    pub fn k(&self) -> usize {
        ((self.alpha * self.coarse_tokens() as f64).ceil() as usize).clamp(1, self.coarse_tokens())
    }

    /// Fine-stage sequence length with selection on: `1 + 4k + (N_c - k)`.
    pub fn fine_len(&self) -> usize {
        1 + 4 * self.k() + self.coarse_tokens() - self.k()
    }
}
