//! A multilayer perceptron on flattened images: `fc0 -> ReLU -> fc1 -> ReLU -> ... -> fc{L}`
//! (the 1xN paper's CPU-scale stand-in for a CNN: a linear weight `[out, in]` is exactly a 1x1
//! convolution's matrix). Weights Kaiming-normal (fan-in, ReLU), biases 0. Names: `fc{i}`; the
//! hidden widths are the groups `fc{i}` for every layer but the last.

use crate::error::{Result, config_err};
use crate::layers::{Activation, Linear};
use crate::network::{AnalyticCost, ArchConfig, Architecture, replace_widths};
use crate::structure::{ChannelGroup, Widths};
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_core::cost::{self, Cost};

/// Configuration of an MLP over `[C, H, W]` inputs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MlpConfig {
    /// Input sample shape (flattened to `C H W` features).
    pub input: [usize; 3],
    /// Classes (width of the last layer).
    pub num_classes: usize,
    widths: Widths,
}

impl MlpConfig {
    /// Hidden layers of the given widths between `input` and `num_classes` outputs.
    pub fn new(input: [usize; 3], hidden: &[usize], num_classes: usize) -> Result<Self> {
        if hidden.contains(&0) || num_classes == 0 || input.contains(&0) {
            return Err(config_err("an MLP needs non-zero widths, classes and input dimensions"));
        }
        let widths = hidden.iter().enumerate().map(|(i, &w)| (format!("fc{i}"), w)).collect();
        Ok(Self { input, num_classes, widths })
    }

    /// The 1xN spec's MNIST MLP `784 -> 64 -> 32 -> 10`.
    pub fn mnist() -> Self {
        Self { input: [1, 28, 28], num_classes: 10, widths: [("fc0".into(), 64), ("fc1".into(), 32)].into() }
    }

    /// Number of hidden layers.
    pub fn depth(&self) -> usize {
        self.widths.len()
    }

    /// `(fin, fout)` of every layer, the classifier last.
    pub fn layers(&self) -> Vec<(usize, usize)> {
        let mut fin = self.input.iter().product();
        let mut out = Vec::new();
        for i in 0..=self.depth() {
            let fout = if i < self.depth() { self.widths[&format!("fc{i}")] } else { self.num_classes };
            out.push((fin, fout));
            fin = fout;
        }
        out
    }
}

impl ArchConfig for MlpConfig {
    fn widths(&self) -> &Widths {
        &self.widths
    }

    fn with_widths(&self, widths: Widths) -> Result<Self> {
        Ok(Self { widths: replace_widths(&self.widths, widths)?, ..self.clone() })
    }

    fn groups(&self) -> Vec<ChannelGroup> {
        (0..self.depth())
            .map(|i| {
                ChannelGroup::new(format!("fc{i}"), self.widths[&format!("fc{i}")])
                    .produced_by(&format!("fc{i}"), true)
                    .consumed_by(&format!("fc{}", i + 1))
            })
            .collect()
    }

    fn input_shape(&self) -> [usize; 3] {
        self.input
    }
}

impl AnalyticCost for MlpConfig {
    fn cost(&self) -> Cost {
        self.layers().iter().fold(Cost::default(), |c, &(fin, fout)| {
            c + cost::linear(fin, fout, 1, true) + cost::elementwise(fout as u64)
        })
    }
}

/// The MLP.
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<Linear>,
}

impl Architecture for Mlp {
    type Config = MlpConfig;

    fn build(cfg: &MlpConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let layers = cfg
            .layers()
            .iter()
            .enumerate()
            .map(|(i, &(fin, fout))| Linear::kaiming(fin, fout, vb.pp(format!("fc{i}"))))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self { layers })
    }
}

impl ModuleT for Mlp {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        let mut h = x.flatten_from(1)?;
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i + 1 < self.layers.len() {
                h = Activation::Relu.apply(&h)?;
            }
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::network::Network;
    use candle_core::{DType, Device};
    use std::collections::BTreeMap;

    #[test]
    fn shapes_cost_and_surgery() {
        let dev = Device::Cpu;
        let cfg = MlpConfig::mnist();
        assert_eq!(cfg.layers(), vec![(784, 64), (64, 32), (32, 10)]);
        let net = Network::<Mlp>::new(cfg.clone(), 3, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (5, 1, 28, 28), &dev).unwrap();
        assert_eq!(net.forward_t(&x, false).unwrap().dims(), &[5, 10]);
        assert_eq!(net.counted_cost().unwrap(), cfg.cost());
        assert_eq!(net.count_params().unwrap(), 784 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10);
        // Kaiming fan-in: std sqrt(2 / 784) ~ 0.0505; biases 0.
        let t = net.tensors().unwrap();
        let w = &t["fc0.weight"];
        let std = w.sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
        assert!((std - (2f32 / 784.0).sqrt()).abs() < 0.003, "{std}");
        assert_eq!(t["fc1.bias"].abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        // Masked == pruned on a hidden group.
        let kept: BTreeMap<String, Vec<usize>> =
            [("fc0".to_string(), vec![1, 5, 9, 40]), ("fc1".into(), vec![0, 31])].into();
        let a = net.masked(&kept).unwrap().forward_t(&x, false).unwrap();
        let b = net.prune(&kept).unwrap().forward_t(&x, false).unwrap();
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_dtype(DType::F32).unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
        assert!(MlpConfig::new([1, 2, 2], &[0], 3).is_err());
    }

    #[test]
    fn replaced_layers_forward_through_the_replacement() {
        use crate::layers::{Replacement, Replacements};
        let dev = Device::Cpu;
        let net = Network::<Mlp>::new(MlpConfig::mnist(), 1, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 1, 28, 28), &dev).unwrap();
        let t = net.tensors().unwrap();
        // fc1 replaced by its own dense computation doubled: the output must change accordingly.
        #[derive(Debug)]
        struct Twice(Tensor, Tensor);
        impl Module for Twice {
            fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
                x.matmul(&self.0.t()?)?.broadcast_add(&self.1)? * 2.0
            }
        }
        let map: Replacements =
            [("fc1".to_string(), Replacement::new(Twice(t["fc1.weight"].clone(), t["fc1.bias"].clone())))].into();
        let replaced = net.with_replacements(&map).unwrap();
        let a = replaced.forward_t(&x, false).unwrap();
        let h = x
            .flatten_from(1)
            .unwrap()
            .matmul(&t["fc0.weight"].t().unwrap())
            .unwrap()
            .broadcast_add(&t["fc0.bias"])
            .unwrap()
            .relu()
            .unwrap();
        let h = (h.matmul(&t["fc1.weight"].t().unwrap()).unwrap().broadcast_add(&t["fc1.bias"]).unwrap() * 2.0)
            .unwrap()
            .relu()
            .unwrap();
        let want = h.matmul(&t["fc2.weight"].t().unwrap()).unwrap().broadcast_add(&t["fc2.bias"]).unwrap();
        let d = (a - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-4, "{d}");
        // Outside build_with nothing is replaced; unknown names are refused.
        let plain = net.forward_t(&x, false).unwrap();
        let again = Network::<Mlp>::from_tensors(MlpConfig::mnist(), &t, &dev).unwrap().forward_t(&x, false).unwrap();
        assert_eq!(plain.to_vec2::<f32>().unwrap(), again.to_vec2::<f32>().unwrap());
        assert!(net.with_replacements(&[("fc9".to_string(), map["fc1"].clone())].into()).is_err());
    }
}
