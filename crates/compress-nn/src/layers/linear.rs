//! Fully connected layer `y = x W^T + b` on `[.., fin]` inputs (weight `[fout, fin]`).

use crate::count::record;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use compress_core::cost;

/// A linear layer, weights under `<prefix>.weight` and `<prefix>.bias`.
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
    fin: usize,
    fout: usize,
    bias: bool,
}

impl Linear {
    /// Builds the layer (PyTorch initialisation: uniform +-1/sqrt(fin) for weight and bias).
    pub fn new(fin: usize, fout: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let b = 1.0 / (fin as f64).sqrt();
        let w = vb.get_with_hints((fout, fin), "weight", candle_nn::Init::Uniform { lo: -b, up: b })?;
        let bias_t = if bias {
            Some(vb.get_with_hints(fout, "bias", candle_nn::Init::Uniform { lo: -b, up: b })?)
        } else {
            None
        };
        Ok(Self { inner: candle_nn::Linear::new(w, bias_t), fin, fout, bias })
    }

    /// The weight `[fout, fin]`.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let tokens = x.elem_count() / x.dim(candle_core::D::Minus1)?.max(1) / x.dim(0)?.max(1);
        record(cost::linear(self.fin, self.fout, tokens, self.bias));
        self.inner.forward(x)
    }
}
