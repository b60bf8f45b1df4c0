//! Which sites run at which bits (spec 2.4): `F{k}L{k}` quantizes every layer at `k` bits;
//! `F8L8` keeps the first layer's weights and the activation quantizer right after it, and the
//! classifier's weights and the activation quantizer feeding the pool / classifier, at 8 bits.
//! The sites are found by one forward pass: the first and last weight sites in call order, the
//! first and last activation sites.

use crate::error::{Result, config_err};
use candle_core::{DType, Tensor};
use compress_core::quant::RangeRule;
use compress_nn::fake_quant::{BitOverrides, FakeQuant, with_sites};
use compress_nn::{ArchConfig, Architecture, Network};
use std::sync::Arc;

/// The bit-width policy of a student.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BitPolicy {
    /// `F{w}L{w}`: every weight at `w`, every activation at `a` bits.
    Uniform {
        /// Weight bits.
        w: u32,
        /// Activation bits.
        a: u32,
    },
    /// `F8L8`: the same, with the first and last layers' weights and activation quantizers at 8.
    FirstLast8 {
        /// Weight bits elsewhere.
        w: u32,
        /// Activation bits elsewhere.
        a: u32,
    },
}

/// The quantizers of `net`'s student under `policy` (ranges running, none seen yet).
pub fn student_quantizers<A: Architecture>(
    net: &Network<A>,
    policy: BitPolicy,
    rule: RangeRule,
) -> Result<Arc<FakeQuant>> {
    let (w, a, first_last) = match policy {
        BitPolicy::Uniform { w, a } => (w, a, false),
        BitPolicy::FirstLast8 { w, a } => (w, a, true),
    };
    let mut overrides = BitOverrides::default();
    if first_last {
        let [c, h, wd] = net.config.input_shape();
        let x = Tensor::zeros((1, c, h, wd), DType::F32, net.device())?;
        let probe = FakeQuant::new(w, a, rule)?;
        let (y, sites) = with_sites(&probe, || net.forward_t(&x, false));
        y?;
        let (Some(first), Some(last)) = (sites.weight_bits.first(), sites.weight_bits.last()) else {
            return Err(config_err("the network has no quantized weight: build it from compress_nn::layers"));
        };
        if sites.activations == 0 {
            return Err(config_err("the network has no quantized activation"));
        }
        overrides.weights.insert(first.0.clone(), 8);
        overrides.weights.insert(last.0.clone(), 8);
        overrides.activations.insert(0, 8);
        overrides.activations.insert(sites.activations - 1, 8);
    }
    Ok(FakeQuant::with_overrides(w, a, overrides, rule)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use compress_nn::zoo::{ResNet, ResNetConfig};

    /// Section 8: F8L8 on ResNet-18 has exactly two weight tensors (first conv, classifier) and
    /// two activation quantizers at 8 bits; F4L4 none.
    #[test]
    fn f8l8_on_resnet18() {
        let net = Network::<ResNet>::new(ResNetConfig::resnet18(10).unwrap().input(3, 32), 0, &Device::Cpu).unwrap();
        let x = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
        for (policy, eights) in [(BitPolicy::FirstLast8 { w: 4, a: 4 }, 2), (BitPolicy::Uniform { w: 4, a: 4 }, 0)] {
            let q = student_quantizers(&net, policy, RangeRule::Plain).unwrap();
            let (_, sites) = with_sites(&q, || net.forward_t(&x, false).unwrap());
            let w8: std::collections::BTreeSet<&str> =
                sites.weight_bits.iter().filter(|(_, b)| *b == 8).map(|(p, _)| p.as_str()).collect();
            assert_eq!(w8.len(), eights, "{w8:?}");
            if eights == 2 {
                assert_eq!(w8, ["conv1", "fc"].into());
                assert_eq!((sites.activation_bits[0], *sites.activation_bits.last().unwrap()), (8, 8));
            }
            assert_eq!(sites.activation_bits.iter().filter(|&&b| b == 8).count(), eights);
            assert!(sites.weight_bits.iter().all(|(p, b)| *b == 4 || w8.contains(p.as_str())));
        }
    }
}
