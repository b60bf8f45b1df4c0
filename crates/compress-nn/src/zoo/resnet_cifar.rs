//! ResNet for CIFAR (He et al. 2016, section 4.2): depth `6n + 2`, a 3x3 stem, three stages of
//! `n` basic blocks at 16/32/64 channels (strides 1/2/2), global average pooling and a linear
//! classifier. Shortcuts where the shape changes are option A (stride-2 subsampling and zero
//! channel padding, parameter-free, as in the paper and the pruning papers' ResNet-56/110) or
//! option B (1x1 conv + BatchNorm). Tensor names follow the pruning papers' code:
//! `conv1`, `bn1`, `layer{s}.{b}.conv1|bn1|conv2|bn2|shortcut.0|shortcut.1`, `fc`.

use crate::error::{Result, config_err};
use crate::layers::{Activation, BatchNorm2d, Conv2d, ConvBn, ConvSpec, Linear, WeightInit, global_avg_pool};
use crate::network::{AnalyticCost, ArchConfig, Architecture, replace_widths};
use crate::structure::{ChannelGroup, Widths};
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_core::cost::{self, Cost};

/// Shortcut type where a block changes shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Shortcut {
    /// Subsample by 2 and zero-pad the new channels (no parameters). Ties channels by position,
    /// so the stage widths are not prunable.
    A,
    /// 1x1 convolution + BatchNorm.
    B,
}

/// Configuration of a CIFAR ResNet.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResNetCifarConfig {
    /// `6n + 2`: 20, 32, 44, 56, 110, ...
    pub depth: usize,
    /// Shortcut type.
    pub shortcut: Shortcut,
    /// Input channels (3 for CIFAR, 1 for MNIST).
    pub in_channels: usize,
    /// Input side (32 for CIFAR, 28 for MNIST).
    pub image_size: usize,
    /// Classes.
    pub num_classes: usize,
    widths: Widths,
}

impl ResNetCifarConfig {
    /// ResNet-`depth` for 3x32x32 inputs with option-A shortcuts, at the paper's widths.
    pub fn new(depth: usize, num_classes: usize) -> Result<Self> {
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            return Err(config_err(format!("CIFAR ResNet depth must be 6n + 2 with n >= 1, not {depth}")));
        }
        if num_classes == 0 {
            return Err(config_err("num_classes must be at least 1"));
        }
        let n = (depth - 2) / 6;
        let mut widths = Widths::new();
        for (s, w) in [(1, 16), (2, 32), (3, 64)] {
            widths.insert(format!("stage{s}"), w);
            for b in 0..n {
                widths.insert(format!("layer{s}.{b}.inner"), w);
            }
        }
        Ok(Self { depth, shortcut: Shortcut::A, in_channels: 3, image_size: 32, num_classes, widths })
    }

    /// The same network on `c x size x size` inputs.
    pub fn input(mut self, c: usize, size: usize) -> Self {
        self.in_channels = c;
        self.image_size = size;
        self
    }

    /// The same network with another shortcut type.
    pub fn with_shortcut(mut self, s: Shortcut) -> Self {
        self.shortcut = s;
        self
    }

    /// Basic blocks per stage.
    pub fn blocks(&self) -> usize {
        (self.depth - 2) / 6
    }

    fn w(&self, key: &str) -> usize {
        self.widths.get(key).copied().unwrap_or(0)
    }

    fn stage(&self, s: usize) -> usize {
        self.w(&format!("stage{s}"))
    }

    fn inner(&self, s: usize, b: usize) -> usize {
        self.w(&format!("layer{s}.{b}.inner"))
    }

    /// Spatial side of stage `s` (1-based).
    fn side(&self, s: usize) -> usize {
        (1..s).fold(self.image_size, |n, _| cost::conv_out(n, 3, 2, 1, 1))
    }
}

impl ArchConfig for ResNetCifarConfig {
    fn widths(&self) -> &Widths {
        &self.widths
    }

    fn with_widths(&self, widths: Widths) -> Result<Self> {
        let widths = replace_widths(&self.widths, widths)?;
        let c = Self { widths, ..self.clone() };
        if c.shortcut == Shortcut::A && (c.stage(2) < c.stage(1) || c.stage(3) < c.stage(2)) {
            return Err(config_err("option-A shortcuts need non-decreasing stage widths"));
        }
        Ok(c)
    }

    fn groups(&self) -> Vec<ChannelGroup> {
        let n = self.blocks();
        let mut out = Vec::new();
        for s in 1..=3 {
            let mut g = ChannelGroup::new(format!("stage{s}"), self.stage(s));
            if self.shortcut == Shortcut::A {
                g = g.fixed();
            }
            if s == 1 {
                g = g.produced_by("conv1", false).batch_norm("bn1");
            }
            for b in 0..n {
                let p = format!("layer{s}.{b}");
                g = g.produced_by(&format!("{p}.conv2"), false).batch_norm(&format!("{p}.bn2"));
                if b == 0 && s > 1 && self.shortcut == Shortcut::B {
                    g = g.produced_by(&format!("{p}.shortcut.0"), false).batch_norm(&format!("{p}.shortcut.1"));
                }
                if b > 0 || s == 1 {
                    g = g.consumed_by(&format!("{p}.conv1"));
                }
            }
            if s < 3 {
                g = g.consumed_by(&format!("layer{}.0.conv1", s + 1));
                if self.shortcut == Shortcut::B {
                    g = g.consumed_by(&format!("layer{}.0.shortcut.0", s + 1));
                }
            } else {
                g = g.consumed_by("fc");
            }
            out.push(g);
            for b in 0..n {
                let p = format!("layer{s}.{b}");
                out.push(
                    ChannelGroup::new(format!("{p}.inner"), self.inner(s, b))
                        .produced_by(&format!("{p}.conv1"), false)
                        .batch_norm(&format!("{p}.bn1"))
                        .consumed_by(&format!("{p}.conv2")),
                );
            }
        }
        out
    }

    fn input_shape(&self) -> [usize; 3] {
        [self.in_channels, self.image_size, self.image_size]
    }
}

impl AnalyticCost for ResNetCifarConfig {
    fn cost(&self) -> Cost {
        let s1 = self.side(1);
        let mut c = cost::conv2d(self.in_channels, self.stage(1), 3, 1, s1, s1, false) + cost::norm(self.stage(1));
        for s in 1..=3 {
            let side = self.side(s);
            for b in 0..self.blocks() {
                let cin = if b == 0 && s > 1 { self.stage(s - 1) } else { self.stage(s) };
                let (inner, out) = (self.inner(s, b), self.stage(s));
                c += cost::conv2d(cin, inner, 3, 1, side, side, false) + cost::norm(inner);
                c += cost::conv2d(inner, out, 3, 1, side, side, false) + cost::norm(out);
                if b == 0 && s > 1 && self.shortcut == Shortcut::B {
                    c += cost::conv2d(cin, out, 1, 1, side, side, false) + cost::norm(out);
                }
            }
        }
        c + cost::linear(self.stage(3), self.num_classes, 1, true)
    }
}

#[derive(Debug, Clone)]
enum Skip {
    Identity,
    /// Option A: subsample by `stride`, pad `lo` channels before and `hi` after.
    Pad {
        stride: usize,
        lo: usize,
        hi: usize,
    },
    Conv(Conv2d, BatchNorm2d),
}

#[derive(Debug, Clone)]
struct BasicBlock {
    a: ConvBn,
    b: ConvBn,
    skip: Skip,
}

impl BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let h = self.a.forward_t(x, train)?;
        let s = match &self.skip {
            Skip::Identity => x.clone(),
            Skip::Pad { stride, lo, hi } => pad_channels(&subsample(x, *stride)?, *lo, *hi)?,
            Skip::Conv(c, bn) => bn.forward_t(&c.forward(x)?, train)?,
        };
        // relu(bn(conv(h)) + s), one op on the CPU in training.
        self.b.forward_residual(&h, &s, Activation::Relu, train)
    }
}

/// `x[:, :, ::s, ::s]`.
pub(crate) fn subsample(x: &Tensor, s: usize) -> candle_core::Result<Tensor> {
    if s == 1 {
        return Ok(x.clone());
    }
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (h.div_ceil(s), w.div_ceil(s));
    let x = x.pad_with_zeros(2, 0, oh * s - h)?.pad_with_zeros(3, 0, ow * s - w)?;
    x.reshape((n, c, oh, s, ow, s))?.narrow(3, 0, 1)?.narrow(5, 0, 1)?.reshape((n, c, oh, ow))
}

fn pad_channels(x: &Tensor, lo: usize, hi: usize) -> candle_core::Result<Tensor> {
    x.pad_with_zeros(1, lo, hi)
}

/// A CIFAR ResNet.
#[derive(Debug, Clone)]
pub struct ResNetCifar {
    stem: ConvBn,
    blocks: Vec<BasicBlock>,
    fc: Linear,
}

impl Architecture for ResNetCifar {
    type Config = ResNetCifarConfig;

    fn build(cfg: &ResNetCifarConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let stem =
            ConvBn::new(cfg.in_channels, cfg.stage(1), fan_in(3), Activation::Relu, vb.pp("conv1"), vb.pp("bn1"))?;
        let mut blocks = Vec::new();
        for s in 1..=3 {
            for b in 0..cfg.blocks() {
                let p = vb.pp(format!("layer{s}.{b}"));
                let stride = if b == 0 && s > 1 { 2 } else { 1 };
                let cin = if b == 0 && s > 1 { cfg.stage(s - 1) } else { cfg.stage(s) };
                let (inner, out) = (cfg.inner(s, b), cfg.stage(s));
                let a =
                    ConvBn::new(cin, inner, fan_in(3).stride(stride), Activation::Relu, p.pp("conv1"), p.pp("bn1"))?;
                let bb = ConvBn::new(inner, out, fan_in(3), Activation::None, p.pp("conv2"), p.pp("bn2"))?;
                let skip = if stride == 1 && cin == out {
                    Skip::Identity
                } else if cfg.shortcut == Shortcut::A {
                    if out < cin {
                        candle_core::bail!("option-A shortcut cannot shrink {cin} to {out} channels");
                    }
                    Skip::Pad { stride, lo: (out - cin) / 2, hi: out - cin - (out - cin) / 2 }
                } else {
                    let sc = p.pp("shortcut");
                    Skip::Conv(
                        Conv2d::new(cin, out, fan_in(1).stride(stride), sc.pp("0"))?,
                        BatchNorm2d::new(out, sc.pp("1"))?,
                    )
                };
                blocks.push(BasicBlock { a, b: bb, skip });
            }
        }
        let fc = Linear::new(cfg.stage(3), cfg.num_classes, true, vb.pp("fc"))?;
        Ok(Self { stem, blocks, fc })
    }
}

impl ModuleT for ResNetCifar {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = self.stem.forward_t(x, train)?;
        for b in &self.blocks {
            h = b.forward_t(&h, train)?;
        }
        self.fc.forward(&global_avg_pool(&h)?)
    }
}

/// A "same" `k x k` convolution initialised as the architecture's official code does.
fn fan_in(k: usize) -> ConvSpec {
    ConvSpec::same(k).init(WeightInit::KaimingFanIn)
}
