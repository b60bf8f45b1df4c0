//! ViT / DeiT (Dosovitskiy et al. 2021; Touvron et al. 2021) with timm's tensor names:
//! `patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.{i}.norm1|attn.qkv|attn.proj|norm2|
//! mlp.fc1|mlp.fc2`, `norm`, `head`. Pre-norm blocks, exact (erf) GELU, LayerNorm eps 1e-6.
//! LayerNorm, softmax and GELU are the toolkit's fused ops with their backward (candle's fused
//! LayerNorm and softmax have none). Position embeddings can be resampled to a new
//! grid ([`resize_pos_embed`]).
//!
//! Widths: `embed` (the residual stream; not prunable, LayerNorm normalises over it),
//! `blocks.{i}.heads` (attention heads of `head_dim` each) and `blocks.{i}.mlp` (hidden units).

use crate::count::record;
use crate::error::{Result, config_err};
use crate::layers::{Conv2d, ConvSpec, LayerNorm, Linear};
use crate::network::{AnalyticCost, ArchConfig, Architecture, replace_widths};
use crate::structure::{ChannelGroup, Member, Widths};
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_core::cost::{self, Cost};
use std::collections::HashMap;

/// Configuration of a ViT.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VitConfig {
    /// Input side.
    pub image_size: usize,
    /// Patch side.
    pub patch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Classes.
    pub num_classes: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Channels per attention head.
    pub head_dim: usize,
    widths: Widths,
}

impl VitConfig {
    /// A ViT with `depth` blocks of width `embed`, `heads` heads and MLP ratio `mlp_ratio`.
    pub fn new(
        image_size: usize,
        patch: usize,
        embed: usize,
        depth: usize,
        heads: usize,
        mlp: usize,
        num_classes: usize,
    ) -> Result<Self> {
        if patch == 0 || image_size == 0 || !image_size.is_multiple_of(patch) {
            return Err(config_err(format!("image side {image_size} is not a multiple of the patch {patch}")));
        }
        if heads == 0 || !embed.is_multiple_of(heads) || depth == 0 || mlp == 0 || num_classes == 0 {
            return Err(config_err(format!("embed {embed} must split into {heads} heads; depth, mlp, classes >= 1")));
        }
        let mut widths = Widths::new();
        widths.insert("embed".into(), embed);
        for i in 0..depth {
            widths.insert(format!("blocks.{i}.heads"), heads);
            widths.insert(format!("blocks.{i}.mlp"), mlp);
        }
        Ok(Self { image_size, patch, in_channels: 3, num_classes, depth, head_dim: embed / heads, widths })
    }

    /// DeiT-Tiny: 192 wide, 12 blocks, 3 heads, 224/16.
    pub fn deit_tiny(num_classes: usize) -> Result<Self> {
        Self::new(224, 16, 192, 12, 3, 768, num_classes)
    }

    /// DeiT-Small: 384 wide, 12 blocks, 6 heads, 224/16 (4.6 G MACs, 22 M params).
    pub fn deit_small(num_classes: usize) -> Result<Self> {
        Self::new(224, 16, 384, 12, 6, 1536, num_classes)
    }

    /// DeiT-Base: 768 wide, 12 blocks, 12 heads, 224/16.
    pub fn deit_base(num_classes: usize) -> Result<Self> {
        Self::new(224, 16, 768, 12, 12, 3072, num_classes)
    }

    /// A tiny ViT for 1 x 28 x 28 MNIST: patch 7 (4 x 4 grid), 64 wide, 4 blocks, 4 heads.
    pub fn mnist_tiny() -> Result<Self> {
        Ok(Self::new(28, 7, 64, 4, 4, 128, 10)?.channels(1))
    }

    /// The same network on inputs of `c` channels.
    pub fn channels(mut self, c: usize) -> Self {
        self.in_channels = c;
        self
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch
    }

    /// Tokens: patches plus the class token.
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    fn embed(&self) -> usize {
        self.widths["embed"]
    }

    fn heads(&self, i: usize) -> usize {
        self.widths[&format!("blocks.{i}.heads")]
    }

    fn mlp(&self, i: usize) -> usize {
        self.widths[&format!("blocks.{i}.mlp")]
    }
}

impl ArchConfig for VitConfig {
    fn widths(&self) -> &Widths {
        &self.widths
    }

    fn with_widths(&self, widths: Widths) -> Result<Self> {
        Ok(Self { widths: replace_widths(&self.widths, widths)?, ..self.clone() })
    }

    fn groups(&self) -> Vec<ChannelGroup> {
        let mut e = ChannelGroup::new("embed", self.embed())
            .fixed()
            .produced_by("patch_embed.proj", true)
            .with(Member { axis: 2, ..Member::produce("cls_token") })
            .with(Member { axis: 2, ..Member::produce("pos_embed") });
        let mut out = Vec::new();
        for i in 0..self.depth {
            let p = format!("blocks.{i}");
            e = e
                .produced_by(&format!("{p}.norm1"), true)
                .consumed_by(&format!("{p}.attn.qkv"))
                .produced_by(&format!("{p}.attn.proj"), true)
                .produced_by(&format!("{p}.norm2"), true)
                .consumed_by(&format!("{p}.mlp.fc1"))
                .produced_by(&format!("{p}.mlp.fc2"), true);
            let (h, hd) = (self.heads(i), self.head_dim);
            out.push(
                ChannelGroup::new(format!("{p}.heads"), h)
                    .with(Member::produce(format!("{p}.attn.qkv.weight")).unit(hd).copies(3, h * hd))
                    .with(Member::produce(format!("{p}.attn.qkv.bias")).unit(hd).copies(3, h * hd))
                    .with(Member::consume(format!("{p}.attn.proj.weight")).unit(hd)),
            );
            out.push(
                ChannelGroup::new(format!("{p}.mlp"), self.mlp(i))
                    .produced_by(&format!("{p}.mlp.fc1"), true)
                    .consumed_by(&format!("{p}.mlp.fc2")),
            );
        }
        out.insert(0, e.produced_by("norm", true).consumed_by("head"));
        out
    }

    fn input_shape(&self) -> [usize; 3] {
        [self.in_channels, self.image_size, self.image_size]
    }
}

impl AnalyticCost for VitConfig {
    fn cost(&self) -> Cost {
        let (d, t, g) = (self.embed(), self.tokens(), self.grid());
        let mut c = cost::conv2d(self.in_channels, d, self.patch, 1, g, g, true);
        c += Cost { macs: 0, params: (d + t * d) as u64, elementwise: 0 };
        for i in 0..self.depth {
            let inner = self.heads(i) * self.head_dim;
            c += cost::norm(d) + cost::linear(d, 3 * inner, t, true);
            c += Cost { macs: 2 * (t * t * inner) as u64, params: 0, elementwise: 0 };
            c += cost::linear(inner, d, t, true) + cost::norm(d);
            c += cost::linear(d, self.mlp(i), t, true) + cost::linear(self.mlp(i), d, t, true);
        }
        c + cost::norm(d) + cost::linear(d, self.num_classes, 1, true)
    }
}

/// One pre-norm transformer block: `x + attn(norm1(x)) / lam`, then `x + mlp(norm2(x)) / lam`
/// (`lam` = 1 for ViT/DeiT; LV-ViT's `skip_lam` scales its residual branches by 1/2).
#[derive(Debug, Clone)]
pub struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    head_dim: usize,
    skip_lam: f64,
}

impl Block {
    /// A block of width `dim` with `heads` heads of `head_dim` channels and `mlp` hidden units,
    /// under timm's names (`norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`) and
    /// with timm's initialisation (linear weights N(0, 0.02^2), biases 0).
    pub fn new(
        dim: usize,
        heads: usize,
        head_dim: usize,
        mlp: usize,
        qkv_bias: bool,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let inner = heads * head_dim;
        Ok(Self {
            norm1: LayerNorm::new(dim, 1e-6, vb.pp("norm1"))?,
            qkv: Linear::timm(dim, 3 * inner, qkv_bias, vb.pp("attn.qkv"))?,
            proj: Linear::timm(inner, dim, true, vb.pp("attn.proj"))?,
            norm2: LayerNorm::new(dim, 1e-6, vb.pp("norm2"))?,
            fc1: Linear::timm(dim, mlp, true, vb.pp("mlp.fc1"))?,
            fc2: Linear::timm(mlp, dim, true, vb.pp("mlp.fc2"))?,
            heads,
            head_dim,
            skip_lam: 1.0,
        })
    }

    /// The same block with both residual branches divided by `lam` (LV-ViT's `skip_lam`).
    pub fn with_skip_lam(mut self, lam: f64) -> Self {
        self.skip_lam = lam;
        self
    }

    /// Hidden units of the MLP.
    pub fn mlp_hidden(&self) -> usize {
        self.fc1.weight().dims()[0]
    }

    /// Self-attention of `[B, T, D]` tokens and its post-softmax map `[B, H, T, T]`.
    fn attention(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (b, t, _) = x.dims3()?;
        let (h, hd) = (self.heads, self.head_dim);
        let qkv = self.qkv.forward(x)?.reshape((b, t, 3, h, hd))?.permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)? * (hd as f64).powf(-0.5))?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let attn = compress_core::ops::softmax_last(&q.matmul(&k.t()?)?)?;
        record(Cost { macs: 2 * (t * t * h * hd) as u64, params: 0, elementwise: 0 });
        let y = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h * hd))?;
        Ok((self.proj.forward(&y)?, attn))
    }

    /// The block's output and its attention map `[B, H, T, T]` (what CF-ViT scores regions by).
    pub fn forward_attn(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (a, attn) = self.attention(&self.norm1.forward(x)?)?;
        let x = (x + self.scaled(a)?)?;
        let m = self.fc2.forward(&compress_core::ops::gelu_erf(&self.fc1.forward(&self.norm2.forward(&x)?)?)?)?;
        Ok(((x + self.scaled(m)?)?, attn))
    }

    fn scaled(&self, t: Tensor) -> candle_core::Result<Tensor> {
        if self.skip_lam == 1.0 { Ok(t) } else { t / self.skip_lam }
    }

    /// The block's output.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.forward_attn(x)?.0)
    }
}

/// A ViT / DeiT classifier (class-token pooling).
#[derive(Debug, Clone)]
pub struct Vit {
    patch_embed: Conv2d,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    head: Linear,
    embed: usize,
}

impl Architecture for Vit {
    type Config = VitConfig;

    fn build(cfg: &VitConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = cfg.embed();
        let spec = ConvSpec {
            kernel: cfg.patch,
            stride: cfg.patch,
            padding: 0,
            groups: 1,
            bias: true,
            init: Default::default(),
        };
        let patch_embed = Conv2d::new(cfg.in_channels, d, spec, vb.pp("patch_embed.proj"))?;
        let tn = candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        let cls_token = vb.get_with_hints((1, 1, d), "cls_token", tn)?;
        let pos_embed = vb.get_with_hints((1, cfg.tokens(), d), "pos_embed", tn)?;
        let mut blocks = Vec::new();
        for i in 0..cfg.depth {
            blocks.push(Block::new(d, cfg.heads(i), cfg.head_dim, cfg.mlp(i), true, vb.pp(format!("blocks.{i}")))?);
        }
        Ok(Self {
            patch_embed,
            cls_token,
            pos_embed,
            blocks,
            norm: LayerNorm::new(d, 1e-6, vb.pp("norm"))?,
            head: Linear::timm(d, cfg.num_classes, true, vb.pp("head"))?,
            embed: d,
        })
    }
}

impl Vit {
    /// Patch embeddings `[B, N, D]` of images `[B, C, H, W]` (any side divisible by the patch;
    /// no class token, no position embedding).
    pub fn patch_tokens(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.patch_embed.forward(x)?.flatten_from(2)?.transpose(1, 2)?.contiguous()
    }

    /// The patch embedding (a `patch x patch` convolution of stride `patch`).
    pub fn patch_embed(&self) -> &Conv2d {
        &self.patch_embed
    }

    /// The class token `[1, 1, D]`.
    pub fn cls_token(&self) -> &Tensor {
        &self.cls_token
    }

    /// The position embedding `[1, T, D]` (class token first).
    pub fn pos_embed(&self) -> &Tensor {
        &self.pos_embed
    }

    /// The transformer blocks.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// The final LayerNorm.
    pub fn norm(&self) -> &LayerNorm {
        &self.norm
    }

    /// The classifier.
    pub fn head(&self) -> &Linear {
        &self.head
    }

    /// The width of the residual stream.
    pub fn embed_dim(&self) -> usize {
        self.embed
    }

    /// The normalised token sequence `[B, T, D]` (before the head): what CF-ViT's coarse stage
    /// and attention-based methods read.
    pub fn tokens(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let p = self.patch_embed.forward(x)?;
        let b = p.dim(0)?;
        let p = p.flatten_from(2)?.transpose(1, 2)?;
        record(Cost { macs: 0, params: (self.embed + self.pos_embed.elem_count()) as u64, elementwise: 0 });
        let cls = self.cls_token.broadcast_as((b, 1, self.embed))?;
        let mut h = Tensor::cat(&[&cls, &p], 1)?.broadcast_add(&self.pos_embed)?;
        for blk in &self.blocks {
            h = blk.forward(&h)?;
        }
        self.norm.forward(&h)
    }
}

impl ModuleT for Vit {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        let h = self.tokens(x)?;
        self.head.forward(&h.narrow(1, 0, 1)?.squeeze(1)?)
    }
}

/// PyTorch's bicubic convolution weights (A = -0.75) for fractional offset `t`.
fn bicubic_weights(t: f64) -> [f64; 4] {
    let a = -0.75;
    let near = |x: f64| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Resamples a `g x g` grid of `d`-vectors (row-major) to `n x n` with PyTorch's
/// `interpolate(mode="bicubic", align_corners=False)`.
fn resample_grid(src: &[f32], g: usize, n: usize, d: usize) -> Vec<f32> {
    let scale = g as f64 / n as f64;
    let taps = |o: usize| -> [(usize, f64); 4] {
        let x = (o as f64 + 0.5) * scale - 0.5;
        let i = x.floor();
        let w = bicubic_weights(x - i);
        std::array::from_fn(|k| ((i as i64 - 1 + k as i64).clamp(0, g as i64 - 1) as usize, w[k]))
    };
    let mut out = vec![0f32; n * n * d];
    for oy in 0..n {
        let ty = taps(oy);
        for ox in 0..n {
            let tx = taps(ox);
            for c in 0..d {
                let mut acc = 0f64;
                for &(iy, wy) in &ty {
                    for &(ix, wx) in &tx {
                        acc += wy * wx * f64::from(src[(iy * g + ix) * d + c]);
                    }
                }
                out[(oy * n + ox) * d + c] = acc as f32;
            }
        }
    }
    out
}

/// Adapts a ViT's weights to another input side: the patch grid of `pos_embed` is resampled
/// bicubically (the class token's embedding is kept), everything else is unchanged.
pub fn resize_pos_embed(
    cfg: &VitConfig,
    tensors: &HashMap<String, Tensor>,
    image_size: usize,
) -> Result<(VitConfig, HashMap<String, Tensor>)> {
    if image_size == 0 || !image_size.is_multiple_of(cfg.patch) {
        return Err(config_err(format!("image side {image_size} is not a multiple of the patch {}", cfg.patch)));
    }
    let new = VitConfig { image_size, ..cfg.clone() };
    let pos = tensors
        .get("pos_embed")
        .ok_or_else(|| crate::NnError::MissingTensor { name: "pos_embed".into(), context: None })?;
    let (g, n, d) = (cfg.grid(), new.grid(), cfg.embed());
    let v: Vec<f32> = pos.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
    if v.len() != (g * g + 1) * d {
        return Err(config_err(format!("pos_embed has {} values, expected {}", v.len(), (g * g + 1) * d)));
    }
    let mut out = v[..d].to_vec();
    out.extend(resample_grid(&v[d..], g, n, d));
    let mut t = tensors.clone();
    t.insert("pos_embed".into(), Tensor::from_vec(out, (1, n * n + 1, d), pos.device())?);
    Ok((new, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_resampling_matches_pytorch_by_hand() {
        let g = 4;
        let src: Vec<f32> = (0..g * g).map(|i| (i / g) as f32 * 2.0 + (i % g) as f32).collect();
        assert_eq!(resample_grid(&src, g, g, 1), src);
        // Output 3 of 8 samples x = 3.5 * 0.5 - 0.5 = 1.25: taps 0..3 with weights
        // (-0.10546875, 0.87890625, 0.26171875, -0.03515625) for A = -0.75, so a ramp 0,1,2,3
        // gives 1.296875 (A = -0.75 does not reproduce lines exactly; PyTorch agrees), and the
        // plane 2y + x gives 3 * 1.296875.
        let up = resample_grid(&src, g, 8, 1);
        assert!((up[3 * 8 + 3] - 3.890625).abs() < 1e-6, "{}", up[3 * 8 + 3]);
        let ones = resample_grid(&[1.0; 16], g, 7, 1);
        assert!(ones.iter().all(|v| (v - 1.0).abs() < 1e-6));
        let w = bicubic_weights(0.3);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
