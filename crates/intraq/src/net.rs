//! The section-9 teacher (conv3x3 1->8, 8->16 stride 2, 16->16, 16->32 stride 2, each with BN
//! and ReLU; global average pool; Linear 32->10; about 1 M MACs per 28 x 28 digit) and its
//! fake-quantized student (spec 2.2): every conv weight per output channel and the linear weight
//! per row at `w` bits from their current min / max, each ReLU output through a per-tensor
//! running-range quantizer at `a` bits; the image input, BN, biases stay in full precision. The
//! same struct with quantization off is the teacher; both stay in eval mode (BN uses running
//! statistics) during fine-tuning.

use crate::error::{IntraqError, Result};
use candle_core::{D, DType, Device, Module, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use compress_core::quant::{RangeRule, RunningRange, asym_fake_quant, per_channel_minmax};
use compress_nn::layers::{BatchNorm2d, Conv2d, ConvSpec, Linear, WeightInit};
use std::collections::HashMap;
use std::sync::Mutex;

/// Conv layers of the mini CNN: `(in, out, stride)`.
pub const LAYERS: [(usize, usize, usize); 4] = [(1, 8, 1), (8, 16, 2), (16, 16, 1), (16, 32, 2)];

/// Bits and activation ranges of a quantized network.
#[derive(Debug)]
pub struct QuantState {
    /// Weight bits (every conv and the linear layer).
    pub wbits: u32,
    /// Activation bits (every ReLU output).
    pub abits: u32,
    /// One running range per ReLU.
    pub ranges: Mutex<Vec<RunningRange>>,
}

/// The mini CNN, full precision or fake-quantized.
pub struct DigitCnn {
    convs: Vec<(Conv2d, BatchNorm2d)>,
    fc: Linear,
    quant: Option<QuantState>,
    varmap: VarMap,
    device: Device,
}

impl std::fmt::Debug for DigitCnn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigitCnn").field("quant", &self.quant).finish()
    }
}

impl DigitCnn {
    fn build(varmap: VarMap, seed: u64, quant: Option<QuantState>, device: &Device) -> Result<Self> {
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
        Ok(Self { convs, fc, quant, varmap, device: device.clone() })
    }

    /// A freshly initialised full-precision network.
    pub fn new(seed: u64, device: &Device) -> Result<Self> {
        Self::build(VarMap::new(), seed, None, device)
    }

    /// A network holding copies of `tensors` (every variable must be there), quantized at
    /// `(wbits, abits)` with activation ranges averaged by `rule`, or full precision.
    pub fn from_tensors(
        tensors: &HashMap<String, Tensor>,
        quant: Option<(u32, u32, RangeRule)>,
        device: &Device,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().map_err(|_| IntraqError::Config("VarMap lock poisoned".into()))?;
            for (k, t) in tensors {
                data.insert(k.clone(), candle_core::Var::from_tensor(&t.copy()?.to_device(device)?)?);
            }
        }
        let quant = match quant {
            None => None,
            Some((w, a, rule)) => {
                compress_core::quant::check_bits(w)?;
                compress_core::quant::check_bits(a)?;
                let ranges = (0..LAYERS.len()).map(|_| RunningRange::new(0.9, rule)).collect();
                Some(QuantState { wbits: w, abits: a, ranges: Mutex::new(ranges) })
            }
        };
        let n = varmap.all_vars().len();
        let net = Self::build(varmap, 0, quant, device)?;
        if net.varmap.all_vars().len() != n {
            return Err(IntraqError::Config("the tensors do not hold every variable of the network".into()));
        }
        Ok(net)
    }

    /// Every variable by name (copies).
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        let data = self.varmap.data().lock().map_err(|_| IntraqError::Config("VarMap lock poisoned".into()))?;
        data.iter().map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?))).collect()
    }

    /// The quantization state, if quantized.
    pub fn quant(&self) -> Option<&QuantState> {
        self.quant.as_ref()
    }

    /// Freezes (`false`) or releases (`true`) every activation range.
    pub fn set_running(&self, running: bool) -> Result<()> {
        if let Some(q) = &self.quant {
            let mut r = q.ranges.lock().map_err(|_| IntraqError::Config("range lock poisoned".into()))?;
            r.iter_mut().for_each(|x| if running { x.unfix() } else { x.fix() });
        }
        Ok(())
    }

    fn weight(&self, w: &Tensor) -> candle_core::Result<Tensor> {
        match &self.quant {
            None => Ok(w.clone()),
            Some(q) => {
                let (lo, hi) = per_channel_minmax(w).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                asym_fake_quant(w, &lo, &hi, q.wbits).map_err(|e| candle_core::Error::Msg(e.to_string()))
            }
        }
    }

    fn act(&self, i: usize, x: &Tensor) -> candle_core::Result<Tensor> {
        let Some(q) = &self.quant else { return Ok(x.clone()) };
        let (lo, hi) = {
            let mut r = q.ranges.lock().map_err(|_| candle_core::Error::Msg("range lock poisoned".into()))?;
            let site = &mut r[i];
            if site.running {
                let d = x.detach();
                let (mn, mx) = (d.min_all()?.to_scalar::<f32>()?, d.max_all()?.to_scalar::<f32>()?);
                site.update(f64::from(mn), f64::from(mx));
            }
            site.range()
        };
        let (lo, hi) = (lo as f32, (hi as f32).max(lo as f32));
        let dev = x.device();
        asym_fake_quant(x, &Tensor::new(lo, dev)?, &Tensor::new(hi, dev)?, q.abits)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    /// Penultimate features `[B, 32]` and logits.
    pub fn features_and_logits(&self, x: &Tensor, train: bool) -> candle_core::Result<(Tensor, Tensor)> {
        let mut h = x.clone();
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            let y = match &self.quant {
                None => conv.forward(&h)?,
                Some(_) => conv.forward_with_weight(&h, &self.weight(conv.weight())?)?,
            };
            h = self.act(i, &bn.forward_t(&y, train)?.relu()?)?;
        }
        let f = h.mean(D::Minus1)?.mean(D::Minus1)?;
        let logits = match &self.quant {
            None => self.fc.forward(&f)?,
            Some(_) => self.fc.forward_with_weight(&f, &self.weight(self.fc.weight())?)?,
        };
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
