//! ResNet-18/34/50 in the ImageNet layout (He et al. 2016; torchvision v1.5: the stride of a
//! bottleneck sits on its 3x3 conv). Stem `conv1` 7x7/2 + `bn1` + ReLU + 3x3/2 max pool, four
//! stages `layer1..4` of basic (18/34) or bottleneck (50) blocks with `downsample.0|1` 1x1
//! projections where the shape changes, global average pooling and `fc`. Tensor names are
//! torchvision's (and timm's), so their safetensors load directly. Input channels, input size
//! and classes are configurable (e.g. 1 x 28 x 28 MNIST).

use crate::error::{Result, config_err};
use crate::layers::{Activation, ConvBn, ConvSpec, Linear, WeightInit, global_avg_pool, max_pool2d};
use crate::network::{AnalyticCost, ArchConfig, Architecture, replace_widths};
use crate::structure::{ChannelGroup, Widths};
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_core::cost::{self, Cost};

/// Basic (two 3x3 convs) or bottleneck (1x1, 3x3, 1x1 with 4x expansion) blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BlockKind {
    /// ResNet-18/34.
    Basic,
    /// ResNet-50/101/152.
    Bottleneck,
}

/// Configuration of an ImageNet-layout ResNet.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResNetConfig {
    /// Block type.
    pub kind: BlockKind,
    /// Blocks per stage.
    pub layers: [usize; 4],
    /// Input channels.
    pub in_channels: usize,
    /// Input side.
    pub image_size: usize,
    /// Classes.
    pub num_classes: usize,
    /// Whether `layer1.0` has a projection (bottlenecks: yes; basic blocks: no, so the stem is
    /// tied to stage 1 through the identity shortcut).
    downsample1: bool,
    widths: Widths,
}

impl ResNetConfig {
    fn new(kind: BlockKind, layers: [usize; 4], num_classes: usize) -> Result<Self> {
        if num_classes == 0 || layers.contains(&0) {
            return Err(config_err("ResNet needs at least one block per stage and one class"));
        }
        let exp = if kind == BlockKind::Bottleneck { 4 } else { 1 };
        let mut widths = Widths::new();
        let downsample1 = kind == BlockKind::Bottleneck;
        if downsample1 {
            widths.insert("stem".into(), 64);
        }
        for (s, planes) in [(1, 64), (2, 128), (3, 256), (4, 512)] {
            widths.insert(format!("stage{s}"), planes * exp);
            for b in 0..layers[s - 1] {
                widths.insert(format!("layer{s}.{b}.inner1"), planes);
                if kind == BlockKind::Bottleneck {
                    widths.insert(format!("layer{s}.{b}.inner2"), planes);
                }
            }
        }
        Ok(Self { kind, layers, in_channels: 3, image_size: 224, num_classes, downsample1, widths })
    }

    /// ResNet-18.
    pub fn resnet18(num_classes: usize) -> Result<Self> {
        Self::new(BlockKind::Basic, [2, 2, 2, 2], num_classes)
    }

    /// ResNet-34.
    pub fn resnet34(num_classes: usize) -> Result<Self> {
        Self::new(BlockKind::Basic, [3, 4, 6, 3], num_classes)
    }

    /// ResNet-50.
    pub fn resnet50(num_classes: usize) -> Result<Self> {
        Self::new(BlockKind::Bottleneck, [3, 4, 6, 3], num_classes)
    }

    /// The same network on `c x size x size` inputs.
    pub fn input(mut self, c: usize, size: usize) -> Self {
        self.in_channels = c;
        self.image_size = size;
        self
    }

    fn w(&self, k: &str) -> usize {
        self.widths.get(k).copied().unwrap_or(0)
    }

    fn stem(&self) -> usize {
        if self.downsample1 { self.w("stem") } else { self.w("stage1") }
    }

    fn stage(&self, s: usize) -> usize {
        self.w(&format!("stage{s}"))
    }

    /// Side after the stem (conv 7x7/2 then max pool 3x3/2).
    fn stem_sides(&self) -> (usize, usize) {
        let a = cost::conv_out(self.image_size, 7, 2, 3, 1);
        (a, cost::conv_out(a, 3, 2, 1, 1))
    }

    fn has_downsample(&self, s: usize, b: usize) -> bool {
        b == 0 && (s > 1 || self.downsample1)
    }

    fn block_in(&self, s: usize, b: usize) -> usize {
        match (s, b) {
            (1, 0) => self.stem(),
            (_, 0) => self.stage(s - 1),
            _ => self.stage(s),
        }
    }
}

impl ArchConfig for ResNetConfig {
    fn widths(&self) -> &Widths {
        &self.widths
    }

    fn with_widths(&self, widths: Widths) -> Result<Self> {
        Ok(Self { widths: replace_widths(&self.widths, widths)?, ..self.clone() })
    }

    fn groups(&self) -> Vec<ChannelGroup> {
        let bottleneck = self.kind == BlockKind::Bottleneck;
        let last = if bottleneck { "conv3" } else { "conv2" };
        let last_bn = if bottleneck { "bn3" } else { "bn2" };
        let mut out = Vec::new();
        if self.downsample1 {
            out.push(
                ChannelGroup::new("stem", self.stem())
                    .produced_by("conv1", false)
                    .batch_norm("bn1")
                    .consumed_by("layer1.0.conv1")
                    .consumed_by("layer1.0.downsample.0"),
            );
        }
        for s in 1..=4 {
            let mut g = ChannelGroup::new(format!("stage{s}"), self.stage(s));
            if s == 1 && !self.downsample1 {
                g = g.produced_by("conv1", false).batch_norm("bn1").consumed_by("layer1.0.conv1");
            }
            for b in 0..self.layers[s - 1] {
                let p = format!("layer{s}.{b}");
                g = g.produced_by(&format!("{p}.{last}"), false).batch_norm(&format!("{p}.{last_bn}"));
                if self.has_downsample(s, b) {
                    g = g.produced_by(&format!("{p}.downsample.0"), false).batch_norm(&format!("{p}.downsample.1"));
                }
                if b > 0 {
                    g = g.consumed_by(&format!("{p}.conv1"));
                }
            }
            g = if s < 4 {
                g.consumed_by(&format!("layer{}.0.conv1", s + 1)).consumed_by(&format!("layer{}.0.downsample.0", s + 1))
            } else {
                g.consumed_by("fc")
            };
            out.push(g);
            for b in 0..self.layers[s - 1] {
                let p = format!("layer{s}.{b}");
                out.push(
                    ChannelGroup::new(format!("{p}.inner1"), self.w(&format!("{p}.inner1")))
                        .produced_by(&format!("{p}.conv1"), false)
                        .batch_norm(&format!("{p}.bn1"))
                        .consumed_by(&format!("{p}.conv2")),
                );
                if bottleneck {
                    out.push(
                        ChannelGroup::new(format!("{p}.inner2"), self.w(&format!("{p}.inner2")))
                            .produced_by(&format!("{p}.conv2"), false)
                            .batch_norm(&format!("{p}.bn2"))
                            .consumed_by(&format!("{p}.conv3")),
                    );
                }
            }
        }
        out
    }

    fn input_shape(&self) -> [usize; 3] {
        [self.in_channels, self.image_size, self.image_size]
    }
}

impl AnalyticCost for ResNetConfig {
    fn cost(&self) -> Cost {
        let (a, mut side) = self.stem_sides();
        let mut c = cost::conv2d(self.in_channels, self.stem(), 7, 1, a, a, false) + cost::norm(self.stem());
        for s in 1..=4 {
            for b in 0..self.layers[s - 1] {
                let p = format!("layer{s}.{b}");
                let stride = if b == 0 && s > 1 { 2 } else { 1 };
                let out_side = cost::conv_out(side, 3, stride, 1, 1);
                let (cin, cout, i1) = (self.block_in(s, b), self.stage(s), self.w(&format!("{p}.inner1")));
                if self.kind == BlockKind::Bottleneck {
                    let i2 = self.w(&format!("{p}.inner2"));
                    c += cost::conv2d(cin, i1, 1, 1, side, side, false) + cost::norm(i1);
                    c += cost::conv2d(i1, i2, 3, 1, out_side, out_side, false) + cost::norm(i2);
                    c += cost::conv2d(i2, cout, 1, 1, out_side, out_side, false) + cost::norm(cout);
                } else {
                    c += cost::conv2d(cin, i1, 3, 1, out_side, out_side, false) + cost::norm(i1);
                    c += cost::conv2d(i1, cout, 3, 1, out_side, out_side, false) + cost::norm(cout);
                }
                if self.has_downsample(s, b) {
                    c += cost::conv2d(cin, cout, 1, 1, out_side, out_side, false) + cost::norm(cout);
                }
                side = out_side;
            }
        }
        c + cost::linear(self.stage(4), self.num_classes, 1, true)
    }
}

#[derive(Debug, Clone)]
struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let Some((last, first)) = self.convs.split_last() else {
            candle_core::bail!("ResNet block without convolutions")
        };
        let mut h = x.clone();
        for c in first {
            h = c.forward_t(&h, train)?;
        }
        let skip = match &self.downsample {
            Some(d) => d.forward_t(x, train)?,
            None => x.clone(),
        };
        // relu(bn(conv(h)) + skip), one op on the CPU in training.
        last.forward_residual(&h, &skip, Activation::Relu, train)
    }
}

/// An ImageNet-layout ResNet.
#[derive(Debug, Clone)]
pub struct ResNet {
    stem: ConvBn,
    blocks: Vec<Block>,
    fc: Linear,
}

impl Architecture for ResNet {
    type Config = ResNetConfig;

    fn build(cfg: &ResNetConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let stem_spec =
            ConvSpec { kernel: 7, stride: 2, padding: 3, groups: 1, bias: false, init: WeightInit::KaimingFanOut };
        let stem = ConvBn::new(cfg.in_channels, cfg.stem(), stem_spec, Activation::Relu, vb.pp("conv1"), vb.pp("bn1"))?;
        let mut blocks = Vec::new();
        for s in 1..=4 {
            for b in 0..cfg.layers[s - 1] {
                let p = vb.pp(format!("layer{s}.{b}"));
                let name = format!("layer{s}.{b}");
                let stride = if b == 0 && s > 1 { 2 } else { 1 };
                let (cin, cout) = (cfg.block_in(s, b), cfg.stage(s));
                let i1 = cfg.w(&format!("{name}.inner1"));
                let convs = if cfg.kind == BlockKind::Bottleneck {
                    let i2 = cfg.w(&format!("{name}.inner2"));
                    vec![
                        ConvBn::new(cin, i1, fan_out(1), Activation::Relu, p.pp("conv1"), p.pp("bn1"))?,
                        ConvBn::new(i1, i2, fan_out(3).stride(stride), Activation::Relu, p.pp("conv2"), p.pp("bn2"))?,
                        ConvBn::new(i2, cout, fan_out(1), Activation::None, p.pp("conv3"), p.pp("bn3"))?,
                    ]
                } else {
                    vec![
                        ConvBn::new(cin, i1, fan_out(3).stride(stride), Activation::Relu, p.pp("conv1"), p.pp("bn1"))?,
                        ConvBn::new(i1, cout, fan_out(3), Activation::None, p.pp("conv2"), p.pp("bn2"))?,
                    ]
                };
                let downsample = if cfg.has_downsample(s, b) {
                    let d = p.pp("downsample");
                    Some(ConvBn::new(cin, cout, fan_out(1).stride(stride), Activation::None, d.pp("0"), d.pp("1"))?)
                } else {
                    None
                };
                blocks.push(Block { convs, downsample });
            }
        }
        Ok(Self { stem, blocks, fc: Linear::new(cfg.stage(4), cfg.num_classes, true, vb.pp("fc"))? })
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = max_pool2d(&self.stem.forward_t(x, train)?, 3, 2, 1)?;
        for b in &self.blocks {
            h = b.forward_t(&h, train)?;
        }
        self.fc.forward(&global_avg_pool(&h)?)
    }
}

/// A "same" `k x k` convolution initialised as the architecture's official code does.
fn fan_out(k: usize) -> ConvSpec {
    ConvSpec::same(k).init(WeightInit::KaimingFanOut)
}
