//! Per-layer rates: which convolution each entry of an official rate list addresses, and the
//! compact config they give.

use crate::error::{Result, config_err};
use crate::rates::kept_filters;
use compress_nn::ArchConfig;
use compress_nn::stack::StackConfig;
use compress_nn::structure::Widths;
use compress_nn::zoo::{BlockKind, ResNetCifarConfig, ResNetConfig, VggConfig};

/// A convolution whose output filters a per-layer rate prunes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunableConv {
    /// Tensor prefix of the convolution (`<conv>.weight`, `<conv>.bias`).
    pub conv: String,
    /// The channel group (width) its filters form. Residual stages are one group produced by
    /// several convolutions.
    pub group: String,
}

impl PrunableConv {
    fn new(conv: impl Into<String>, group: impl Into<String>) -> Self {
        Self { conv: conv.into(), group: group.into() }
    }
}

/// A config whose prunable convolutions are listed in the order of the official per-layer rate
/// lists (after expansion, see [`expand_resnet_cifar`] and [`expand_resnet50`]).
pub trait LayerwiseRates: ArchConfig {
    /// The prunable convolutions, in forward order.
    fn prunable_convs(&self) -> Vec<PrunableConv>;
}

impl LayerwiseRates for VggConfig {
    fn prunable_convs(&self) -> Vec<PrunableConv> {
        (0..self.num_convs()).map(|i| PrunableConv::new(format!("features.conv{i}"), format!("conv{i}"))).collect()
    }
}

impl LayerwiseRates for ResNetCifarConfig {
    /// The stem, then `(conv1, conv2)` of every block; `conv2` and the stem produce the stage.
    fn prunable_convs(&self) -> Vec<PrunableConv> {
        let mut v = vec![PrunableConv::new("conv1", "stage1")];
        for s in 1..=3 {
            for b in 0..self.blocks() {
                let p = format!("layer{s}.{b}");
                v.push(PrunableConv::new(format!("{p}.conv1"), format!("{p}.inner")));
                v.push(PrunableConv::new(format!("{p}.conv2"), format!("stage{s}")));
            }
        }
        v
    }
}

impl LayerwiseRates for ResNetConfig {
    /// The stem, then every block's main-path convolutions; the last one produces the stage.
    /// Projection shortcuts (`downsample.0`) are not listed: they follow the stage width.
    fn prunable_convs(&self) -> Vec<PrunableConv> {
        let bottleneck = self.kind == BlockKind::Bottleneck;
        let stem = if bottleneck { "stem" } else { "stage1" };
        let mut v = vec![PrunableConv::new("conv1", stem)];
        for s in 1..=4 {
            for b in 0..self.layers[s - 1] {
                let p = format!("layer{s}.{b}");
                v.push(PrunableConv::new(format!("{p}.conv1"), format!("{p}.inner1")));
                if bottleneck {
                    v.push(PrunableConv::new(format!("{p}.conv2"), format!("{p}.inner2")));
                    v.push(PrunableConv::new(format!("{p}.conv3"), format!("stage{s}")));
                } else {
                    v.push(PrunableConv::new(format!("{p}.conv2"), format!("stage{s}")));
                }
            }
        }
        v
    }
}

impl LayerwiseRates for StackConfig {
    /// Every declared conv and hidden linear layer in forward order; a residual block's last
    /// layer produces its input's group (so its rate must equal that group's other producers').
    fn prunable_convs(&self) -> Vec<PrunableConv> {
        self.producers().into_iter().map(|(conv, group)| PrunableConv::new(conv, group)).collect()
    }
}

/// The config `cfg` pruned by one rate per prunable convolution: each group keeps
/// `int(C (1 - r))` channels. Every convolution of a group must carry the same rate.
pub fn compact_config<C: LayerwiseRates>(cfg: &C, rates: &[f64]) -> Result<C> {
    let convs = cfg.prunable_convs();
    if rates.len() != convs.len() {
        return Err(config_err(format!(
            "{} per-layer rates given, the model has {} prunable convolutions",
            rates.len(),
            convs.len()
        )));
    }
    let mut chosen: Widths = Widths::new();
    let mut rate_of: std::collections::BTreeMap<&str, f64> = Default::default();
    for (c, &r) in convs.iter().zip(rates) {
        let full = *cfg.widths().get(&c.group).ok_or_else(|| config_err(format!("no width {:?}", c.group)))?;
        match rate_of.get(c.group.as_str()) {
            Some(&prev) if prev != r => {
                return Err(config_err(format!(
                    "group {} gets rate {prev} and rate {r} (at {}): its convolutions share one width",
                    c.group, c.conv
                )));
            }
            _ => {
                rate_of.insert(&c.group, r);
                chosen.insert(c.group.clone(), kept_filters(full, r)?);
            }
        }
    }
    Ok(cfg.with_widths(chosen)?)
}

/// CIFAR ResNet rates: the official list holds one rate per block's `conv1` (`3n` entries) and
/// then one per stage (3 entries). Per layer: the stem gets the stage-1 rate, then each block
/// gives `(conv1 rate, stage rate)`: `1 + 2 * 3n` rates in [`LayerwiseRates`] order.
pub fn expand_resnet_cifar(c: &[f64], blocks_per_stage: usize) -> Result<Vec<f64>> {
    let n = blocks_per_stage;
    if c.len() != 3 * n + 3 {
        return Err(config_err(format!("a CIFAR ResNet with {n} blocks per stage needs {} rates", 3 * n + 3)));
    }
    let stage = &c[3 * n..];
    let mut v = vec![stage[0]];
    for s in 0..3 {
        for b in 0..n {
            v.push(c[s * n + b]);
            v.push(stage[s]);
        }
    }
    Ok(v)
}

/// ResNet-50 rates: the official list holds the stem rate, the 16 blocks' `conv1` rates, their
/// 16 `conv2` rates and the 4 stage (`conv3`) rates (37 entries). Per layer: the stem, then
/// `(conv1, conv2, stage)` for each block: 49 rates in [`LayerwiseRates`] order.
pub fn expand_resnet50(c: &[f64]) -> Result<Vec<f64>> {
    const LAYERS: [usize; 4] = [3, 4, 6, 3];
    if c.len() != 37 {
        return Err(config_err(format!(
            "ResNet-50 needs 37 rates (stem, 16 conv1, 16 conv2, 4 stages), not {}",
            c.len()
        )));
    }
    let mut v = vec![c[0]];
    let mut block = 0;
    for (s, &n) in LAYERS.iter().enumerate() {
        for _ in 0..n {
            v.extend([c[1 + block], c[17 + block], c[33 + s]]);
            block += 1;
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rates::parse_cprate;

    #[test]
    fn vgg16_widths_of_dcff() {
        let cfg = VggConfig::vgg16(10).unwrap().single_linear();
        let rates = parse_cprate("[0.5]*2+[0.4]*2+[0.35]*3+[0.85]*6").unwrap();
        let c = compact_config(&cfg, &rates).unwrap();
        let w: Vec<usize> = (0..13).map(|i| c.widths()[&format!("conv{i}")]).collect();
        assert_eq!(w, [32, 32, 76, 76, 166, 166, 166, 76, 76, 76, 76, 76, 76]);
    }

    #[test]
    fn resnet56_conv1_widths() {
        let cfg = ResNetCifarConfig::new(56, 10).unwrap();
        let c = parse_cprate(
            "[0.7]*2+[0.5]*3+[0.3]*2+[0.4]+[0.8]+[0.7]*2+[0.8]*4+[0.4]+[0.2]*2+[0.7]+[0.3]+[0.8]+\
             [0.4]*2+[0.7]+[0.3]+[0.4]+[0.8]+[0.0]*3",
        )
        .unwrap();
        let layer = expand_resnet_cifar(&c, 9).unwrap();
        assert_eq!(layer.len(), 1 + 2 * 27);
        let compact = compact_config(&cfg, &layer).unwrap();
        let inner: Vec<usize> = (1..=3)
            .flat_map(|s| (0..9).map(move |b| (s, b)))
            .map(|(s, b)| compact.widths()[&format!("layer{s}.{b}.inner")])
            .collect();
        assert_eq!(
            inner,
            [4, 4, 8, 8, 8, 11, 11, 9, 3, 9, 9, 6, 6, 6, 6, 19, 25, 25, 19, 44, 12, 38, 38, 19, 44, 38, 12]
        );
        assert_eq!([16, 32, 64], [1, 2, 3].map(|s| compact.widths()[&format!("stage{s}")]));
    }

    #[test]
    fn resnet50_run_b_widths() {
        let cfg = ResNetConfig::resnet50(1000).unwrap();
        let c = parse_cprate("[0.0]+[0.6]*10+[0.5]*6+[0.5]*10+[0.4]*6+[0.2]*4").unwrap();
        let compact = compact_config(&cfg, &expand_resnet50(&c).unwrap()).unwrap();
        let w = |k: &str| compact.widths()[k];
        assert_eq!((w("layer1.0.inner1"), w("layer1.0.inner2"), w("stage1")), (25, 32, 204));
        assert_eq!((w("layer2.3.inner1"), w("layer2.3.inner2"), w("stage2")), (51, 64, 409));
        assert_eq!((w("layer3.2.inner1"), w("layer3.2.inner2"), w("stage3")), (102, 128, 819));
        assert_eq!((w("layer3.3.inner1"), w("layer3.3.inner2")), (128, 153));
        assert_eq!((w("layer4.2.inner1"), w("layer4.2.inner2"), w("stage4")), (256, 307, 1638));
    }

    #[test]
    fn inconsistent_or_miscounted_rates_are_errors() {
        let cfg = ResNetCifarConfig::new(20, 10).unwrap();
        let mut layer = expand_resnet_cifar(&[0.5; 12], 3).unwrap();
        assert!(compact_config(&cfg, &layer[1..]).is_err(), "one rate short");
        layer[2] = 0.25; // block 1's conv2 disagrees with the stem on the stage-1 rate
        assert!(compact_config(&cfg, &layer).is_err());
        assert!(expand_resnet_cifar(&[0.5; 11], 3).is_err());
        assert!(expand_resnet50(&[0.5; 36]).is_err());
    }
}
