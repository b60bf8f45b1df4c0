//! MobileNetV1 (Howard et al. 2017): a 3x3/2 stem and 13 depthwise-separable blocks.

use super::*;

/// `(output channels, stride)` of the 13 separable blocks of MobileNetV1.
const V1_PLAN: [(usize, usize); 13] = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
];

/// Configuration of MobileNetV1.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MobileNetV1Config {
    /// Input channels.
    pub in_channels: usize,
    /// Input side.
    pub image_size: usize,
    /// Classes.
    pub num_classes: usize,
    strides: Vec<usize>,
    widths: Widths,
}

impl MobileNetV1Config {
    /// MobileNetV1 with width multiplier `alpha` (1.0: 569 M MACs at 224).
    pub fn new(alpha: f64, num_classes: usize) -> Result<Self> {
        if alpha.is_nan() || alpha <= 0.0 || num_classes == 0 {
            return Err(config_err("MobileNetV1 needs alpha > 0 and at least one class"));
        }
        let mut widths = Widths::new();
        widths.insert("stem".into(), ((32.0 * alpha) as usize).max(1));
        for (i, (c, _)) in V1_PLAN.iter().enumerate() {
            widths.insert(format!("blocks.{i}"), ((*c as f64 * alpha) as usize).max(1));
        }
        let strides = V1_PLAN.iter().map(|p| p.1).collect();
        Ok(Self { in_channels: 3, image_size: 224, num_classes, strides, widths })
    }

    /// A MobileNetV1 of another plan: a `stem`-channel 3x3 stride-2 stem, then one separable
    /// block per `(output channels, depthwise stride)` (e.g. PSS-Net's MBV1-tiny).
    pub fn custom(stem: usize, plan: &[(usize, usize)], num_classes: usize) -> Result<Self> {
        if stem == 0 || num_classes == 0 || plan.iter().any(|&(c, s)| c == 0 || s == 0) {
            return Err(config_err("MobileNetV1 needs non-zero widths, strides and classes"));
        }
        let mut widths = Widths::new();
        widths.insert("stem".into(), stem);
        for (i, (c, _)) in plan.iter().enumerate() {
            widths.insert(format!("blocks.{i}"), *c);
        }
        Ok(Self { in_channels: 3, image_size: 224, num_classes, strides: plan.iter().map(|p| p.1).collect(), widths })
    }

    /// The same network on `c x size x size` inputs.
    pub fn input(mut self, c: usize, size: usize) -> Self {
        self.in_channels = c;
        self.image_size = size;
        self
    }

    fn w(&self, i: Option<usize>) -> usize {
        match i {
            None => self.widths["stem"],
            Some(i) => self.widths[&format!("blocks.{i}")],
        }
    }
}

impl ArchConfig for MobileNetV1Config {
    fn widths(&self) -> &Widths {
        &self.widths
    }

    fn with_widths(&self, widths: Widths) -> Result<Self> {
        Ok(Self { widths: replace_widths(&self.widths, widths)?, ..self.clone() })
    }

    fn groups(&self) -> Vec<ChannelGroup> {
        let n = self.strides.len();
        let mut out = Vec::new();
        for i in 0..=n {
            // Group i: the output of the stem (i = 0) or of block i - 1.
            let (name, g) = if i == 0 {
                (
                    "stem".to_string(),
                    ChannelGroup::new("stem", self.w(None)).produced_by("stem.conv", false).batch_norm("stem.bn"),
                )
            } else {
                let p = format!("blocks.{}", i - 1);
                (
                    p.clone(),
                    ChannelGroup::new(p.clone(), self.w(Some(i - 1)))
                        .produced_by(&format!("{p}.pw.conv"), false)
                        .batch_norm(&format!("{p}.pw.bn")),
                )
            };
            let g = if i < n {
                let q = format!("blocks.{i}");
                g.depthwise(&format!("{q}.dw.conv"), false)
                    .batch_norm(&format!("{q}.dw.bn"))
                    .consumed_by(&format!("{q}.pw.conv"))
            } else {
                g.consumed_by("fc")
            };
            debug_assert_eq!(g.name, name);
            out.push(g);
        }
        out
    }

    fn input_shape(&self) -> [usize; 3] {
        [self.in_channels, self.image_size, self.image_size]
    }
}

impl AnalyticCost for MobileNetV1Config {
    fn cost(&self) -> Cost {
        let mut side = side_after(self.image_size, 2);
        let mut c = cost::conv2d(self.in_channels, self.w(None), 3, 1, side, side, false) + cost::norm(self.w(None));
        let mut cin = self.w(None);
        for (i, &s) in self.strides.iter().enumerate() {
            side = side_after(side, s);
            let cout = self.w(Some(i));
            c += cost::conv2d(cin, cin, 3, cin, side, side, false) + cost::norm(cin);
            c += cost::conv2d(cin, cout, 1, 1, side, side, false) + cost::norm(cout);
            cin = cout;
        }
        c + cost::linear(cin, self.num_classes, 1, true)
    }
}

/// MobileNetV1.
#[derive(Debug, Clone)]
pub struct MobileNetV1 {
    stem: ConvBn,
    blocks: Vec<(ConvBn, ConvBn)>,
    fc: Linear,
}

impl Architecture for MobileNetV1 {
    type Config = MobileNetV1Config;

    fn build(cfg: &MobileNetV1Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let s = vb.pp("stem");
        let stem = ConvBn::new(
            cfg.in_channels,
            cfg.w(None),
            fan_out(3).stride(2),
            Activation::Relu,
            s.pp("conv"),
            s.pp("bn"),
        )?;
        let mut cin = cfg.w(None);
        let mut blocks = Vec::new();
        for (i, &st) in cfg.strides.iter().enumerate() {
            let p = vb.pp(format!("blocks.{i}"));
            let cout = cfg.w(Some(i));
            let dw = ConvBn::new(
                cin,
                cin,
                fan_out(3).stride(st).groups(cin),
                Activation::Relu,
                p.pp("dw.conv"),
                p.pp("dw.bn"),
            )?;
            let pw = ConvBn::new(cin, cout, fan_out(1), Activation::Relu, p.pp("pw.conv"), p.pp("pw.bn"))?;
            blocks.push((dw, pw));
            cin = cout;
        }
        Ok(Self { stem, blocks, fc: Linear::new(cin, cfg.num_classes, true, vb.pp("fc"))? })
    }
}

impl ModuleT for MobileNetV1 {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = self.stem.forward_t(x, train)?;
        for (dw, pw) in &self.blocks {
            h = pw.forward_t(&dw.forward_t(&h, train)?, train)?;
        }
        self.fc.forward(&global_avg_pool(&h)?)
    }
}
