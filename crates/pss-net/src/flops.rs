//! FLOPs of a subnet in the spec's units (2.2): MACs of every conv `H_out^2 (C_out / groups)
//! k^2 C_in`, the global pool `H^2 C` and the classifier `C classes`; biases, BatchNorm and
//! activations not counted. Divide by 1e6 for the ImageNet tables' MFLOPs (1e3 for the mini's
//! kMACs).

use crate::space::{StructureSpace, SubnetConfig, make_divisible};

/// Output side of a 3x3 conv with padding 1.
fn out_side(h: usize, stride: usize) -> usize {
    (h + 2 - 3) / stride + 1
}

/// A slimmable MobileNetV1: a 3x3 stride-2 stem (`m_1`), separable blocks (depthwise 3x3 at the
/// block's stride on its input width, pointwise to `m_(i+1)`), global pooling, a classifier.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SlimMobileNetV1 {
    /// Input channels.
    pub in_channels: usize,
    /// The space: bases = stem then each block's output.
    pub space: StructureSpace,
    /// Each block's depthwise stride.
    pub strides: Vec<usize>,
    /// Classes.
    pub classes: usize,
}

impl SlimMobileNetV1 {
    /// The ImageNet supernet (L = 14, m in [0.75, 1], r in 128..=224 step 8, divisor 8).
    pub fn imagenet() -> Self {
        Self {
            in_channels: 3,
            space: StructureSpace {
                bases: vec![32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024],
                mults: (0.75, 1.0),
                resolutions: (128, 224, 8),
                divisor: 8,
            },
            strides: vec![1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1],
            classes: 1000,
        }
    }

    /// Section 9's MBV1-tiny on 1 x 28 x 28 digits: stem 16, blocks 32 s1, 64 s2, 64 s1, 128 s2;
    /// m in [0.5, 1], r in 16..=28 step 4, divisor 4.
    pub fn tiny() -> Self {
        Self {
            in_channels: 1,
            space: StructureSpace {
                bases: vec![16, 32, 64, 64, 128],
                mults: (0.5, 1.0),
                resolutions: (16, 28, 4),
                divisor: 4,
            },
            strides: vec![1, 2, 1, 2],
            classes: 10,
        }
    }

    /// MACs of `cfg`.
    pub fn macs(&self, cfg: &SubnetConfig) -> u64 {
        let c = self.space.channels(cfg);
        let mut h = out_side(cfg.resolution, 2);
        let mut macs = (h * h * c[0] * 9 * self.in_channels) as u64;
        for (i, &s) in self.strides.iter().enumerate() {
            h = out_side(h, s);
            macs += (h * h * 9 * c[i] + h * h * c[i + 1] * c[i]) as u64;
        }
        let last = c[self.strides.len()];
        macs + (h * h * last + last * self.classes) as u64
    }
}

/// MobileNetV2's stages `(t, c, n, s)`.
const V2_STAGES: [(usize, usize, usize, usize); 7] =
    [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];

/// A slimmable MobileNetV2 (L = 9): `m_1` the stem, `m_2..m_8` each stage's output width (shared
/// by its blocks), the hidden width `md(6 x input)`, no expansion in the first block; `m_9` names
/// the 1280 head, which always outputs 1280 (it changes only the latency table's key).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SlimMobileNetV2 {
    /// The space: bases `[32, 16, 24, 32, 64, 96, 160, 320, 1280]`.
    pub space: StructureSpace,
    /// Classes.
    pub classes: usize,
}

impl SlimMobileNetV2 {
    /// The ImageNet supernet (m in [0.75, 1], r in 128..=224 step 8, divisor 8).
    pub fn imagenet() -> Self {
        Self {
            space: StructureSpace {
                bases: vec![32, 16, 24, 32, 64, 96, 160, 320, 1280],
                mults: (0.75, 1.0),
                resolutions: (128, 224, 8),
                divisor: 8,
            },
            classes: 1000,
        }
    }

    /// MACs of `cfg`.
    pub fn macs(&self, cfg: &SubnetConfig) -> u64 {
        let c = self.space.channels(cfg);
        let mut h = out_side(cfg.resolution, 2);
        let mut macs = (h * h * c[0] * 9 * 3) as u64;
        let mut c_in = c[0];
        for (stage, &(t, _, n, s)) in V2_STAGES.iter().enumerate() {
            let c_out = c[stage + 1];
            for b in 0..n {
                let hidden = if t == 1 { c_in } else { make_divisible((t * c_in) as f64, self.space.divisor) };
                if t != 1 {
                    macs += (h * h * hidden * c_in) as u64;
                }
                h = out_side(h, if b == 0 { s } else { 1 });
                macs += (h * h * 9 * hidden + h * h * c_out * hidden) as u64;
                c_in = c_out;
            }
        }
        let head = 1280;
        macs + (h * h * head * c_in + h * h * head + head * self.classes) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mflops(m: u64) -> f64 {
        (m as f64 / 1e4).round() / 100.0
    }

    #[test]
    fn imagenet_flops_match_section_8() {
        let v1 = SlimMobileNetV1::imagenet();
        let u = |r, w| SubnetConfig::uniform(r, w, 14);
        let got: Vec<f64> = [(128, 0.75), (224, 0.75), (192, 0.9), (160, 1.0), (224, 1.0)]
            .iter()
            .map(|&(r, w)| mflops(v1.macs(&u(r, w))))
            .collect();
        assert_eq!(got, [106.78, 325.44, 342.78, 290.70, 568.79]);
        let v2 = SlimMobileNetV2::imagenet();
        let u = |r, w| SubnetConfig::uniform(r, w, 9);
        let got: Vec<f64> = [(128, 0.75), (160, 0.8), (224, 0.9), (128, 1.0), (224, 1.0)]
            .iter()
            .map(|&(r, w)| mflops(v2.macs(&u(r, w))))
            .collect();
        assert_eq!(got, [69.15, 114.17, 269.08, 99.09, 300.84]);
    }

    #[test]
    fn the_minis_max_and_min_nets_cost_as_the_reference_counted() {
        let t = SlimMobileNetV1::tiny();
        assert_eq!(t.macs(&t.space.max_config()), 643_808);
        assert_eq!(t.macs(&t.space.min_config()), 59_136);
    }
}
