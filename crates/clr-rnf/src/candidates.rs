//! Which weights CLR ranks, per architecture, and their FLOPs factors `f_l`.
//!
//! A [`Candidate`] is one channel group whose width CLR sets: the weights it scores, how its
//! factor is found, and the groups whose width follows its ratio. The official rules:
//! - VGG-16: every conv; `F_l = H W C (9 C' + 5)` (output elements times MACs per output plus
//!   bias and BatchNorm), `f_l = F_l / F_1`.
//! - CIFAR ResNet: each block's `conv1`; one factor per block, `F_b` the sum over its two convs
//!   of `H W C_out (9 C_in + 4)`, block 1 absorbing the stem, `f_b = F_b / (F_1 + F_stem)`.
//! - ResNet-50: each block's `conv1` and `conv2`, and one group per stage over every block's
//!   `conv3`; hand-set factors `[2, 2, 2, 1.5 x 4, 1 x 6, 0.5 x 3]` per block; the stem follows
//!   stage 1's ratio.
//! - A user's network (a `Stack`): every prunable group, scored over the weights that produce
//!   it, with the VGG rule measured on its layers.
//!
//! "Measured" factors come from a counting forward pass: a layer's `F` is its MACs plus, per
//! output element, 1 for its bias and 4 when a BatchNorm follows (which is what both official
//! rules write out).

use crate::error::{Result, config_err};
use candle_core::{Device, Tensor};
use compress_nn::stack::StackConfig;
use compress_nn::structure::{ChannelGroup, Role};
use compress_nn::zoo::{BlockKind, ResNetCifarConfig, ResNetConfig, VggConfig};
use compress_nn::{ArchConfig, Architecture, Network};
use std::collections::HashMap;

/// How a candidate's FLOPs factor is found.
#[derive(Debug, Clone, PartialEq)]
pub enum Factor {
    /// `F` summed over these layers (variable prefixes) by a counting forward pass; `f` is `F`
    /// over the first measured candidate's `F`.
    Measured(Vec<String>),
    /// A hand-set factor (ResNet-50).
    Fixed(f64),
}

/// One group CLR ranks and RNF selects in.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The channel group whose width the plan sets.
    pub group: String,
    /// The weight tensors whose entries CLR scores; RNF compares a channel's rows of all of them
    /// (concatenated).
    pub scored: Vec<String>,
    /// `f_l`.
    pub factor: Factor,
    /// Groups whose width follows this candidate's ratio: `int(C_g (1 - p))` (ResNet-50's stem).
    pub followers: Vec<String>,
}

impl Candidate {
    fn conv(group: impl Into<String>, conv: &str, factor: Factor) -> Self {
        Self { group: group.into(), scored: vec![format!("{conv}.weight")], factor, followers: vec![] }
    }
}

/// A config that says which of its groups CLR-RNF prunes.
pub trait ClrCandidates: ArchConfig {
    /// The candidate groups, in forward order.
    fn candidates(&self) -> Result<Vec<Candidate>>;

    /// Whether the official shrink re-initialises the candidates' BatchNorms and conv biases
    /// and any linear layer consuming them ([`crate::InheritPolicy::Official`]); true for VGG,
    /// CIFAR ResNets and user networks, false for ResNet-50 (which copies).
    fn official_resets(&self) -> bool {
        true
    }
}

impl ClrCandidates for VggConfig {
    fn candidates(&self) -> Result<Vec<Candidate>> {
        Ok((0..self.num_convs())
            .map(|i| {
                let conv = format!("features.conv{i}");
                Candidate::conv(format!("conv{i}"), &conv, Factor::Measured(vec![conv.clone()]))
            })
            .collect())
    }
}

impl ClrCandidates for ResNetCifarConfig {
    fn candidates(&self) -> Result<Vec<Candidate>> {
        let mut v = Vec::new();
        for s in 1..=3 {
            for b in 0..self.blocks() {
                let p = format!("layer{s}.{b}");
                let mut layers = vec![format!("{p}.conv1"), format!("{p}.conv2")];
                if s == 1 && b == 0 {
                    layers.push("conv1".into());
                }
                v.push(Candidate::conv(format!("{p}.inner"), &format!("{p}.conv1"), Factor::Measured(layers)));
            }
        }
        Ok(v)
    }
}

/// ResNet-50's hand-set factors per bottleneck block (section 2.1).
pub const RESNET50_FACTORS: [f64; 16] =
    [2.0, 2.0, 2.0, 1.5, 1.5, 1.5, 1.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5];

impl ClrCandidates for ResNetConfig {
    /// ResNet-50 (and any bottleneck ResNet of 16 blocks): conv1 and conv2 of every block, then
    /// the four stage groups over the conv3 weights, the stem following stage 1.
    fn candidates(&self) -> Result<Vec<Candidate>> {
        if self.kind != BlockKind::Bottleneck || self.layers.iter().sum::<usize>() != RESNET50_FACTORS.len() {
            return Err(config_err("CLR's ResNet rule is ResNet-50's (16 bottleneck blocks)"));
        }
        let mut v = Vec::new();
        let mut block = 0;
        let mut stages = Vec::new();
        for s in 1..=4 {
            let mut conv3 = Vec::new();
            for b in 0..self.layers[s - 1] {
                let p = format!("layer{s}.{b}");
                let f = Factor::Fixed(RESNET50_FACTORS[block]);
                v.push(Candidate::conv(format!("{p}.inner1"), &format!("{p}.conv1"), f.clone()));
                v.push(Candidate::conv(format!("{p}.inner2"), &format!("{p}.conv2"), f));
                conv3.push(format!("{p}.conv3.weight"));
                block += 1;
            }
            let f = Factor::Fixed(RESNET50_FACTORS[block - 1]);
            let followers = if s == 1 { vec!["stem".to_string()] } else { vec![] };
            stages.push(Candidate { group: format!("stage{s}"), scored: conv3, factor: f, followers });
        }
        v.extend(stages);
        Ok(v)
    }

    fn official_resets(&self) -> bool {
        false
    }
}

impl ClrCandidates for StackConfig {
    /// Every prunable group, scored over the conv / linear weights that produce it.
    fn candidates(&self) -> Result<Vec<Candidate>> {
        Ok(self
            .groups()
            .iter()
            .filter(|g| g.prunable)
            .map(|g| {
                let scored = producing_weights(g);
                let layers = scored.iter().map(|t| t.trim_end_matches(".weight").to_string()).collect();
                Candidate { group: g.name.clone(), scored, factor: Factor::Measured(layers), followers: vec![] }
            })
            .collect())
    }
}

/// The weight tensors (`*.weight` produced along axis 0, excluding norms) of a group.
pub(crate) fn producing_weights(g: &ChannelGroup) -> Vec<String> {
    let norms: Vec<String> = g
        .members
        .iter()
        .filter(|m| m.role == Role::Statistic)
        .filter_map(|m| m.tensor.strip_suffix(".running_mean").map(|p| format!("{p}.weight")))
        .collect();
    g.members
        .iter()
        .filter(|m| m.role == Role::Produce && m.tensor.ends_with(".weight") && !norms.contains(&m.tensor))
        .map(|m| m.tensor.clone())
        .collect()
}

/// Every candidate's `f`: fixed ones as given, measured ones `F / F_first measured` (see the
/// module docs for `F`).
pub fn flops_factors<A: Architecture>(net: &Network<A>, candidates: &[Candidate]) -> Result<Vec<f64>>
where
    A::Config: ClrCandidates,
{
    if !candidates.iter().any(|c| matches!(c.factor, Factor::Measured(_))) {
        return Ok(candidates.iter().map(|c| if let Factor::Fixed(f) = c.factor { f } else { 0.0 }).collect());
    }
    let layer_flops = official_layer_flops(net)?;
    let f_of = |layers: &[String]| -> Result<f64> {
        layers
            .iter()
            .map(|l| layer_flops.get(l).copied().ok_or_else(|| config_err(format!("layer {l} did not run"))))
            .sum()
    };
    let mut base = None;
    let mut out = Vec::with_capacity(candidates.len());
    for c in candidates {
        out.push(match &c.factor {
            Factor::Fixed(f) => *f,
            Factor::Measured(layers) => {
                let f = f_of(layers)?;
                let b = *base.get_or_insert(f);
                if b <= 0.0 {
                    return Err(config_err(format!("candidate {} measures no FLOPs", c.group)));
                }
                f / b
            }
        });
    }
    Ok(out)
}

/// Every conv / linear layer's `F = MACs + outputs (bias + 4 [BatchNorm follows])`, by prefix,
/// from one counting forward pass on a zero image.
pub fn official_layer_flops<A: Architecture>(net: &Network<A>) -> Result<HashMap<String, f64>> {
    let [c, h, w] = net.config.input_shape();
    let x = Tensor::zeros((1, c, h, w), candle_core::DType::F32, &Device::Cpu)?.to_device(net.device())?;
    let (out, layers) = compress_nn::count::count_layers(|| net.forward_t(&x, false));
    out?;
    let tensors = net.tensors()?;
    let groups = net.config.groups();
    let mut flops = HashMap::new();
    for (prefix, cost) in layers {
        let weight = format!("{prefix}.weight");
        let Some(wt) = tensors.get(&weight) else { continue };
        let per_output = (wt.elem_count() / wt.dim(0)?.max(1)) as u64;
        let outputs = cost.macs / per_output.max(1);
        let bias = tensors.contains_key(&format!("{prefix}.bias"));
        let bn = groups.iter().any(|g| {
            g.members.iter().any(|m| m.role == Role::Produce && m.tensor == weight)
                && g.members.iter().any(|m| m.role == Role::Statistic)
        });
        let extra = u64::from(bias) + if bn { 4 } else { 0 };
        flops.insert(prefix, (cost.macs + outputs * extra) as f64);
    }
    Ok(flops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use compress_nn::zoo::{ResNetCifar, Vgg};

    fn round5(v: &[f64]) -> Vec<f64> {
        v.iter().map(|x| (x * 1e5).round() / 1e5).collect()
    }

    /// Section 8: the VGG shape rule reproduces the official 13 constants to 5 decimals.
    #[test]
    fn vgg16_factors() {
        let cfg = VggConfig::vgg16(10).unwrap().single_linear();
        let net = Network::<Vgg>::new(cfg.clone(), 0, &Device::Cpu).unwrap();
        let f = flops_factors(&net, &cfg.candidates().unwrap()).unwrap();
        let official = [
            1.0, 18.15625, 9.07812, 18.07812, 9.03906, 18.03906, 18.03906, 9.01953, 18.01953, 18.01953, 4.50488,
            4.50488, 4.50488,
        ];
        // To 5 decimals: 9.078125 is exact (the official list prints it rounded half to even).
        assert!(f.iter().zip(official).all(|(a, b)| (a - b).abs() <= 5e-6 + 1e-12), "{f:?}");
        assert_eq!(f[2], 9.078125);
    }

    /// Section 8: the ResNet block rule gives 0.90520 / 0.67278 / 0.89297 / 0.66667 / 0.88685.
    #[test]
    fn resnet56_factors() {
        let cfg = ResNetCifarConfig::new(56, 10).unwrap();
        let net = Network::<ResNetCifar>::new(cfg.clone(), 0, &Device::Cpu).unwrap();
        let c = cfg.candidates().unwrap();
        assert_eq!(c.len(), 27);
        let f = round5(&flops_factors(&net, &c).unwrap());
        assert_eq!(f[0], 1.0);
        assert!(f[1..9].iter().all(|&x| x == 0.9052), "{f:?}");
        assert_eq!((f[9], f[10], f[17]), (0.67278, 0.89297, 0.89297));
        assert_eq!((f[18], f[19], f[26]), (0.66667, 0.88685, 0.88685));
        let cfg110 = ResNetCifarConfig::new(110, 10).unwrap();
        assert_eq!(cfg110.candidates().unwrap().len(), 54);
    }

    #[test]
    fn resnet50_candidates() {
        let cfg = ResNetConfig::resnet50(1000).unwrap();
        let c = cfg.candidates().unwrap();
        assert_eq!(c.len(), 32 + 4);
        assert_eq!(c[32].scored, ["layer1.0.conv3.weight", "layer1.1.conv3.weight", "layer1.2.conv3.weight"]);
        assert_eq!(c[32].followers, ["stem"]);
        assert_eq!((c[0].factor.clone(), c[31].factor.clone()), (Factor::Fixed(2.0), Factor::Fixed(0.5)));
        assert_eq!(c[33].factor, Factor::Fixed(1.5));
        assert!(ResNetConfig::resnet18(10).unwrap().candidates().is_err());
        assert!(!cfg.official_resets());
    }
}
