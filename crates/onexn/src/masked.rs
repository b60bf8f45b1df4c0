//! Masked fine-tuning (spec section 2, "Pipeline", steps 3-4): the forward pass uses `W ⊙ M`,
//! so `W`'s gradient is masked (`d(W ⊙ M)/dW = M`); the masks are frozen; the biases of masked
//! layers are frozen (detached) unless asked otherwise. Weight decay still reaches masked
//! entries, which is harmless: they never reach the output.
//!
//! The masks live in the network's `VarMap` as buffers `<layer>.buffer_mask`, so checkpoints
//! carry them and a resumed fine-tuning continues with the same masks.

use crate::error::{OnexnError, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use compress_nn::{Architecture, Model, Network, model_tensors};
use std::collections::{BTreeMap, HashMap};

/// The buffer that holds layer `layer`'s mask.
pub fn mask_name(layer: &str) -> String {
    format!("{layer}.buffer_mask")
}

/// A zoo network fine-tuned under fixed masks.
pub struct MaskedNetwork<A: Architecture> {
    config: A::Config,
    varmap: VarMap,
    /// Masked layers (prefixes), in order.
    layers: Vec<String>,
    /// Whether the masked layers' biases are frozen.
    freeze_bias: bool,
    device: Device,
}

impl<A: Architecture> std::fmt::Debug for MaskedNetwork<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskedNetwork").field("layers", &self.layers).field("freeze_bias", &self.freeze_bias).finish()
    }
}

impl<A: Architecture> MaskedNetwork<A> {
    /// Takes a copy of `net`'s variables and the masks of its layers (`prefix -> 0/1 tensor of
    /// the shape of <prefix>.weight`).
    pub fn new(net: &Network<A>, masks: &BTreeMap<String, Tensor>, freeze_bias: bool) -> Result<Self> {
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().map_err(|_| OnexnError::Poisoned)?;
            let tensors = net.tensors()?;
            for (k, t) in &tensors {
                data.insert(k.clone(), Var::from_tensor(t)?);
            }
            for (layer, m) in masks {
                let w = tensors
                    .get(&format!("{layer}.weight"))
                    .ok_or_else(|| OnexnError::Config(format!("no layer {layer:?} to mask")))?;
                if w.dims() != m.dims() {
                    return Err(OnexnError::Config(format!(
                        "mask of {layer} is {:?}, weight {:?}",
                        m.dims(),
                        w.dims()
                    )));
                }
                data.insert(mask_name(layer), Var::from_tensor(&m.to_dtype(DType::F32)?.to_device(net.device())?)?);
            }
        }
        let layers = masks.keys().cloned().collect();
        Ok(Self { config: net.config.clone(), varmap, layers, freeze_bias, device: net.device().clone() })
    }

    /// The masked layers.
    pub fn layers(&self) -> &[String] {
        &self.layers
    }

    /// The current masks by layer.
    pub fn masks(&self) -> Result<BTreeMap<String, Tensor>> {
        let data = self.varmap.data().lock().map_err(|_| OnexnError::Poisoned)?;
        self.layers
            .iter()
            .map(|l| {
                let v = data.get(&mask_name(l)).ok_or_else(|| OnexnError::Config(format!("mask of {l} lost")))?;
                Ok((l.clone(), v.as_tensor().copy()?))
            })
            .collect()
    }

    /// The tensors the model is built from: `W ⊙ M` for masked layers (in the graph), their
    /// biases detached when frozen, the rest as they are (running statistics share storage so
    /// BatchNorm updates them).
    fn effective(&self, detach_all: bool) -> Result<HashMap<String, Tensor>> {
        let data = self.varmap.data().lock().map_err(|_| OnexnError::Poisoned)?;
        let mut map = model_tensors(&data);
        for l in &self.layers {
            let w = format!("{l}.weight");
            let (Some(wv), Some(m)) = (data.get(&w), data.get(&mask_name(l))) else {
                return Err(OnexnError::Config(format!("layer {l} lost its weight or mask")));
            };
            map.insert(w, (wv.as_tensor() * m.as_tensor().detach())?);
            let b = format!("{l}.bias");
            if self.freeze_bias
                && let Some(bv) = data.get(&b)
            {
                map.insert(b, bv.as_tensor().detach());
            }
        }
        if detach_all {
            for t in map.values_mut() {
                *t = t.copy()?;
            }
        }
        Ok(map)
    }

    /// The plain network with the masks applied to its weights (what deployment packs).
    pub fn to_network(&self) -> Result<Network<A>> {
        Ok(Network::from_tensors(self.config.clone(), &self.effective(true)?, &self.device)?)
    }
}

impl<A: Architecture> Model for MaskedNetwork<A> {
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> compress_nn::Result<Tensor> {
        let tensors = self.effective(false).map_err(|e| compress_nn::NnError::Method(Box::new(e)))?;
        let model = A::build(&self.config, VarBuilder::from_tensors(tensors, DType::F32, &self.device))?;
        Ok(candle_core::ModuleT::forward_t(&model, x, train)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pattern::{OneByN, Pattern, layer_mask};
    use compress_nn::zoo::{Mlp, MlpConfig};

    #[test]
    fn gradients_are_masked_and_frozen_biases_get_none() {
        let dev = Device::Cpu;
        let net = Network::<Mlp>::new(MlpConfig::mnist(), 0, &dev).unwrap();
        let t = net.tensors().unwrap();
        let m = layer_mask(&t["fc0.weight"], Pattern::Block(OneByN::l1(4, true)), 0.75, 0).unwrap().mask;
        let masks: BTreeMap<String, Tensor> = [("fc0".to_string(), m.clone())].into();
        let masked = MaskedNetwork::new(&net, &masks, true).unwrap();
        let x = Tensor::randn(0f32, 1.0, (4, 1, 28, 28), &dev).unwrap();
        let loss = Model::forward_t(&masked, &x, true).unwrap().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let data = masked.varmap.data().lock().unwrap();
        let gw = grads.get(data["fc0.weight"].as_tensor()).unwrap();
        let outside = (gw * (1.0 - &m).unwrap()).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(outside, 0.0, "no gradient on pruned entries");
        let inside = (gw * &m).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(inside > 0.0);
        assert!(grads.get(data["fc0.bias"].as_tensor()).is_none(), "masked layer's bias frozen");
        assert!(grads.get(data["fc1.bias"].as_tensor()).is_some(), "unmasked layer's bias trains");
        assert!(grads.get(data[&mask_name("fc0")].as_tensor()).is_none(), "masks are constants");
        drop(data);
        // The baked network computes the same function.
        let a = Model::forward_t(&masked, &x, false).unwrap();
        let b = masked.to_network().unwrap().forward_t(&x, false).unwrap();
        assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
        let bad: BTreeMap<String, Tensor> =
            [("fc0".to_string(), Tensor::ones((3, 3), DType::F32, &dev).unwrap())].into();
        assert!(MaskedNetwork::new(&net, &bad, true).is_err());
    }
}
