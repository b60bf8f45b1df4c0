//! Step 3: the narrow network inherits the kept weights (section 2.4).
//!
//! [`InheritPolicy::Official`] is what the official code does on VGG and CIFAR ResNets: after
//! slicing, every candidate group's BatchNorm is reset (`gamma = 1`, `beta = 0`, running mean 0,
//! variance 1), the convs producing it get zero biases, and a linear layer consuming it (VGG's
//! classifier) is re-initialised with weights `N(0, 0.01^2)` and zero bias. This is
//! load-bearing: RNF keeps hub filters, often weakly activated, whose copied BatchNorm shift can
//! keep a ReLU off for good. On ResNet-50 the official code copies everything, and so does
//! `Official` there ([`ClrCandidates::official_resets`]). [`InheritPolicy::CopyAll`] copies.

use crate::candidates::{ClrCandidates, producing_weights};
use crate::error::{Result, config_err};
use candle_core::Tensor;
use compress_core::rng::SeededRng;
use compress_nn::structure::Role;
use compress_nn::{ArchConfig, Architecture, Network};
use rand_distr::{Distribution, Normal};
use std::collections::BTreeMap;

/// What the narrow network keeps of the wide one's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InheritPolicy {
    /// The official code's behaviour (the default; see the module docs).
    Official,
    /// Every kept entry copied (BatchNorm, biases and classifier included).
    CopyAll,
}

/// The narrow network: `net` sliced to `kept`, then re-initialised as `policy` says for the
/// groups in `reset` (a plan's groups). The classifier's fresh weights come from stream
/// `("clr-rnf/classifier", 0)` of `seed`.
pub fn shrink<A: Architecture>(
    net: &Network<A>,
    kept: &BTreeMap<String, Vec<usize>>,
    reset: &[String],
    policy: InheritPolicy,
    seed: u64,
) -> Result<Network<A>>
where
    A::Config: ClrCandidates,
{
    let pruned = net.prune(kept)?;
    if policy == InheritPolicy::CopyAll || !net.config.official_resets() {
        return Ok(pruned);
    }
    let mut tensors = pruned.tensors()?;
    let groups = pruned.config.groups();
    let rng = SeededRng::new(seed);
    let set = |tensors: &mut std::collections::HashMap<String, Tensor>,
               name: &str,
               f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>|
     -> Result<()> {
        let t = tensors.get(name).ok_or_else(|| config_err(format!("no tensor {name:?}")))?;
        let v = f(t)?;
        tensors.insert(name.to_string(), v);
        Ok(())
    };
    let mut linears = Vec::new();
    for name in reset {
        let g = groups.iter().find(|g| &g.name == name).ok_or_else(|| config_err(format!("no group {name:?}")))?;
        for m in &g.members {
            let norm = m.tensor.strip_suffix(".running_mean").or_else(|| m.tensor.strip_suffix(".running_var"));
            if let Some(p) = norm {
                set(&mut tensors, &format!("{p}.weight"), &|t| t.ones_like())?;
                set(&mut tensors, &format!("{p}.bias"), &|t| t.zeros_like())?;
                set(&mut tensors, &format!("{p}.running_mean"), &|t| t.zeros_like())?;
                set(&mut tensors, &format!("{p}.running_var"), &|t| t.ones_like())?;
            }
        }
        for w in producing_weights(g) {
            let bias = format!("{}.bias", w.trim_end_matches(".weight"));
            if g.members.iter().any(|m| m.role == Role::Produce && m.tensor == bias) {
                set(&mut tensors, &bias, &|t| t.zeros_like())?;
            }
        }
        for m in g.members.iter().filter(|m| m.role == Role::Consume) {
            if tensors.get(&m.tensor).is_some_and(|t| t.rank() == 2) && !linears.contains(&m.tensor) {
                linears.push(m.tensor.clone());
            }
        }
    }
    for (i, w) in linears.iter().enumerate() {
        let t = tensors.get(w).ok_or_else(|| config_err(format!("no tensor {w:?}")))?;
        let mut r = rng.stream("clr-rnf/classifier", i as u64);
        let normal = Normal::new(0f32, 0.01).map_err(|e| config_err(e.to_string()))?;
        let v: Vec<f32> = (0..t.elem_count()).map(|_| normal.sample(&mut r)).collect();
        let fresh = Tensor::from_vec(v, t.dims(), t.device())?.to_dtype(t.dtype())?;
        tensors.insert(w.clone(), fresh);
        let bias = format!("{}.bias", w.trim_end_matches(".weight"));
        if let Some(b) = tensors.get(&bias) {
            let z = b.zeros_like()?;
            tensors.insert(bias, z);
        }
    }
    Ok(Network::from_tensors(pruned.config.clone(), &tensors, net.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candidates::ClrCandidates;
    use candle_core::{D, Device};
    use compress_nn::zoo::{ResNetCifar, ResNetCifarConfig, Vgg, VggConfig};

    fn all_kept(cfg: &impl ArchConfig) -> BTreeMap<String, Vec<usize>> {
        cfg.groups().iter().filter(|g| g.prunable).map(|g| (g.name.clone(), (0..g.width).collect())).collect()
    }

    /// Section 8: with every filter kept, CopyAll gives the original logits, Official does not.
    #[test]
    fn keep_everything_identity() {
        let cfg = VggConfig::new(&[6, 0, 8, 0], 10).unwrap().input(1, 8).unwrap().single_linear();
        let net = Network::<Vgg>::new(cfg.clone(), 0, &Device::Cpu).unwrap();
        // Non-trivial running statistics, so a reset shows.
        let x = Tensor::arange(0f32, 256.0, &Device::Cpu).unwrap().reshape((4, 1, 8, 8)).unwrap().sin().unwrap();
        for _ in 0..3 {
            net.forward_t(&x, true).unwrap();
        }
        let groups: Vec<String> = cfg.candidates().unwrap().into_iter().map(|c| c.group).collect();
        let y = net.forward_t(&x, false).unwrap();
        let copy = shrink(&net, &all_kept(&cfg), &groups, InheritPolicy::CopyAll, 0).unwrap();
        let d = (copy.forward_t(&x, false).unwrap() - &y).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        let off = shrink(&net, &all_kept(&cfg), &groups, InheritPolicy::Official, 0).unwrap();
        let d = (off.forward_t(&x, false).unwrap() - &y).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() > 1e-3);
        let t = off.tensors().unwrap();
        let ones = |n: &str| t[n].to_vec1::<f32>().unwrap().iter().all(|&v| v == 1.0);
        let zeros = |n: &str| t[n].to_vec1::<f32>().unwrap().iter().all(|&v| v == 0.0);
        assert!(ones("features.norm0.weight") && ones("features.norm1.running_var"));
        assert!(zeros("features.norm1.bias") && zeros("features.norm0.running_mean") && zeros("features.conv1.bias"));
        assert!(zeros("classifier.linear.bias"));
        let w = t["classifier.linear.weight"].flatten_all().unwrap();
        let std = w.sqr().unwrap().mean(D::Minus1).unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap();
        assert!((std - 0.01).abs() < 0.002, "classifier std {std}");
    }

    /// Section 8: shapes after shrinking, and on a CIFAR ResNet Official resets bn1 only.
    #[test]
    fn shapes_and_resnet_resets() {
        let cfg = VggConfig::new(&[6, 0, 8, 0], 10).unwrap().input(1, 8).unwrap().single_linear();
        let net = Network::<Vgg>::new(cfg, 0, &Device::Cpu).unwrap();
        let kept: BTreeMap<String, Vec<usize>> = [("conv0".into(), vec![1, 4]), ("conv1".into(), vec![0, 2, 7])].into();
        let t = shrink(&net, &kept, &["conv0".into(), "conv1".into()], InheritPolicy::Official, 0)
            .unwrap()
            .tensors()
            .unwrap();
        assert_eq!(t["features.conv0.weight"].dims(), [2, 1, 3, 3]);
        assert_eq!(t["features.conv1.weight"].dims(), [3, 2, 3, 3]);
        assert_eq!(t["classifier.linear.weight"].dims(), [10, 3 * 2 * 2]);

        let cfg = ResNetCifarConfig::new(20, 10).unwrap();
        let net = Network::<ResNetCifar>::new(cfg.clone(), 0, &Device::Cpu).unwrap();
        let kept: BTreeMap<String, Vec<usize>> = [("layer1.0.inner".into(), vec![0, 3, 5])].into();
        let p = shrink(&net, &kept, &["layer1.0.inner".into()], InheritPolicy::Official, 0).unwrap();
        let (a, b) = (net.tensors().unwrap(), p.tensors().unwrap());
        assert_eq!(b["layer1.0.conv1.weight"].dims(), [3, 16, 3, 3]);
        assert_eq!(b["layer1.0.conv2.weight"].dims(), [16, 3, 3, 3]);
        assert!(b["layer1.0.bn1.weight"].to_vec1::<f32>().unwrap().iter().all(|&v| v == 1.0));
        let same =
            |n: &str| (&a[n] - &b[n]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() == 0.0;
        assert!(same("layer1.0.bn2.weight") && same("conv1.weight") && same("fc.weight"), "stem, bn2, fc copied");
    }
}
