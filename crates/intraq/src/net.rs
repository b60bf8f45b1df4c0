//! The section-9 teacher: conv3x3 1->8, 8->16 stride 2, 16->16, 16->32 stride 2, each with BN and
//! ReLU; global average pool; Linear 32->10 (about 1 M MACs per 28 x 28 digit). Its quantized
//! student is `compress_nn::fake_quant::Quantized<DigitCnn>` (spec 2.2: every conv weight per
//! output channel and the linear weight per row from their min / max, every ReLU output per
//! tensor; input, BN and biases in full precision; first and last layer quantized too).

use crate::error::{IntraqError, Result};
use candle_core::{D, DType, Device, Module, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use compress_nn::layers::{Activation, BatchNorm2d, Conv2d, ConvSpec, Linear, WeightInit};
use std::collections::HashMap;

/// Conv layers of the mini CNN: `(in, out, stride)`.
pub const LAYERS: [(usize, usize, usize); 4] = [(1, 8, 1), (8, 16, 2), (16, 16, 1), (16, 32, 2)];

/// The mini CNN.
pub struct DigitCnn {
    convs: Vec<(Conv2d, BatchNorm2d)>,
    fc: Linear,
    varmap: VarMap,
    device: Device,
}

impl std::fmt::Debug for DigitCnn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigitCnn").field("layers", &LAYERS).finish()
    }
}

impl DigitCnn {
    fn build(varmap: VarMap, seed: u64, device: &Device) -> Result<Self> {
        let vb: VarBuilder = compress_nn::init::seeded_builder(&varmap, seed, DType::F32, device);
        let mut convs = Vec::new();
        for (i, &(cin, cout, stride)) in LAYERS.iter().enumerate() {
            let spec = ConvSpec::same(3).stride(stride).init(WeightInit::KaimingFanOut);
            convs.push((
                Conv2d::new(cin, cout, spec, vb.pp(format!("convs.{i}")))?,
                BatchNorm2d::new(cout, vb.pp(format!("bns.{i}")))?,
            ));
        }
        let fc = Linear::new(32, 10, true, vb.pp("fc"))?;
        Ok(Self { convs, fc, varmap, device: device.clone() })
    }

    /// A freshly initialised network.
    pub fn new(seed: u64, device: &Device) -> Result<Self> {
        Self::build(VarMap::new(), seed, device)
    }

    /// A network holding copies of `tensors` (every variable must be there).
    pub fn from_tensors(tensors: &HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        // Copies: a student built from its teacher's tensors must not train the teacher.
        let copies = tensors.iter().map(|(k, t)| Ok((k.clone(), t.copy()?))).collect::<Result<HashMap<_, _>>>()?;
        let varmap = compress_nn::init::varmap_from(&copies, device)?;
        let n = varmap.all_vars().len();
        let net = Self::build(varmap, 0, device)?;
        if net.varmap.all_vars().len() != n {
            return Err(IntraqError::Config("the tensors do not hold every variable of the network".into()));
        }
        Ok(net)
    }

    /// Every variable by name (sharing storage with the variables; a model built from them
    /// copies).
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        Ok(compress_nn::init::varmap_tensors(&self.varmap)?)
    }

    /// Penultimate features `[B, 32]` and logits.
    pub fn features_and_logits(&self, x: &Tensor, train: bool) -> candle_core::Result<(Tensor, Tensor)> {
        let mut h = x.clone();
        for (conv, bn) in &self.convs {
            h = Activation::Relu.apply(&bn.forward_t(&conv.forward(&h)?, train)?)?;
        }
        let f = h.mean(D::Minus1)?.mean(D::Minus1)?;
        let logits = self.fc.forward(&f)?;
        Ok((f, logits))
    }
}

impl compress_nn::Model for DigitCnn {
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn forward_t(&self, x: &Tensor, train: bool) -> compress_nn::error::Result<Tensor> {
        Ok(self.features_and_logits(x, train)?.1)
    }
}
