//! 2-D convolution with an optional bias: `y = conv2d(x, W) + b`, on the toolkit's CPU op.

use crate::count::record_layer;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use compress_core::cost;

/// How a convolution's weight is initialised (the official code of each architecture differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightInit {
    /// PyTorch's default `kaiming_uniform_(a = sqrt(5))`: `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`
    /// (EDSR, RDN, VGG of the pruning papers, ViT patch embedding).
    #[default]
    PyTorchDefault,
    /// `kaiming_normal_(mode="fan_in", nonlinearity="relu")` (CIFAR ResNets of the pruning papers).
    KaimingFanIn,
    /// `kaiming_normal_(mode="fan_out", nonlinearity="relu")` (torchvision ResNet, MobileNet).
    KaimingFanOut,
}

/// Geometry of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Square kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// Channel groups (`groups == cin == cout` for a depthwise convolution).
    pub groups: usize,
    /// Whether the convolution has a bias.
    pub bias: bool,
    /// Weight initialisation.
    pub init: WeightInit,
}

impl ConvSpec {
    /// A `k x k` convolution with "same" padding `k / 2`, stride 1, no bias.
    pub fn same(kernel: usize) -> Self {
        Self { kernel, stride: 1, padding: kernel / 2, groups: 1, bias: false, init: WeightInit::PyTorchDefault }
    }

    /// The same spec with another weight initialisation.
    pub fn init(mut self, init: WeightInit) -> Self {
        self.init = init;
        self
    }

    /// The same spec with stride `s`.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = s;
        self
    }

    /// The same spec with `g` groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }

    /// The same spec with a bias.
    pub fn with_bias(mut self) -> Self {
        self.bias = true;
        self
    }

    /// The same spec with padding `p`.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = p;
        self
    }
}

/// A convolution whose weight is `[cout, cin / groups, k, k]` under `<prefix>.weight`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    spec: ConvSpec,
    replacement: Option<super::Replacement>,
    /// The variable prefix (what the per-layer count names the layer by).
    prefix: String,
}

impl Conv2d {
    /// Builds the layer from `vb` (weights as `spec.init`, PyTorch's uniform bias).
    pub fn new(cin: usize, cout: usize, spec: ConvSpec, vb: VarBuilder) -> Result<Self> {
        if spec.groups == 0 || !cin.is_multiple_of(spec.groups) || !cout.is_multiple_of(spec.groups) {
            candle_core::bail!(
                "conv {}: {cin} -> {cout} channels do not split into {} groups",
                vb.prefix(),
                spec.groups
            )
        }
        let k = spec.kernel;
        let bound = 1.0 / ((cin / spec.groups * k * k) as f64).sqrt();
        let init = match spec.init {
            WeightInit::PyTorchDefault => candle_nn::Init::Uniform { lo: -bound, up: bound },
            WeightInit::KaimingFanIn => candle_nn::init::DEFAULT_KAIMING_NORMAL,
            WeightInit::KaimingFanOut => candle_nn::Init::Kaiming {
                dist: candle_nn::init::NormalOrUniform::Normal,
                fan: candle_nn::init::FanInOut::FanOut,
                non_linearity: candle_nn::init::NonLinearity::ReLU,
            },
        };
        let weight = vb.get_with_hints((cout, cin / spec.groups, k, k), "weight", init)?;
        let bias = if spec.bias {
            Some(vb.get_with_hints(cout, "bias", candle_nn::Init::Uniform { lo: -bound, up: bound })?)
        } else {
            None
        };
        Ok(Self { weight, bias, spec, replacement: super::replace::lookup(&vb.prefix()), prefix: vb.prefix() })
    }

    /// The weight tensor.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The geometry.
    pub fn spec(&self) -> ConvSpec {
        self.spec
    }
}

impl Conv2d {
    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The convolution with `weight` (same shape as the layer's, e.g. a fake-quantized copy of
    /// it) in place of the layer's own weight, and the layer's bias.
    pub fn forward_with_weight(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        if weight.dims() != self.weight.dims() {
            candle_core::bail!("conv weight {:?} given for a layer of {:?}", weight.dims(), self.weight.dims())
        }
        self.conv(x, weight, self.spec.groups, self.bias.as_ref())
    }

    fn conv(&self, x: &Tensor, weight: &Tensor, groups: usize, bias: Option<&Tensor>) -> Result<Tensor> {
        let s = self.spec;
        // im2col + GEMM with its own backward on the CPU (candle's is ~10x slower there).
        let geo = compress_core::ops::Conv2dGeometry::new(s.stride, s.padding, groups);
        let y = compress_core::ops::conv2d(x, weight, geo)?;
        let y = match bias {
            Some(b) => compress_core::ops::bias_add_nchw(&y, b)?,
            None => y,
        };
        self.record_cost(x, &y, groups)?;
        Ok(y)
    }

    /// The layer as the leading slice of itself inside a [`crate::slim`] scope.
    fn forward_slim(&self, x: &Tensor) -> Result<Tensor> {
        let (w, groups) = crate::slim::conv_weight(&self.weight, self.spec.groups, &self.prefix, x)?;
        let bias = self.bias.as_ref().map(|b| crate::slim::leading(b, w.dim(0)?)).transpose()?;
        self.conv(x, &w, groups, bias.as_ref())
    }

    /// Counts the layer's operations from input `x` to output `y`.
    fn record_cost(&self, x: &Tensor, y: &Tensor, groups: usize) -> Result<()> {
        let s = self.spec;
        let (_, cout, oh, ow) = y.dims4()?;
        let bias_adds = if s.bias { (cout * oh * ow) as u64 } else { 0 };
        let c = cost::conv2d(x.dim(1)?, cout, s.kernel, groups, oh, ow, s.bias) + cost::elementwise(bias_adds);
        record_layer(&self.prefix, c);
        Ok(())
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(r) = &self.replacement {
            return r.forward(x);
        }
        if crate::slim::active() {
            return self.forward_slim(x);
        }
        self.conv(x, &crate::fake_quant::weight(&self.weight, &self.prefix)?, self.spec.groups, self.bias.as_ref())
    }
}

/// A convolution followed by BatchNorm (and optionally an activation).
#[derive(Debug, Clone)]
pub struct ConvBn {
    /// The convolution.
    pub conv: Conv2d,
    /// The BatchNorm over its output.
    pub bn: crate::layers::BatchNorm2d,
    /// The activation applied after the norm.
    pub act: Activation,
}

/// Element-wise activations of the zoo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Identity.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)` (MobileNet).
    Relu6,
}

impl Activation {
    /// Applies the activation (followed by an activation quantizer inside a
    /// [`crate::fake_quant`] scope).
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::None => Ok(x.clone()),
            // One pass forward and one backward on the CPU (candle's clamp takes about eight).
            _ => {
                let (lo, hi) = self.bounds();
                self.quantize_output(&compress_core::ops::clamp_activation(x, lo, hi)?)
            }
        }
    }

    /// The clamp bounds: ReLU `(0, inf)`, ReLU6 `(0, 6)`, none `(-inf, inf)`.
    pub fn bounds(self) -> (f64, f64) {
        match self {
            Activation::None => (f64::NEG_INFINITY, f64::INFINITY),
            Activation::Relu => (0.0, f64::INFINITY),
            Activation::Relu6 => (0.0, 6.0),
        }
    }

    /// The activation quantizer of a [`crate::fake_quant`] scope on an output already activated
    /// (none for the identity).
    pub(crate) fn quantize_output(self, y: &Tensor) -> Result<Tensor> {
        match self {
            Activation::None => Ok(y.clone()),
            _ => crate::fake_quant::activation(y),
        }
    }
}

impl ConvBn {
    /// `conv` under `vb_conv`, BatchNorm under `vb_bn`.
    pub fn new(
        cin: usize,
        cout: usize,
        spec: ConvSpec,
        act: Activation,
        vb_conv: VarBuilder,
        vb_bn: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(cin, cout, spec, vb_conv)?,
            bn: crate::layers::BatchNorm2d::new(cout, vb_bn)?,
            act,
        })
    }
}

impl candle_core::ModuleT for ConvBn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, None, self.act, train)
    }
}

impl ConvBn {
    /// `act(BN(conv(x)) + residual)` with the block's own activation `act` (a residual block's
    /// second conv), fused on the CPU in training mode.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor, act: Activation, train: bool) -> Result<Tensor> {
        self.forward_act(x, Some(residual), act, train)
    }

    /// `act(BN(conv(x)) (+ residual))`: in CPU training one node for the three layers
    /// (`compress_core::ops::conv_bn_act_train`) when nothing needs the conv output on its own
    /// (no replacement of the conv, no conv bias, no BatchNorm probe, no [`crate::slim`] scope,
    /// no [`crate::tap`] at the norm's input); otherwise the conv, then
    /// [`crate::layers::BatchNorm2d::forward_act`].
    fn forward_act(&self, x: &Tensor, residual: Option<&Tensor>, act: Activation, train: bool) -> Result<Tensor> {
        let fusable = train
            && crate::layers::BatchNorm2d::fused_on(x)
            && self.conv.replacement.is_none()
            && self.conv.bias.is_none()
            && !crate::probe::active()
            && !crate::slim::active()
            && !crate::tap::wants(self.bn.prefix(), crate::tap::TapPoint::BnInput);
        if !fusable {
            return self.bn.forward_act(&self.conv.forward(x)?, residual, act, train);
        }
        let s = self.conv.spec;
        let geo = compress_core::ops::Conv2dGeometry::new(s.stride, s.padding, s.groups);
        let w = crate::fake_quant::weight(&self.conv.weight, &self.conv.prefix)?;
        let (gamma, beta) = self.bn.affine();
        let (z, mean, var) =
            compress_core::ops::conv_bn_act_train(x, &w, geo, gamma, beta, residual, self.bn.eps(), act.bounds())?;
        self.conv.record_cost(x, &z, s.groups)?;
        self.bn.record_cost(&z, residual.is_some(), train)?;
        self.bn.update_running(&mean, &var, z.elem_count() / z.dim(1)?)?;
        crate::tap::at(self.bn.prefix(), crate::tap::TapPoint::Output, act.quantize_output(&z)?)
    }
}
