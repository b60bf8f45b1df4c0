//! DeiT (the zoo's ViT) as a CF-ViT backbone: a linear patch embedding (stride = patch), class
//! token, timm blocks, `head(LN(x)[0])`.

use super::{Stage, TokenBackbone, vit_macs};
use candle_core::{Module, Result, Tensor};
use compress_nn::zoo::Vit;

impl TokenBackbone for Vit {
    fn dim(&self) -> usize {
        self.embed_dim()
    }

    fn depth(&self) -> usize {
        self.blocks().len()
    }

    fn num_classes(&self) -> usize {
        self.head().weight().dims()[0]
    }

    fn embed(&self, img: &Tensor, _train: bool) -> Result<Tensor> {
        self.patch_tokens(img)
    }

    fn cls_token(&self) -> &Tensor {
        Vit::cls_token(self)
    }

    fn pos_embed(&self) -> &Tensor {
        Vit::pos_embed(self)
    }

    fn block(&self, i: usize, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.blocks()[i].forward_attn(x)
    }

    fn norm(&self, x: &Tensor) -> Result<Tensor> {
        Vit::norm(self).forward(x)
    }

    fn logits(&self, z: &Tensor, _stage: Stage) -> Result<Tensor> {
        self.head().forward(&z.narrow(1, 0, 1)?.squeeze(1)?)
    }

    fn embed_macs(&self, g: usize) -> u64 {
        (g * g) as u64 * self.patch_embed().weight().elem_count() as u64
    }

    fn blocks_macs(&self, t: usize) -> u64 {
        let mlp = self.blocks().first().map_or(0, |b| b.mlp_hidden());
        vit_macs(t, self.embed_dim(), self.blocks().len(), mlp)
    }

    fn head_macs(&self, _t: usize) -> u64 {
        self.head().weight().elem_count() as u64
    }
}
