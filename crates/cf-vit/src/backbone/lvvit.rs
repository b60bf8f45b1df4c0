//! LV-ViT (Jiang et al., "All Tokens Matter", 2021) as a CF-ViT backbone, with the official
//! names: the 4-conv stem `patch_embed.{conv1,bn1,conv2,bn2,conv3,bn3,proj}` (7x7 stride 2, two
//! 3x3, each 64 channels with BN + ReLU, then an 8x8 stride-8 projection: total stride 16),
//! `cls_token`, `pos_embed`, blocks without qkv bias whose residual branches are divided by
//! `skip_lam` = 2, `norm`, `head` and the token head `aux_head`.
//!
//! Inference logits (section 2.8): `cls + 0.25 max_t aux_t`, divided by 1.25 in the coarse
//! stage. The stem's BatchNorms are shared by both resolutions.

use super::{Stage, TokenBackbone, vit_macs};
use candle_core::{D, Module, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use compress_nn::layers::{BatchNorm2d, Conv2d, ConvSpec, LayerNorm, Linear};
use compress_nn::zoo::VitBlock;
use serde::{Deserialize, Serialize};

/// The shape of an LV-ViT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LvVitConfig {
    /// Side of the image whose grid `pos_embed` covers (the fine image).
    pub image_size: usize,
    /// Residual-stream width.
    pub embed: usize,
    /// Blocks.
    pub depth: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP hidden units.
    pub mlp: usize,
    /// Stem channels.
    pub stem: usize,
    /// Residual-branch divisor.
    pub skip_lam: f64,
    /// Classes.
    pub num_classes: usize,
}

impl LvVitConfig {
    /// LV-ViT-S: 384 wide, 16 blocks, 6 heads, MLP ratio 3, stem 64, skip_lam 2.
    pub fn small(image_size: usize, num_classes: usize) -> Self {
        Self { image_size, embed: 384, depth: 16, heads: 6, mlp: 1152, stem: 64, skip_lam: 2.0, num_classes }
    }

    /// Patch grid side of `image_size` (stride 16).
    pub fn grid(&self) -> usize {
        self.image_size / 16
    }
}

/// An LV-ViT classifier.
#[derive(Debug, Clone)]
pub struct LvVit {
    stem: Vec<(Conv2d, BatchNorm2d)>,
    proj: Conv2d,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<VitBlock>,
    norm: LayerNorm,
    head: Linear,
    aux_head: Linear,
    cfg: LvVitConfig,
}

impl LvVit {
    /// Builds the network from `vb`.
    pub fn new(cfg: &LvVitConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.image_size == 0 || !cfg.image_size.is_multiple_of(16) || cfg.heads == 0 {
            candle_core::bail!("LV-ViT needs an image side that is a multiple of 16 and at least one head")
        }
        if !cfg.embed.is_multiple_of(cfg.heads) {
            candle_core::bail!("LV-ViT width {} does not split into {} heads", cfg.embed, cfg.heads)
        }
        let pe = vb.pp("patch_embed");
        let c = cfg.stem;
        let stem = vec![
            (Conv2d::new(3, c, ConvSpec::same(7).stride(2), pe.pp("conv1"))?, BatchNorm2d::new(c, pe.pp("bn1"))?),
            (Conv2d::new(c, c, ConvSpec::same(3), pe.pp("conv2"))?, BatchNorm2d::new(c, pe.pp("bn2"))?),
            (Conv2d::new(c, c, ConvSpec::same(3), pe.pp("conv3"))?, BatchNorm2d::new(c, pe.pp("bn3"))?),
        ];
        let proj = Conv2d::new(
            c,
            cfg.embed,
            ConvSpec { padding: 0, bias: true, ..ConvSpec::same(8).stride(8) },
            pe.pp("proj"),
        )?;
        let tn = candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        let g = cfg.grid();
        let blocks = (0..cfg.depth)
            .map(|i| {
                VitBlock::new(cfg.embed, cfg.heads, cfg.embed / cfg.heads, cfg.mlp, false, vb.pp(format!("blocks.{i}")))
                    .map(|b| b.with_skip_lam(cfg.skip_lam))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            stem,
            proj,
            cls_token: vb.get_with_hints((1, 1, cfg.embed), "cls_token", tn)?,
            pos_embed: vb.get_with_hints((1, g * g + 1, cfg.embed), "pos_embed", tn)?,
            blocks,
            norm: LayerNorm::new(cfg.embed, 1e-6, vb.pp("norm"))?,
            head: Linear::timm(cfg.embed, cfg.num_classes, true, vb.pp("head"))?,
            aux_head: Linear::timm(cfg.embed, cfg.num_classes, true, vb.pp("aux_head"))?,
            cfg: cfg.clone(),
        })
    }
}

impl TokenBackbone for LvVit {
    fn dim(&self) -> usize {
        self.cfg.embed
    }

    fn depth(&self) -> usize {
        self.cfg.depth
    }

    fn num_classes(&self) -> usize {
        self.cfg.num_classes
    }

    fn embed(&self, img: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = img.clone();
        for (conv, bn) in &self.stem {
            x = bn.forward_t(&conv.forward(&x)?, train)?.relu()?;
        }
        self.proj.forward(&x)?.flatten_from(2)?.transpose(1, 2)?.contiguous()
    }

    fn cls_token(&self) -> &Tensor {
        &self.cls_token
    }

    fn pos_embed(&self) -> &Tensor {
        &self.pos_embed
    }

    fn block(&self, i: usize, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.blocks[i].forward_attn(x)
    }

    fn norm(&self, x: &Tensor) -> Result<Tensor> {
        self.norm.forward(x)
    }

    fn logits(&self, z: &Tensor, stage: Stage) -> Result<Tensor> {
        let t = z.dim(1)?;
        let cls = self.head.forward(&z.narrow(1, 0, 1)?.squeeze(1)?)?;
        let aux = self.aux_head.forward(&z.narrow(1, 1, t - 1)?)?.max(D::Minus2)?;
        let y = (cls + (aux * 0.25)?)?;
        match stage {
            Stage::Coarse => y / 1.25,
            Stage::Fine => Ok(y),
        }
    }

    fn embed_macs(&self, g: usize) -> u64 {
        // Stem at 8g x 8g after the stride-2 conv, projection on the g x g grid.
        let (s, c) = ((8 * g * 8 * g) as u64, self.cfg.stem as u64);
        s * c * 3 * 49 + 2 * s * c * c * 9 + (g * g) as u64 * c * 64 * self.cfg.embed as u64
    }

    fn blocks_macs(&self, t: usize) -> u64 {
        vit_macs(t, self.cfg.embed, self.cfg.depth, self.cfg.mlp)
    }

    fn head_macs(&self, t: usize) -> u64 {
        // Class head plus the token head on every patch token.
        (t as u64) * (self.cfg.embed * self.cfg.num_classes) as u64
    }
}
