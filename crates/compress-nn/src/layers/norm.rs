//! Normalisation layers: BatchNorm (candle-nn's, which trains correctly) and a LayerNorm built
//! from primitives so that it has a backward pass (candle-nn's fast LayerNorm has none).

use crate::count::record;
use candle_core::{DType, Module, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use compress_core::cost;

/// BatchNorm over the channels of `[N, C, ...]` input; `weight`, `bias`, `running_mean`,
/// `running_var` (PyTorch semantics: momentum 0.1, unbiased variance in the running estimate).
/// On the CPU both modes use the fused ops of `compress_core::ops::batch_norm` (with the residual
/// addition and activation that follow, see [`BatchNorm2d::forward_act`]); other devices use
/// candle-nn's BatchNorm over the same variables.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    inner: candle_nn::BatchNorm,
    weight: Tensor,
    bias: Tensor,
    running_mean: candle_core::Var,
    running_var: candle_core::Var,
    c: usize,
    /// The variable prefix (what a [`crate::tap`] scope names the layer by).
    prefix: String,
}

const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

impl BatchNorm2d {
    /// PyTorch defaults: eps 1e-5, momentum 0.1, affine.
    pub fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        let rm = vb.get_with_hints(c, "running_mean", candle_nn::Init::Const(0.0))?;
        let rv = vb.get_with_hints(c, "running_var", candle_nn::Init::Const(1.0))?;
        let weight = vb.get_with_hints(c, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(c, "bias", candle_nn::Init::Const(0.0))?;
        // The VarMap's tensors are variables: these Vars share their storage.
        let running_mean = candle_core::Var::from_tensor(&rm)?;
        let running_var = candle_core::Var::from_tensor(&rv)?;
        let inner = candle_nn::BatchNorm::new_with_momentum(c, rm, rv, weight.clone(), bias.clone(), EPS, MOMENTUM)?;
        Ok(Self { inner, weight, bias, running_mean, running_var, c, prefix: vb.prefix() })
    }
}

impl ModuleT for BatchNorm2d {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, None, crate::layers::Activation::None, train)
    }
}

impl BatchNorm2d {
    /// `act(BN(x) + residual)`: on the CPU one fused op (batch statistics in training, running
    /// ones in eval; one node and one pass each way instead of three), elsewhere the three ops. The activation is followed by its
    /// quantizer inside a [`crate::fake_quant`] scope, as [`crate::layers::Activation::apply`].
    /// Inside a [`crate::tap`] scope the input and the output pass the tap.
    pub fn forward_act(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: crate::layers::Activation,
        train: bool,
    ) -> Result<Tensor> {
        use crate::tap::TapPoint;
        let x = &crate::tap::at(&self.prefix, TapPoint::BnInput, x.clone())?;
        let y = self.forward_act_untapped(x, residual, act, train)?;
        crate::tap::at(&self.prefix, TapPoint::Output, y)
    }

    /// The variable prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn forward_act_untapped(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: crate::layers::Activation,
        train: bool,
    ) -> Result<Tensor> {
        self.record_cost(x, residual.is_some(), train)?;
        if crate::probe::active() {
            crate::probe::record_bn(&self.prefix, x, self.running_mean.as_tensor(), self.running_var.as_tensor())?;
        }
        let fused = Self::fused_on(x);
        if crate::slim::active() {
            return self.forward_slim(x, residual, act, train);
        }
        if fused && !train {
            let running = (self.running_mean.as_tensor(), self.running_var.as_tensor());
            let y = compress_core::ops::batch_norm_act_eval(
                x,
                &self.weight,
                &self.bias,
                running,
                residual,
                EPS,
                act.bounds(),
            )?;
            return act.quantize_output(&y);
        }
        if !fused {
            let y = self.inner.forward_t(x, train)?;
            let y = match residual {
                Some(r) => (y + r)?,
                None => y,
            };
            return act.apply(&y);
        }
        let (y, mean, var) =
            compress_core::ops::batch_norm_act_train(x, &self.weight, &self.bias, residual, EPS, act.bounds())?;
        self.update_running(&mean, &var, x.elem_count() / self.c)?;
        act.quantize_output(&y)
    }

    /// The first `C_in` channels of the layer inside a [`crate::slim`] scope: batch statistics
    /// in training (running statistics left as they are), the running ones' slice in eval (the
    /// CPU kernels in f32 / f64, the composed forms on other devices and dtypes).
    fn forward_slim(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: crate::layers::Activation,
        train: bool,
    ) -> Result<Tensor> {
        let c = x.dim(1)?;
        let (w, b) = (crate::slim::leading(&self.weight, c)?, crate::slim::leading(&self.bias, c)?);
        let y = if train {
            compress_core::ops::batch_norm_act_train(x, &w, &b, residual, EPS, act.bounds())?.0
        } else {
            let running = (
                &crate::slim::leading(self.running_mean.as_tensor(), c)?,
                &crate::slim::leading(self.running_var.as_tensor(), c)?,
            );
            compress_core::ops::batch_norm_act_eval(x, &w, &b, running, residual, EPS, act.bounds())?
        };
        act.quantize_output(&y)
    }

    /// Whether the fused CPU ops run on `x` (CPU, f32 / f64, toolkit kernels on).
    pub(crate) fn fused_on(x: &Tensor) -> bool {
        x.device().is_cpu()
            && matches!(x.dtype(), DType::F32 | DType::F64)
            && x.rank() >= 2
            && !compress_core::ops::candle_only()
    }

    /// Counts the layer's operations on input `x` (the residual addition in training mode, where
    /// it is a separate addition in the count).
    pub(crate) fn record_cost(&self, x: &Tensor, residual: bool, train: bool) -> Result<()> {
        // Scale and shift of every element of one sample.
        let per_sample = (x.elem_count() / x.dim(0)?.max(1)) as u64;
        record(cost::norm(self.c) + cost::elementwise(2 * per_sample));
        if residual && train && Self::fused_on(x) {
            record(cost::elementwise(per_sample));
        }
        Ok(())
    }

    /// The running statistics' update from a training batch's mean and biased variance over `m`
    /// values per channel (PyTorch: the unbiased variance, momentum 0.1).
    pub(crate) fn update_running(&self, mean: &Tensor, var: &Tensor, m: usize) -> Result<()> {
        let m = m as f64;
        let dt = self.running_mean.dtype();
        let rm = ((self.running_mean.as_tensor() * (1.0 - MOMENTUM))? + (mean * MOMENTUM)?.to_dtype(dt)?)?;
        let unbiased = if m > 1.0 { m / (m - 1.0) } else { 1.0 };
        let rv = ((self.running_var.as_tensor() * (1.0 - MOMENTUM))? + (var * (MOMENTUM * unbiased))?.to_dtype(dt)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)
    }

    /// The affine `(weight, bias)`.
    pub(crate) fn affine(&self) -> (&Tensor, &Tensor) {
        (&self.weight, &self.bias)
    }

    /// The epsilon (1e-5).
    pub(crate) fn eps(&self) -> f64 {
        EPS
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
        compress_core::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    /// The fused CPU path and candle-nn's BatchNorm give the same output and running statistics.
    #[test]
    fn fused_training_matches_candle_nn() {
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 4.0 * 5.0, &Device::Cpu).expect("a").reshape((2, 3, 4, 5)).expect("r");
        let x = ((x.sin().expect("s") * 3.0).expect("m") + 1.0).expect("p");
        let (m1, m2) = (VarMap::new(), VarMap::new());
        let ours = BatchNorm2d::new(3, crate::init::seeded_builder(&m1, 0, DType::F32, &Device::Cpu)).expect("ours");
        let theirs = candle_nn::batch_norm(
            3,
            candle_nn::BatchNormConfig::default(),
            candle_nn::VarBuilder::from_varmap(&m2, DType::F32, &Device::Cpu),
        )
        .expect("candle");
        for _ in 0..3 {
            let a = ours.forward_t(&x, true).expect("a");
            let b = theirs.forward_t(&x, true).expect("b");
            let d = (a - b).expect("d").abs().expect("abs").max_all().expect("m").to_scalar::<f32>().expect("s");
            assert!(d < 1e-5, "{d}");
        }
        for name in ["running_mean", "running_var"] {
            let a = m1.data().lock().expect("l")[name].as_tensor().to_vec1::<f32>().expect("a");
            let b = m2.data().lock().expect("l")[name].as_tensor().to_vec1::<f32>().expect("b");
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() < 1e-5, "{name}: {a:?} vs {b:?}");
            }
        }
    }
}
