//! VGG-16/19 for CIFAR as the pruning papers use it: 3x3 convs with bias, each followed by
//! BatchNorm and ReLU, 2x2 max pooling after each of the five stages, then either HRank's
//! 512-wide classifier `linear1 -> BatchNorm1d -> ReLU -> linear2` or, with
//! [`VggConfig::single_linear`], the one `Linear(C_last * s * s -> classes)` of DCFF and CLR-RNF.
//! Names: `features.conv{i}`, `features.norm{i}`, `classifier.linear1|norm1|linear2` (or
//! `classifier.linear` for the single linear head).

use crate::error::{Result, config_err};
use crate::layers::{Activation, BatchNorm2d, ConvBn, ConvSpec, Linear, max_pool2d};
use crate::network::{AnalyticCost, ArchConfig, Architecture, replace_widths};
use crate::structure::{ChannelGroup, Member, Widths};
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_core::cost::{self, Cost};

/// Layer plan of VGG-16: conv widths, with `0` marking a 2x2 max pool.
pub const VGG16: [usize; 18] = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];
/// Layer plan of VGG-19.
pub const VGG19: [usize; 21] =
    [64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0];

/// Configuration of a CIFAR VGG.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VggConfig {
    /// Pool positions: `pools[i]` is true when a max pool follows conv `i`.
    pools: Vec<bool>,
    /// Input channels.
    pub in_channels: usize,
    /// Input side.
    pub image_size: usize,
    /// Classes.
    pub num_classes: usize,
    /// Whether the classifier has a hidden layer (`widths["hidden"]`).
    #[serde(default = "hidden_default")]
    pub hidden_classifier: bool,
    widths: Widths,
}

fn hidden_default() -> bool {
    true
}

impl VggConfig {
    /// VGG from a plan like [`VGG16`] for `3 x 32 x 32` inputs and a 512-wide classifier.
    pub fn new(plan: &[usize], num_classes: usize) -> Result<Self> {
        let mut widths = Widths::new();
        let mut pools = Vec::new();
        for &p in plan {
            if p == 0 {
                match pools.last_mut() {
                    Some(last) => *last = true,
                    None => return Err(config_err("a VGG plan cannot start with a pool")),
                }
            } else {
                widths.insert(format!("conv{}", pools.len()), p);
                pools.push(false);
            }
        }
        if pools.is_empty() || num_classes == 0 {
            return Err(config_err("VGG needs at least one conv and one class"));
        }
        widths.insert("hidden".into(), 512);
        let c = Self { pools, in_channels: 3, image_size: 32, num_classes, hidden_classifier: true, widths };
        c.final_side()?;
        Ok(c)
    }

    /// VGG-16 for CIFAR.
    pub fn vgg16(num_classes: usize) -> Result<Self> {
        Self::new(&VGG16, num_classes)
    }

    /// VGG-19 for CIFAR.
    pub fn vgg19(num_classes: usize) -> Result<Self> {
        Self::new(&VGG19, num_classes)
    }

    /// The same network on `c x size x size` inputs (the side must survive every pool).
    pub fn input(mut self, c: usize, size: usize) -> Result<Self> {
        self.in_channels = c;
        self.image_size = size;
        self.final_side()?;
        Ok(self)
    }

    /// The same network with one linear layer as its classifier (DCFF's and CLR-RNF's VGG).
    pub fn single_linear(mut self) -> Self {
        self.hidden_classifier = false;
        self.widths.remove("hidden");
        self
    }

    /// Number of convolutions.
    pub fn num_convs(&self) -> usize {
        self.pools.len()
    }

    fn conv(&self, i: usize) -> usize {
        self.widths.get(&format!("conv{i}")).copied().unwrap_or(0)
    }

    fn final_side(&self) -> Result<usize> {
        let s = self.pools.iter().filter(|p| **p).fold(self.image_size, |s, _| s / 2);
        if s == 0 {
            return Err(config_err(format!("input side {} does not survive the max pools", self.image_size)));
        }
        Ok(s)
    }

    fn side_of(&self, i: usize) -> usize {
        self.pools[..i].iter().filter(|p| **p).fold(self.image_size, |s, _| s / 2)
    }
}

impl ArchConfig for VggConfig {
    fn widths(&self) -> &Widths {
        &self.widths
    }

    fn with_widths(&self, widths: Widths) -> Result<Self> {
        Ok(Self { widths: replace_widths(&self.widths, widths)?, ..self.clone() })
    }

    fn groups(&self) -> Vec<ChannelGroup> {
        let n = self.pools.len();
        let last_side = self.final_side().unwrap_or(1);
        let mut out: Vec<ChannelGroup> = (0..n)
            .map(|i| {
                let g = ChannelGroup::new(format!("conv{i}"), self.conv(i))
                    .produced_by(&format!("features.conv{i}"), true)
                    .batch_norm(&format!("features.norm{i}"));
                if i + 1 < n {
                    g.consumed_by(&format!("features.conv{}", i + 1))
                } else {
                    // Flattened C x s x s features: channel c owns s*s consecutive inputs.
                    let head = if self.hidden_classifier { "linear1" } else { "linear" };
                    g.with(Member::consume(format!("classifier.{head}.weight")).unit(last_side * last_side))
                }
            })
            .collect();
        if let Some(&h) = self.widths.get("hidden") {
            out.push(
                ChannelGroup::new("hidden", h)
                    .produced_by("classifier.linear1", true)
                    .batch_norm("classifier.norm1")
                    .consumed_by("classifier.linear2"),
            );
        }
        out
    }

    fn input_shape(&self) -> [usize; 3] {
        [self.in_channels, self.image_size, self.image_size]
    }
}

impl AnalyticCost for VggConfig {
    fn cost(&self) -> Cost {
        let mut c = Cost::default();
        let mut cin = self.in_channels;
        for i in 0..self.pools.len() {
            let s = self.side_of(i);
            c += cost::conv2d(cin, self.conv(i), 3, 1, s, s, true) + cost::norm(self.conv(i));
            cin = self.conv(i);
        }
        let s = self.final_side().unwrap_or(1);
        match self.widths.get("hidden") {
            Some(&h) => {
                c + cost::linear(cin * s * s, h, 1, true) + cost::norm(h) + cost::linear(h, self.num_classes, 1, true)
            }
            None => c + cost::linear(cin * s * s, self.num_classes, 1, true),
        }
    }
}

/// The classifier of a VGG.
#[derive(Debug, Clone)]
enum Head {
    Hidden { linear1: Linear, norm1: BatchNorm2d, linear2: Linear },
    Single(Linear),
}

/// A CIFAR VGG.
#[derive(Debug, Clone)]
pub struct Vgg {
    convs: Vec<(ConvBn, bool)>,
    head: Head,
}

impl Architecture for Vgg {
    type Config = VggConfig;

    fn build(cfg: &VggConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let f = vb.pp("features");
        let mut cin = cfg.in_channels;
        let mut convs = Vec::new();
        for (i, &pool) in cfg.pools.iter().enumerate() {
            let spec = ConvSpec::same(3).with_bias();
            convs.push((
                ConvBn::new(
                    cin,
                    cfg.conv(i),
                    spec,
                    Activation::Relu,
                    f.pp(format!("conv{i}")),
                    f.pp(format!("norm{i}")),
                )?,
                pool,
            ));
            cin = cfg.conv(i);
        }
        let s = cfg.final_side().map_err(candle_core::Error::wrap)?;
        let c = vb.pp("classifier");
        let head = match cfg.widths.get("hidden") {
            Some(&h) => Head::Hidden {
                linear1: Linear::new(cin * s * s, h, true, c.pp("linear1"))?,
                norm1: BatchNorm2d::new(h, c.pp("norm1"))?,
                linear2: Linear::new(h, cfg.num_classes, true, c.pp("linear2"))?,
            },
            None => Head::Single(Linear::new(cin * s * s, cfg.num_classes, true, c.pp("linear"))?),
        };
        Ok(Self { convs, head })
    }
}

impl ModuleT for Vgg {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (conv, pool) in &self.convs {
            h = conv.forward_t(&h, train)?;
            if *pool {
                h = max_pool2d(&h, 2, 2, 0)?;
            }
        }
        let h = h.flatten_from(1)?;
        match &self.head {
            Head::Hidden { linear1, norm1, linear2 } => {
                linear2.forward(&Activation::Relu.apply(&norm1.forward_t(&linear1.forward(&h)?, train)?)?)
            }
            Head::Single(linear) => linear.forward(&h),
        }
    }
}
