//! MobileNetV2 (Sandler et al. 2018): inverted residual blocks in torchvision's names.

use super::*;

/// `(t, c, n, s)` settings of MobileNetV2: expansion, channels, repeats, first stride.
const V2_PLAN: [(usize, usize, usize, usize); 7] =
    [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];

/// `(conv prefix, BatchNorm prefix)`.
type ConvBnNames = (String, String);

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct V2Block {
    /// Feature index in torchvision's `features` (1-based after the stem).
    index: usize,
    /// Setting index (its output width is the group `stage{k}`).
    stage: usize,
    expand: bool,
    stride: usize,
    /// Whether the block adds its input (stride 1 and same width by architecture).
    residual: bool,
}

/// Configuration of MobileNetV2.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MobileNetV2Config {
    /// Input channels.
    pub in_channels: usize,
    /// Input side.
    pub image_size: usize,
    /// Classes.
    pub num_classes: usize,
    /// Stride of the stem conv: 2 (ImageNet) or 1 (small inputs, as CIFAR ports of MobileNetV2
    /// do, so 28-32 px images are not reduced to 1 x 1 before the last stage).
    pub stem_stride: usize,
    /// Whether the classifier has a bias (torchvision's Linear; pytorchcv's 1x1 conv has none).
    #[serde(default = "yes")]
    pub classifier_bias: bool,
    blocks: Vec<V2Block>,
    widths: Widths,
}

fn yes() -> bool {
    true
}

impl MobileNetV2Config {
    /// MobileNetV2 with width multiplier `width_mult` (1.0: 300 M MACs, 3.5 M params at 224).
    pub fn new(width_mult: f64, num_classes: usize) -> Result<Self> {
        if width_mult.is_nan() || width_mult <= 0.0 || num_classes == 0 {
            return Err(config_err("MobileNetV2 needs width_mult > 0 and at least one class"));
        }
        let mut widths = Widths::new();
        let stem = make_divisible(32.0 * width_mult, 8);
        widths.insert("stem".into(), stem);
        let mut blocks = Vec::new();
        let mut cin = stem;
        for (k, &(t, c, n, s)) in V2_PLAN.iter().enumerate() {
            let cout = make_divisible(c as f64 * width_mult, 8);
            widths.insert(format!("stage{k}"), cout);
            for r in 0..n {
                let index = blocks.len() + 1;
                let stride = if r == 0 { s } else { 1 };
                if t != 1 {
                    widths.insert(format!("features.{index}.expand"), cin * t);
                }
                blocks.push(V2Block { index, stage: k, expand: t != 1, stride, residual: stride == 1 && cin == cout });
                cin = cout;
            }
        }
        widths.insert("head".into(), make_divisible(1280.0 * width_mult.max(1.0), 8));
        Ok(Self { in_channels: 3, image_size: 224, num_classes, stem_stride: 2, classifier_bias: true, blocks, widths })
    }

    /// pytorchcv's `mobilenetv2_w*` layout: the first block (expansion 1) keeps a 1x1 conv of
    /// its own width before the depthwise conv, and the classifier (a 1x1 conv there) has no bias
    /// (3,504,960 parameters at width 1.0 against torchvision's 3,504,872).
    pub fn pytorchcv(mut self) -> Self {
        if let Some(b) = self.blocks.first_mut()
            && !b.expand
        {
            b.expand = true;
            self.widths.insert(format!("features.{}.expand", b.index), self.widths["stem"]);
        }
        self.classifier_bias = false;
        self
    }

    /// The same network on `c x size x size` inputs.
    pub fn input(mut self, c: usize, size: usize) -> Self {
        self.in_channels = c;
        self.image_size = size;
        self
    }

    /// The same network with a stride-1 stem, for small (28-32 px) inputs.
    pub fn small_input(mut self) -> Self {
        self.stem_stride = 1;
        self
    }

    fn block_in(&self, i: usize) -> usize {
        if i == 0 { self.widths["stem"] } else { self.widths[&format!("stage{}", self.blocks[i - 1].stage)] }
    }

    fn head_index(&self) -> usize {
        self.blocks.len() + 1
    }

    /// Tensor prefixes of block `b`: (expand conv/bn, depthwise conv/bn, project conv/bn).
    fn names(b: &V2Block) -> (Option<ConvBnNames>, ConvBnNames, ConvBnNames) {
        let p = format!("features.{}.conv", b.index);
        if b.expand {
            (
                Some((format!("{p}.0.0"), format!("{p}.0.1"))),
                (format!("{p}.1.0"), format!("{p}.1.1")),
                (format!("{p}.2"), format!("{p}.3")),
            )
        } else {
            (None, (format!("{p}.0.0"), format!("{p}.0.1")), (format!("{p}.1"), format!("{p}.2")))
        }
    }
}

impl ArchConfig for MobileNetV2Config {
    fn widths(&self) -> &Widths {
        &self.widths
    }

    fn with_widths(&self, widths: Widths) -> Result<Self> {
        Ok(Self { widths: replace_widths(&self.widths, widths)?, ..self.clone() })
    }

    fn groups(&self) -> Vec<ChannelGroup> {
        let mut out = Vec::new();
        // The stem and every stage output are consumed by the next block (its expand conv, or
        // its depthwise conv when it does not expand) and produced by the projections of the
        // stage's blocks, tied through the residual additions.
        let consume = |g: ChannelGroup, b: &V2Block| -> ChannelGroup {
            let (e, d, p) = Self::names(b);
            match e {
                Some((c, _)) => g.consumed_by(&c),
                None => g.depthwise(&d.0, false).batch_norm(&d.1).consumed_by(&p.0),
            }
        };
        let mut stem = ChannelGroup::new("stem", self.widths["stem"])
            .produced_by("features.0.0", false)
            .batch_norm("features.0.1");
        stem = consume(stem, &self.blocks[0]);
        out.push(stem);
        for k in 0..V2_PLAN.len() {
            let mut g = ChannelGroup::new(format!("stage{k}"), self.widths[&format!("stage{k}")]);
            let members: Vec<&V2Block> = self.blocks.iter().filter(|b| b.stage == k).collect();
            for b in &members {
                let (_, _, p) = Self::names(b);
                g = g.produced_by(&p.0, false).batch_norm(&p.1);
                if b.residual {
                    g = consume(g, b);
                }
            }
            let after = members.last().map(|b| b.index).unwrap_or(0);
            g = match self.blocks.get(after) {
                Some(next) => consume(g, next),
                None => g.consumed_by(&format!("features.{}.0", self.head_index())),
            };
            out.push(g);
        }
        for b in self.blocks.iter().filter(|b| b.expand) {
            let (e, d, p) = Self::names(b);
            let Some(e) = e else { continue };
            let name = format!("features.{}.expand", b.index);
            out.push(
                ChannelGroup::new(name.clone(), self.widths[&name])
                    .produced_by(&e.0, false)
                    .batch_norm(&e.1)
                    .depthwise(&d.0, false)
                    .batch_norm(&d.1)
                    .consumed_by(&p.0),
            );
        }
        let h = self.head_index();
        out.push(
            ChannelGroup::new("head", self.widths["head"])
                .produced_by(&format!("features.{h}.0"), false)
                .batch_norm(&format!("features.{h}.1"))
                .consumed_by("classifier.1"),
        );
        out
    }

    fn input_shape(&self) -> [usize; 3] {
        [self.in_channels, self.image_size, self.image_size]
    }
}

impl AnalyticCost for MobileNetV2Config {
    fn cost(&self) -> Cost {
        let stem = self.widths["stem"];
        let mut side = side_after(self.image_size, self.stem_stride);
        let mut c = cost::conv2d(self.in_channels, stem, 3, 1, side, side, false) + cost::norm(stem);
        for (i, b) in self.blocks.iter().enumerate() {
            let cin = self.block_in(i);
            let cout = self.widths[&format!("stage{}", b.stage)];
            let mid = if b.expand { self.widths[&format!("features.{}.expand", b.index)] } else { cin };
            if b.expand {
                c += cost::conv2d(cin, mid, 1, 1, side, side, false) + cost::norm(mid);
            }
            side = side_after(side, b.stride);
            c += cost::conv2d(mid, mid, 3, mid, side, side, false) + cost::norm(mid);
            c += cost::conv2d(mid, cout, 1, 1, side, side, false) + cost::norm(cout);
        }
        let last = self.block_in(self.blocks.len());
        let head = self.widths["head"];
        c + cost::conv2d(last, head, 1, 1, side, side, false)
            + cost::norm(head)
            + cost::linear(head, self.num_classes, 1, self.classifier_bias)
    }
}

#[derive(Debug, Clone)]
struct InvertedResidual {
    expand: Option<ConvBn>,
    dw: ConvBn,
    project: ConvBn,
    residual: bool,
}

/// MobileNetV2.
#[derive(Debug, Clone)]
pub struct MobileNetV2 {
    stem: ConvBn,
    blocks: Vec<InvertedResidual>,
    head: ConvBn,
    classifier: Linear,
}

impl Architecture for MobileNetV2 {
    type Config = MobileNetV2Config;

    fn build(cfg: &MobileNetV2Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let r6 = Activation::Relu6;
        let stem_w = cfg.widths["stem"];
        let stem = ConvBn::new(
            cfg.in_channels,
            stem_w,
            fan_out(3).stride(cfg.stem_stride),
            r6,
            vb.pp("features.0.0"),
            vb.pp("features.0.1"),
        )?;
        let mut blocks = Vec::new();
        for (i, b) in cfg.blocks.iter().enumerate() {
            let cin = cfg.block_in(i);
            let cout = cfg.widths[&format!("stage{}", b.stage)];
            let (e, d, p) = MobileNetV2Config::names(b);
            let (expand, mid) = match e {
                Some((c, n)) => {
                    let mid = cfg.widths[&format!("features.{}.expand", b.index)];
                    (Some(ConvBn::new(cin, mid, fan_out(1), r6, vb.pp(c), vb.pp(n))?), mid)
                }
                None => (None, cin),
            };
            let dw = ConvBn::new(mid, mid, fan_out(3).stride(b.stride).groups(mid), r6, vb.pp(d.0), vb.pp(d.1))?;
            let project = ConvBn::new(mid, cout, fan_out(1), Activation::None, vb.pp(p.0), vb.pp(p.1))?;
            blocks.push(InvertedResidual { expand, dw, project, residual: b.residual });
        }
        let h = cfg.head_index();
        let last = cfg.block_in(cfg.blocks.len());
        let head_w = cfg.widths["head"];
        let head = ConvBn::new(
            last,
            head_w,
            fan_out(1),
            r6,
            vb.pp(format!("features.{h}.0")),
            vb.pp(format!("features.{h}.1")),
        )?;
        // torchvision: classifier weight N(0, 0.01^2), bias 0.
        let classifier = Linear::normal(head_w, cfg.num_classes, 0.01, cfg.classifier_bias, vb.pp("classifier.1"))?;
        Ok(Self { stem, blocks, head, classifier })
    }
}

impl ModuleT for MobileNetV2 {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = self.stem.forward_t(x, train)?;
        for b in &self.blocks {
            let mut y = h.clone();
            if let Some(e) = &b.expand {
                y = e.forward_t(&y, train)?;
            }
            let d = b.dw.forward_t(&y, train)?;
            h = if b.residual {
                b.project.forward_residual(&d, &h, Activation::None, train)?
            } else {
                b.project.forward_t(&d, train)?
            };
        }
        let h = self.head.forward_t(&h, train)?;
        self.classifier.forward(&global_avg_pool(&h)?)
    }
}
