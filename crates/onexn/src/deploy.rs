//! Deployment (spec section 2, "Filter rearrangement", deployment use, and "Packed format"):
//! permute every rearranged layer's outputs physically (its bias, BatchNorm, any depthwise conv
//! in between, and its consumer's input channels, through the zoo's channel groups), which leaves
//! the function unchanged and makes the mask block-aligned; then pack each masked layer in the
//! 1xN format and rebuild the model with the packed kernels in place of the dense layers.

use crate::error::{OnexnError, Result};
use candle_core::{DType, Tensor};
use compress_core::sparse::{Bsr1xN, PackedConv2d, PackedLinear};
use compress_nn::layers::{Replacement, Replacements};
use compress_nn::{ArchConfig, Architecture, Network};
use std::collections::{BTreeMap, HashMap};

/// A prunable layer of a model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    /// Variable prefix (`<layer>.weight`, optional `<layer>.bias`).
    pub layer: String,
    /// The channel group its outputs form, when the layer is rearranged (its outputs reach one
    /// consumer through channel-wise ops only); `None`: not rearranged.
    pub rearrange_group: Option<String>,
    /// Stride and padding of a conv (ignored for a linear layer).
    pub stride: usize,
    /// Zero padding of a conv.
    pub padding: usize,
}

/// The network and its masks after physically permuting every group in `perms`
/// (`group -> pi`, position `i` takes old channel `pi[i]`). The masks move with the weights:
/// they are permuted by the same surgery, as if they were the weights.
pub fn rearrange<A: Architecture>(
    net: &Network<A>,
    masks: &BTreeMap<String, Tensor>,
    perms: &BTreeMap<String, Vec<usize>>,
) -> Result<(Network<A>, BTreeMap<String, Tensor>)> {
    let tensors = net.tensors()?;
    let mut mask_tensors: HashMap<String, Tensor> = tensors.clone();
    for (layer, m) in masks {
        mask_tensors.insert(format!("{layer}.weight"), m.clone());
    }
    let mut mask_net = Network::<A>::from_tensors(net.config.clone(), &mask_tensors, net.device())?;
    let mut net = Network::<A>::from_tensors(net.config.clone(), &tensors, net.device())?;
    for (group, pi) in perms {
        net = net.permuted(group, pi)?;
        mask_net = mask_net.permuted(group, pi)?;
    }
    let permuted = mask_net.tensors()?;
    let masks = masks
        .keys()
        .map(|l| {
            let m =
                permuted.get(&format!("{l}.weight")).ok_or_else(|| OnexnError::Config(format!("mask of {l} lost")))?;
            Ok((l.clone(), m.clone()))
        })
        .collect::<Result<_>>()?;
    Ok((net, masks))
}

/// How well a layer packs: blocks kept against blocks in the mask's own block count. A mask
/// that is not block-aligned (a rearranged mask before the physical permutation) keeps more
/// blocks than the mask prunes: the kernel stays correct but loses its speed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PackedLayer {
    /// Layer.
    pub layer: String,
    /// Kept blocks.
    pub nnzb: usize,
    /// All blocks.
    pub blocks: usize,
    /// Fraction of weights that are non-zero in the masked layer.
    pub weight_density: f64,
}

impl PackedLayer {
    /// Kept blocks / all blocks.
    pub fn block_density(&self) -> f64 {
        self.nnzb as f64 / self.blocks.max(1) as f64
    }

    /// Whether the packed blocks hold no more entries than the mask keeps (block-aligned mask).
    pub fn aligned(&self) -> bool {
        (self.block_density() - self.weight_density).abs() < 1e-9
    }
}

/// Packs every target's `W ⊙ M` with blocks of `n` outputs, as layer replacements for
/// [`Network::with_replacements`].
pub fn pack<A: Architecture>(
    net: &Network<A>,
    masks: &BTreeMap<String, Tensor>,
    targets: &[Target],
    n: usize,
) -> Result<(Replacements, Vec<PackedLayer>)> {
    let tensors = net.tensors()?;
    let mut map = Replacements::new();
    let mut report = Vec::new();
    for t in targets {
        let get = |s: &str| tensors.get(&format!("{}.{s}", t.layer));
        let w = get("weight").ok_or_else(|| OnexnError::Config(format!("no layer {:?}", t.layer)))?;
        let wm = match masks.get(&t.layer) {
            Some(m) => (w * m)?,
            None => w.clone(),
        };
        let bsr = Bsr1xN::from_dense(&wm, n)?;
        let nonzero = wm.ne(0f32)?.to_dtype(DType::F32)?.mean_all()?.to_scalar::<f32>()?;
        report.push(PackedLayer {
            layer: t.layer.clone(),
            nnzb: bsr.nnzb(),
            blocks: bsr.c_out / n * bsr.c_in,
            weight_density: f64::from(nonzero),
        });
        let bias = get("bias").map(|b| b.to_dtype(DType::F32)?.to_vec1::<f32>()).transpose()?;
        let r = if wm.rank() == 2 {
            Replacement::new(PackedLinear::new(bsr, bias)?)
        } else {
            Replacement::new(PackedConv2d::new(bsr, bias, t.stride, t.padding)?)
        };
        map.insert(t.layer.clone(), r);
    }
    Ok((map, report))
}

/// The MLP's targets: every hidden layer, rearranged (its outputs feed only the next layer);
/// the classifier stays dense (the code's FC rate 0).
pub fn mlp_targets(cfg: &compress_nn::zoo::MlpConfig) -> Vec<Target> {
    (0..cfg.depth())
        .map(|i| Target { layer: format!("fc{i}"), rearrange_group: Some(format!("fc{i}")), stride: 1, padding: 0 })
        .collect()
}

/// MobileNetV2's targets: every pointwise (1x1) conv. As the official alternating flag works out
/// (spec section 2), the expansion convs and the final 1x1 are rearranged; the projections,
/// whose outputs feed residual adds, are not. The classifier stays dense.
pub fn mobilenet_v2_targets(net: &Network<compress_nn::zoo::MobileNetV2>) -> Result<Vec<Target>> {
    let groups = net.config.groups();
    let mut out: Vec<Target> = net
        .tensors()?
        .iter()
        .filter(|(k, w)| k.ends_with(".weight") && matches!(w.dims(), [_, i, 1, 1] if *i > 1))
        .map(|(k, _)| {
            let layer = k.trim_end_matches(".weight").to_string();
            let group = groups
                .iter()
                .find(|g| {
                    (g.name.ends_with(".expand") || g.name == "head")
                        && g.members.iter().any(|m| m.tensor == *k && m.role == compress_nn::structure::Role::Produce)
                })
                .map(|g| g.name.clone());
            Target { layer, rearrange_group: group, stride: 1, padding: 0 }
        })
        .collect();
    out.sort_by_key(|t| layer_order(&t.layer));
    Ok(out)
}

/// Sort key that orders `features.10.x` after `features.9.x`.
fn layer_order(name: &str) -> Vec<(u64, String)> {
    name.split('.').map(|s| s.parse::<u64>().map_or((u64::MAX, s.to_string()), |n| (n, String::new()))).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pattern::{OneByN, Pattern, layer_mask};
    use candle_core::Device;
    use compress_nn::zoo::{Mlp, MlpConfig, MobileNetV2, MobileNetV2Config};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

    /// Section 8: the rearranged weight packs to the spec's BSR, and the next layer sees
    /// the same function: W2 relu(y) = W2[:, pi] relu(y') = [18.7, 51.5].
    #[test]
    fn spec_packed_rearranged_layer_and_next_layer_invariance() {
        let dev = Device::Cpu;
        let cfg = MlpConfig::new([1, 1, 3], &[8], 2).unwrap();
        let w = crate::pattern::tests::spec_w();
        let w2 = (Tensor::arange(0f32, 16.0, &dev).unwrap().reshape((2, 8)).unwrap() / 10.0).unwrap();
        let tensors: HashMap<String, Tensor> = [
            ("fc0.weight".to_string(), w.clone()),
            ("fc0.bias".into(), Tensor::zeros(8, DType::F32, &dev).unwrap()),
            ("fc1.weight".into(), w2),
            ("fc1.bias".into(), Tensor::zeros(2, DType::F32, &dev).unwrap()),
        ]
        .into();
        let net = Network::<Mlp>::from_tensors(cfg.clone(), &tensors, &dev).unwrap();
        let lm = layer_mask(&w, Pattern::Block(OneByN::l1(4, true)), 0.5, 0).unwrap();
        let masks: BTreeMap<String, Tensor> = [("fc0".to_string(), lm.mask.clone())].into();
        let perms: BTreeMap<String, Vec<usize>> = [("fc0".to_string(), lm.perm.clone().unwrap())].into();
        let (re, re_masks) = rearrange(&net, &masks, &perms).unwrap();
        let targets = [Target { layer: "fc0".into(), rearrange_group: Some("fc0".into()), stride: 1, padding: 0 }];
        let (map, report) = pack(&re, &re_masks, &targets, 4).unwrap();
        assert!(report[0].aligned(), "{report:?}");
        let (_, report_unaligned) = pack(&net, &masks, &targets, 4).unwrap();
        assert!(!report_unaligned[0].aligned(), "the mapped-back mask is not block-aligned");
        let re_w = &re.tensors().unwrap()["fc0.weight"];
        let bsr = Bsr1xN::from_dense(&(re_w * &re_masks["fc0"]).unwrap(), 4).unwrap();
        assert_eq!(bsr.indptr, vec![0, 2, 3]);
        assert_eq!(bsr.indices, vec![0, 1, 2]);
        assert_eq!(bsr.data, vec![-7., 4., -9., 5., 9., -8., -8., 4., -9., 8., -8., 2.]);
        // y' = kernel(x) = y[pi].
        let x = Tensor::new(&[[1f32, 2., -1.]], &dev).unwrap();
        let layer = PackedLinear::new(bsr, None).unwrap();
        let y_re = candle_core::Module::forward(&layer, &x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y_re[0], vec![11., -12., -25., 13., 9., -8., 8., -2.]);
        let y = x.matmul(&(&w * &lm.mask).unwrap().t().unwrap()).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y[0], vec![9., -8., -25., -12., 8., -2., 13., 11.]);
        // Next layer: the deployed (permuted, packed) network and the masked one agree.
        let xin = x.reshape((1, 1, 1, 3)).unwrap();
        let masked = crate::MaskedNetwork::new(&net, &masks, true).unwrap().to_network().unwrap();
        let want = masked.forward_t(&xin, false).unwrap();
        let got = re.with_replacements(&map).unwrap();
        let got = candle_core::ModuleT::forward_t(&got, &xin, false).unwrap();
        let g = got.to_vec2::<f32>().unwrap();
        assert!((g[0][0] - 18.7).abs() < 1e-4 && (g[0][1] - 51.5).abs() < 1e-4, "{g:?}");
        assert!(max_diff(&got, &want) < 1e-5);
    }

    /// Rearranging and packing every pointwise conv of MobileNetV2 (BN, depthwise convs and
    /// consumers permuted with them) leaves its output unchanged.
    #[test]
    fn mobilenet_v2_deployment_keeps_the_function() {
        let dev = Device::Cpu;
        let cfg = MobileNetV2Config::new(0.5, 10).unwrap().input(3, 32).small_input();
        let net = Network::<MobileNetV2>::new(cfg, 4, &dev).unwrap();
        // Non-trivial BatchNorm statistics, so a mis-permuted statistic shows.
        let x = Tensor::randn(0f32, 1.0, (4, 3, 32, 32), &dev).unwrap();
        net.forward_t(&x, true).unwrap();
        let targets = mobilenet_v2_targets(&net).unwrap();
        assert_eq!(targets.len(), 34, "MobileNetV2 has 34 pointwise convs (section 4)");
        let rearranged: Vec<&Target> = targets.iter().filter(|t| t.rearrange_group.is_some()).collect();
        assert_eq!(rearranged.len(), 16 + 1, "16 expansions and the final 1x1");
        let t = net.tensors().unwrap();
        let (mut masks, mut perms) = (BTreeMap::new(), BTreeMap::new());
        for (i, tg) in targets.iter().enumerate() {
            let pattern = Pattern::Block(OneByN::l1(4, tg.rearrange_group.is_some()));
            let lm = layer_mask(&t[&format!("{}.weight", tg.layer)], pattern, 0.5, i).unwrap();
            if let (Some(g), Some(pi)) = (&tg.rearrange_group, lm.perm) {
                perms.insert(g.clone(), pi);
            }
            masks.insert(tg.layer.clone(), lm.mask);
        }
        let masked = crate::MaskedNetwork::new(&net, &masks, true).unwrap().to_network().unwrap();
        let want = masked.forward_t(&x, false).unwrap();
        let (re, re_masks) = rearrange(&net, &masks, &perms).unwrap();
        let (map, report) = pack(&re, &re_masks, &targets, 4).unwrap();
        assert!(report.iter().all(PackedLayer::aligned), "every packed layer block-aligned");
        let deployed = re.with_replacements(&map).unwrap();
        let got = candle_core::ModuleT::forward_t(&deployed, &x, false).unwrap();
        assert!(max_diff(&got, &want) < 1e-4, "{}", max_diff(&got, &want));
    }
}
