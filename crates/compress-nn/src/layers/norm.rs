//! Normalisation layers: BatchNorm (candle-nn's, which trains correctly) and a LayerNorm built
//! from primitives so that it has a backward pass (candle-nn's fast LayerNorm has none).

use crate::count::record;
use candle_core::{D, Module, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use compress_core::cost;

/// BatchNorm over the channels of NCHW input; `weight`, `bias`, `running_mean`, `running_var`.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    inner: candle_nn::BatchNorm,
    c: usize,
}

impl BatchNorm2d {
    /// PyTorch defaults: eps 1e-5, momentum 0.1, affine.
    pub fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self { inner: candle_nn::batch_norm(c, candle_nn::BatchNormConfig::default(), vb)?, c })
    }
}

impl ModuleT for BatchNorm2d {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        record(cost::norm(self.c));
        self.inner.forward_t(x, train)
    }
}

/// `y = (x - mean) / sqrt(var + eps) * weight + bias` over the last dimension, with gradients.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Builds the layer over `dim` features (weight 1, bias 0), eps as given (1e-6 in timm ViTs).
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        record(cost::norm(self.weight.dim(0)?));
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}
