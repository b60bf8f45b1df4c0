//! Stage 1 (spec 2.2, 2.4): the network with its class-wise masks, trained with
//! `CE(f(x; M), y) + lambda sum_l ||sum_k M_l||_2`. The masks are variables beside the
//! network's (`whitebox.mask.{j}`, in one `VarMap` with them, so the optimizer's weight decay
//! reaches them as the official SGD's does) and act through a [`compress_nn::tap`] scope, so the
//! network's own forward runs unchanged. `D` is drawn per forward call and per masked layer from
//! stream `(epoch, batch, slot)` of the run's seed: a resumed run draws what the uninterrupted
//! one drew.

use crate::error::{Result, config_err};
use crate::gate::{ClassWiseMask, GateMode, draw_d};
use crate::layout::{MaskSlot, WhiteBoxLayout};
use crate::penalty::mask_penalty;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use compress_core::rng::SeededRng;
use compress_nn::tap::{Tap, TapPoint};
use compress_nn::{Architecture, Model, Network};
use compress_train::classify::Objective;
use compress_train::loss::cross_entropy;
use std::collections::HashMap;
use std::sync::Arc;

/// A network with a class-wise mask on every slot of its layout.
pub struct MaskedNetwork<'a, A: Architecture> {
    net: &'a Network<A>,
    slots: Vec<MaskSlot>,
    /// Each applied slot's site -> its index (built once, shared by every forward's tap).
    sites: Arc<HashMap<(String, TapPoint), usize>>,
    masks: Vec<ClassWiseMask>,
    vars: VarMap,
    lambda: f64,
    rng: SeededRng,
}

impl<A: Architecture> std::fmt::Debug for MaskedNetwork<'_, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskedNetwork").field("slots", &self.slots.len()).field("lambda", &self.lambda).finish()
    }
}

/// The mask variable name of slot `j`.
pub fn mask_name(j: usize) -> String {
    format!("whitebox.mask.{j}")
}

impl<'a, A: Architecture> MaskedNetwork<'a, A>
where
    A::Config: WhiteBoxLayout,
{
    /// `net` with `M = 1` (`classes x C`) on every slot, the sparsity term at `lambda`, `D` drawn
    /// in `mode` from `seed`'s streams.
    pub fn new(net: &'a Network<A>, classes: usize, lambda: f64, mode: GateMode, seed: u64) -> Result<Self> {
        let slots = net.config.mask_slots()?;
        if slots.iter().all(|s| s.site.is_none()) {
            return Err(config_err("the network's layout applies no mask (no prunable group with a BatchNorm)"));
        }
        if !(lambda >= 0.0 && lambda.is_finite()) {
            return Err(config_err(format!("lambda must be finite and >= 0, not {lambda}")));
        }
        let vars = VarMap::new();
        {
            let mut data = vars.data().lock().map_err(|_| config_err("variable map lock poisoned"))?;
            for (k, v) in net.varmap().data().lock().map_err(|_| config_err("variable map lock poisoned"))?.iter() {
                data.insert(k.clone(), v.clone());
            }
        }
        let mut masks = Vec::with_capacity(slots.len());
        for (j, s) in slots.iter().enumerate() {
            let m = ClassWiseMask::ones(classes, s.width, mode, net.device())?;
            vars.data().lock().map_err(|_| config_err("variable map lock poisoned"))?.insert(mask_name(j), m.m.clone());
            masks.push(m);
        }
        let sites = slots.iter().enumerate().filter_map(|(j, s)| s.site.clone().map(|site| (site, j))).collect();
        Ok(Self { net, slots, sites: Arc::new(sites), masks, vars, lambda, rng: SeededRng::new(seed) })
    }
}

impl<A: Architecture> MaskedNetwork<'_, A> {
    /// The slots, in the layout's order.
    pub fn slots(&self) -> &[MaskSlot] {
        &self.slots
    }

    /// The masks' current values (`K x C` each), in slot order.
    pub fn masks(&self) -> Vec<Tensor> {
        self.masks.iter().map(|m| m.m.as_tensor().clone()).collect()
    }

    /// Sets every mask (e.g. from a checkpoint or a test).
    pub fn set_masks(&self, values: &[Tensor]) -> Result<()> {
        if values.len() != self.masks.len() {
            return Err(config_err(format!("{} masks given for {} slots", values.len(), self.masks.len())));
        }
        for (m, v) in self.masks.iter().zip(values) {
            m.m.set(v)?;
        }
        Ok(())
    }

    /// The sparsity term over every mask, applied or not.
    pub fn penalty(&self) -> Result<Tensor> {
        let ms: Vec<&Tensor> = self.masks.iter().map(|m| m.m.as_tensor()).collect();
        mask_penalty(&ms, self.lambda)
    }

    /// The gated forward pass for samples of class `labels`, `D` from stream `(epoch, batch)`.
    pub fn forward_labelled(
        &self,
        x: &Tensor,
        labels: &[u32],
        epoch: usize,
        batch: usize,
        train: bool,
    ) -> Result<Tensor> {
        let tap = GateTap {
            sites: self.sites.clone(),
            masks: self.masks.clone(),
            labels: labels.to_vec(),
            rng: self.rng.child(&format!("whitebox/d/{epoch}/{batch}")),
        };
        Ok(compress_nn::tap::with(Arc::new(tap), || self.net.forward_t(x, train))?)
    }
}

/// Gates the activations at the slots' sites.
struct GateTap {
    sites: Arc<HashMap<(String, TapPoint), usize>>,
    masks: Vec<ClassWiseMask>,
    labels: Vec<u32>,
    rng: SeededRng,
}

impl Tap for GateTap {
    fn wants(&self, layer: &str, point: TapPoint) -> bool {
        self.sites.contains_key(&(layer.to_string(), point))
    }

    fn apply(&self, layer: &str, point: TapPoint, x: &Tensor) -> candle_core::Result<Tensor> {
        let j = self.sites[&(layer.to_string(), point)];
        let mask = &self.masks[j];
        let k = mask.classes();
        let d = draw_d(&self.labels, k, mask.mode, &mut self.rng.stream("slot", j as u64))
            .map_err(candle_core::Error::wrap)?;
        let d = Tensor::from_vec(d, (self.labels.len(), k), x.device())?;
        crate::gate::apply_gate(x, &d, mask.m.as_tensor()).map_err(candle_core::Error::wrap)
    }
}

impl<A: Architecture> Objective for MaskedNetwork<'_, A> {
    fn varmap(&self) -> &VarMap {
        &self.vars
    }

    fn device(&self) -> &Device {
        self.net.device()
    }

    fn loss(&self, images: &Tensor, labels: &Tensor, epoch: usize) -> compress_train::Result<Tensor> {
        self.loss_at(images, labels, epoch, 0)
    }

    fn loss_at(&self, images: &Tensor, labels: &Tensor, epoch: usize, batch: usize) -> compress_train::Result<Tensor> {
        let wrap = |e: crate::WhiteBoxError| compress_train::TrainError::Config(e.to_string());
        let y = labels.to_vec1::<u32>()?;
        let logits = self.forward_labelled(images, &y, epoch, batch, true).map_err(wrap)?;
        let ce = cross_entropy(&logits, labels, 0.0)?;
        Ok((ce + self.penalty().map_err(wrap)?)?)
    }

    fn evaluate(&self, _epoch: usize) -> compress_train::Result<serde_json::Value> {
        let wrap = |e: crate::WhiteBoxError| compress_train::TrainError::Config(e.to_string());
        let mut t = Vec::new();
        for m in &self.masks {
            t.extend(crate::gate::fold_scale(m.m.as_tensor()).map_err(wrap)?);
        }
        let avg = t.iter().map(|&v| f64::from(v)).sum::<f64>() / t.len().max(1) as f64;
        let penalty = self.penalty().map_err(wrap)?.to_scalar::<f32>()?;
        Ok(serde_json::json!({"mean_fold_scale": avg, "penalty": penalty}))
    }
}
