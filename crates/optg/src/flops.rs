//! How the FLOPs of an unstructured sparse network are counted here: every kept weight does one
//! multiply-add per output position of its layer, so a layer's MACs are `kept_l x positions_l`
//! (`positions` = output pixels of a conv, 1 for a linear layer) and the network's are their
//! sum; BatchNorm, biases and activations are dense and not counted (they are a fraction of a
//! percent of a ResNet-50's). FLOPs = 2 x MACs where a table counts both operations.
//!
//! How the weights are spread over layers is learned, so a sparsity alone fixes the MACs only
//! within [`macs_bounds`]: the kept weights all in the layers of fewest positions, or of most.

use crate::error::{Result, config_err};
use candle_core::{DType, Tensor};
use compress_nn::Model;
use compress_nn::count::count_layers;
use std::collections::BTreeMap;

/// A sparsifiable layer: its weight's name, size and output positions.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerCost {
    /// The weight's variable name (`<layer>.weight`).
    pub name: String,
    /// Entries of the weight.
    pub weights: usize,
    /// Multiply-adds per weight entry (output positions).
    pub positions: u64,
}

/// Every conv and linear layer of `net` (a counting forward pass of one `input`-shaped sample),
/// in the order they ran.
pub fn layer_costs<M: Model + ?Sized>(net: &M, input: [usize; 3]) -> Result<Vec<LayerCost>> {
    let x = Tensor::zeros((1, input[0], input[1], input[2]), DType::F32, net.device())?;
    let (out, layers) = count_layers(|| net.forward_t(&x, false));
    out?;
    let data = net.varmap().data().lock().map_err(|_| crate::OptgError::Poisoned)?;
    layers
        .into_iter()
        .map(|(prefix, c)| {
            let name = format!("{prefix}.weight");
            let weights = data.get(&name).map(|v| v.elem_count()).ok_or_else(|| config_err(format!("no {name}")))?;
            if weights == 0 || c.macs % weights as u64 != 0 {
                return Err(config_err(format!("{name}: {} MACs for {weights} weights", c.macs)));
            }
            Ok(LayerCost { name, weights, positions: c.macs / weights as u64 })
        })
        .collect()
}

/// `sum_l kept_l x positions_l` (a layer missing from `kept` counts dense).
pub fn sparse_macs(costs: &[LayerCost], kept: &BTreeMap<String, usize>) -> u64 {
    costs.iter().map(|c| kept.get(&c.name).copied().unwrap_or(c.weights).min(c.weights) as u64 * c.positions).sum()
}

/// The least and the most MACs `kept` weights can cost: filled into the layers of fewest
/// positions first, or of most.
pub fn macs_bounds(costs: &[LayerCost], kept: usize) -> (u64, u64) {
    let mut by: Vec<&LayerCost> = costs.iter().collect();
    by.sort_by_key(|c| c.positions);
    let fill = |it: &mut dyn Iterator<Item = &&LayerCost>| {
        let (mut left, mut macs) = (kept, 0u64);
        for c in it {
            let k = left.min(c.weights);
            macs += k as u64 * c.positions;
            left -= k;
        }
        macs
    };
    (fill(&mut by.iter()), fill(&mut by.iter().rev()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;
    use compress_nn::Network;
    use compress_nn::zoo::{Vgg, VggConfig};

    #[test]
    fn layer_costs_count_positions_and_bounds_bracket_every_spread() {
        // conv0: 4 x 1 x 3 x 3 at 8 x 8; conv1: 6 x 4 x 3 x 3 at 4 x 4; linear 24 -> 3.
        let cfg = VggConfig::new(&[4, 0, 6, 0], 3).unwrap().input(1, 8).unwrap().single_linear();
        let net = Network::<Vgg>::new(cfg, 0, &Device::Cpu).unwrap();
        let c = layer_costs(&net, [1, 8, 8]).unwrap();
        let got: Vec<(&str, usize, u64)> = c.iter().map(|c| (c.name.as_str(), c.weights, c.positions)).collect();
        assert_eq!(
            got,
            [
                ("features.conv0.weight", 36, 64),
                ("features.conv1.weight", 216, 16),
                ("classifier.linear.weight", 72, 1)
            ]
        );
        let dense = 36 * 64 + 216 * 16 + 72;
        assert_eq!(sparse_macs(&c, &BTreeMap::new()), dense);
        let kept: BTreeMap<String, usize> =
            [("features.conv0.weight".to_string(), 10), ("classifier.linear.weight".to_string(), 5)].into();
        assert_eq!(sparse_macs(&c, &kept), 10 * 64 + 216 * 16 + 5);
        // 80 kept: fewest positions first = 72 x 1 + 8 x 16; most first = 36 x 64 + 44 x 16.
        assert_eq!(macs_bounds(&c, 80), (72 + 8 * 16, 36 * 64 + 44 * 16));
        assert_eq!(macs_bounds(&c, 36 + 216 + 72), (dense, dense));
    }
}
