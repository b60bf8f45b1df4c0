//! Fully connected layer `y = x W^T + b` on `[.., fin]` inputs (weight `[fout, fin]`).

use crate::count::record_layer;
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
    replacement: Option<super::Replacement>,
    /// The variable prefix (what the per-layer count names the layer by).
    prefix: String,
}

impl Linear {
    /// Builds the layer (PyTorch initialisation: uniform +-1/sqrt(fin) for weight and bias).
    pub fn new(fin: usize, fout: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let b = 1.0 / (fin as f64).sqrt();
        let u = candle_nn::Init::Uniform { lo: -b, up: b };
        Self::with_init(fin, fout, bias, u, u, vb)
    }

    /// Weight `N(0, std^2)`, bias 0: torchvision's classifier initialisation (MobileNetV2).
    pub fn normal(fin: usize, fout: usize, std: f64, bias: bool, vb: VarBuilder) -> Result<Self> {
        let w = candle_nn::Init::Randn { mean: 0.0, stdev: std };
        Self::with_init(fin, fout, bias, w, candle_nn::Init::Const(0.0), vb)
    }

    /// timm's transformer initialisation: weight `trunc_normal_(std=0.02)` (truncated at +-2,
    /// i.e. 100 standard deviations: a plain normal), bias 0.
    pub fn timm(fin: usize, fout: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let w = candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        Self::with_init(fin, fout, bias, w, candle_nn::Init::Const(0.0), vb)
    }

    /// Weight `kaiming_normal_(mode="fan_in", nonlinearity="relu")` (std `sqrt(2 / fin)`), bias 0.
    pub fn kaiming(fin: usize, fout: usize, vb: VarBuilder) -> Result<Self> {
        Self::with_init(fin, fout, true, candle_nn::init::DEFAULT_KAIMING_NORMAL, candle_nn::Init::Const(0.0), vb)
    }

    fn with_init(
        fin: usize,
        fout: usize,
        bias: bool,
        w_init: candle_nn::Init,
        b_init: candle_nn::Init,
        vb: VarBuilder,
    ) -> Result<Self> {
        let w = vb.get_with_hints((fout, fin), "weight", w_init)?;
        let bias_t = if bias { Some(vb.get_with_hints(fout, "bias", b_init)?) } else { None };
        let replacement = super::replace::lookup(&vb.prefix());
        Ok(Self { inner: candle_nn::Linear::new(w, bias_t), fin, fout, bias, replacement, prefix: vb.prefix() })
    }

    /// The weight `[fout, fin]`.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }
}

impl Linear {
    /// The layer's forward with another weight of the same shape (a fake-quantized copy): the
    /// bias, the probe and the cost count are the layer's own.
    pub fn forward_with_weight(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        if weight.dims() != [self.fout, self.fin] {
            candle_core::bail!("linear weight {:?} given for a {} -> {} layer", weight.dims(), self.fin, self.fout)
        }
        crate::probe::record_linear(x)?;
        let tokens = x.elem_count() / x.dim(candle_core::D::Minus1)?.max(1) / x.dim(0)?.max(1);
        let bias_adds = if self.bias { (tokens * self.fout) as u64 } else { 0 };
        record_layer(&self.prefix, cost::linear(self.fin, self.fout, tokens, self.bias) + cost::elementwise(bias_adds));
        // One 2-D product over all leading dimensions (candle's batched form broadcasts the
        // weight and sums its gradient over the batch with a strided reduction), then the bias
        // as one op whose backward sums rows.
        let dims = x.dims().to_vec();
        let rows = x.elem_count() / self.fin.max(1);
        let y = x.reshape((rows, self.fin))?.matmul(&weight.t()?)?;
        let y = match self.inner.bias() {
            Some(b) => compress_core::ops::bias_add_last(&y, b)?,
            None => y,
        };
        let mut out = dims;
        if let Some(last) = out.last_mut() {
            *last = self.fout;
        }
        y.reshape(out)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(r) = &self.replacement {
            crate::probe::record_linear(x)?;
            return r.forward(x);
        }
        let fin = x.dim(candle_core::D::Minus1)?;
        if crate::slim::active() && fin < self.fin {
            // The leading `fin` input columns (a slimmed network's classifier).
            let rows = x.elem_count() / fin.max(1);
            let w = self.inner.weight().narrow(1, 0, fin)?;
            record_layer(&self.prefix, cost::linear(fin, self.fout, 1, self.bias));
            let y = x.reshape((rows, fin))?.matmul(&w.t()?)?;
            let y = match self.inner.bias() {
                Some(b) => compress_core::ops::bias_add_last(&y, b)?,
                None => y,
            };
            let mut out = x.dims().to_vec();
            if let Some(last) = out.last_mut() {
                *last = self.fout;
            }
            return y.reshape(out);
        }
        self.forward_with_weight(x, &crate::fake_quant::weight(self.inner.weight(), &self.prefix)?)
    }
}
