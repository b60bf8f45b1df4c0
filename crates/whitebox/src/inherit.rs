//! Weight inheritance (spec 2.6): the kept output filters and the matching input slices are
//! copied (the generic surgery of `Network::prune`), and every BatchNorm a slot folds into has
//! `gamma_c, beta_c` scaled by `t_c = (sum_k M[k, c]) / 2` (signed; running statistics copied).
//! The pruned network carries no masks: it is an ordinary network of the same architecture.

use crate::error::{Result, config_err};
use crate::gate::fold_scale;
use crate::layout::MaskSlot;
use candle_core::Tensor;
use compress_nn::{Architecture, Network};
use std::collections::BTreeMap;

/// `net` with every slot's fold factor scaled into its BatchNorms (same widths).
pub fn fold<A: Architecture>(net: &Network<A>, slots: &[MaskSlot], masks: &[Tensor]) -> Result<Network<A>> {
    if slots.len() != masks.len() {
        return Err(config_err(format!("{} masks for {} slots", masks.len(), slots.len())));
    }
    let mut tensors = net.tensors()?;
    for (s, m) in slots.iter().zip(masks) {
        if s.fold.is_empty() {
            continue;
        }
        let t = fold_scale(m)?;
        for bn in &s.fold {
            for p in ["weight", "bias"] {
                let name = format!("{bn}.{p}");
                let v = tensors.get(&name).ok_or_else(|| config_err(format!("no tensor {name:?} to fold into")))?;
                if v.dims() != [t.len()] {
                    return Err(config_err(format!("{name:?} is {:?}, its mask {} wide", v.dims(), t.len())));
                }
                let scale = Tensor::from_slice(&t, t.len(), v.device())?.to_dtype(v.dtype())?;
                let scaled = (v * scale)?;
                tensors.insert(name, scaled);
            }
        }
    }
    Ok(Network::from_tensors(net.config.clone(), &tensors, net.device())?)
}

/// The pruned network: `net` folded, then sliced to `kept` (groups not named keep all).
pub fn inherit<A: Architecture>(
    net: &Network<A>,
    slots: &[MaskSlot],
    masks: &[Tensor],
    kept: &BTreeMap<String, Vec<usize>>,
) -> Result<Network<A>> {
    Ok(fold(net, slots, masks)?.prune(kept)?)
}
