//! SRResNet (Ledig et al. 2017): residual blocks with BatchNorm and PReLU.

use super::*;

/// Configuration of SRResNet: 9x9 head, residual blocks (conv-BN-PReLU-conv-BN), a mid conv+BN
/// with a long skip, PReLU sub-pixel upsamplers and a 9x9 output conv; convs have biases.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SrResNetConfig {
    /// Scale, colours, cost size, pixel range.
    pub setting: SrSetting,
    /// Residual blocks (16 in the paper).
    pub n_blocks: usize,
    widths: Widths,
}

impl SrResNetConfig {
    /// SRResNet with `blocks` blocks of `feats` channels (paper: 16 x 64).
    pub fn new(scale: usize, blocks: usize, feats: usize) -> Result<Self> {
        if blocks == 0 || feats == 0 {
            return Err(config_err("SRResNet needs at least one block and one feature"));
        }
        let setting = SrSetting::new(scale)?;
        let widths = residual_widths(&setting, blocks, feats);
        Ok(Self { setting, n_blocks: blocks, widths })
    }

    /// The paper's SRResNet: 16 blocks x 64 channels.
    pub fn paper(scale: usize) -> Result<Self> {
        Self::new(scale, 16, 64)
    }

    /// Names of the upsampler convs and of each one's consumer (the last is the output conv).
    pub fn up_names(&self) -> (Vec<String>, Vec<String>) {
        up_chain(&self.setting, |k| format!("up.{k}.conv"), "conv_last")
    }
}

impl ArchConfig for SrResNetConfig {
    fn widths(&self) -> &Widths {
        &self.widths
    }

    fn with_widths(&self, widths: Widths) -> Result<Self> {
        Ok(Self { widths: replace_widths(&self.widths, widths)?, ..self.clone() })
    }

    fn groups(&self) -> Vec<ChannelGroup> {
        let mut g = ChannelGroup::new("features", self.widths["features"]).produced_by("conv_first", true);
        for i in 0..self.n_blocks {
            let p = format!("body.{i}");
            g = g
                .produced_by(&format!("{p}.conv2"), true)
                .batch_norm(&format!("{p}.bn2"))
                .consumed_by(&format!("{p}.conv1"));
        }
        g = g.produced_by("conv_mid", true).batch_norm("bn_mid").consumed_by("conv_mid").consumed_by("up.0.conv");
        let mut out = vec![g];
        for i in 0..self.n_blocks {
            let p = format!("body.{i}");
            out.push(
                ChannelGroup::new(format!("{p}.inner"), self.widths[&format!("{p}.inner")])
                    .produced_by(&format!("{p}.conv1"), true)
                    .batch_norm(&format!("{p}.bn1"))
                    .consumed_by(&format!("{p}.conv2")),
            );
        }
        let (convs, consumers) = self.up_names();
        out.extend(up_groups(&self.setting, &self.widths, &convs, &consumers));
        out
    }

    fn input_shape(&self) -> [usize; 3] {
        [self.setting.n_colors, self.setting.lr_size, self.setting.lr_size]
    }
}

impl AnalyticCost for SrResNetConfig {
    fn cost(&self) -> Cost {
        let (s, f, nc) = (self.setting.lr_size, self.widths["features"], self.setting.n_colors);
        let mut c = cost::conv2d(nc, f, 9, 1, s, s, true) + Cost { macs: 0, params: 1, elementwise: 0 };
        for i in 0..self.n_blocks {
            let inner = self.widths[&format!("body.{i}.inner")];
            c += cost::conv2d(f, inner, 3, 1, s, s, true)
                + cost::norm(inner)
                + Cost { macs: 0, params: 1, elementwise: 0 };
            c += cost::conv2d(inner, f, 3, 1, s, s, true) + cost::norm(f);
        }
        c += cost::conv2d(f, f, 3, 1, s, s, true) + cost::norm(f);
        let (up, last, side) = up_cost(&self.setting, &self.widths, f, 3);
        let prelus = Cost { macs: 0, params: self.setting.stages().len() as u64, elementwise: 0 };
        c + up + prelus + cost::conv2d(last, nc, 9, 1, side, side, true)
    }
}

/// SRResNet.
#[derive(Debug, Clone)]
pub struct SrResNet {
    first: (Conv2d, PRelu),
    blocks: Vec<(ConvBn, PRelu, ConvBn)>,
    mid: ConvBn,
    up: Vec<(Conv2d, usize, PRelu)>,
    last: Conv2d,
}

impl Architecture for SrResNet {
    type Config = SrResNetConfig;

    fn build(cfg: &SrResNetConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let (f, nc) = (cfg.widths["features"], cfg.setting.n_colors);
        let sp = ConvSpec::same(3).with_bias();
        let first = (
            Conv2d::new(nc, f, ConvSpec::same(9).with_bias(), vb.pp("conv_first"))?,
            PRelu::new(vb.pp("prelu_first"))?,
        );
        let mut blocks = Vec::new();
        for i in 0..cfg.n_blocks {
            let p = vb.pp(format!("body.{i}"));
            let inner = cfg.widths[&format!("body.{i}.inner")];
            blocks.push((
                ConvBn::new(f, inner, sp, Activation::None, p.pp("conv1"), p.pp("bn1"))?,
                PRelu::new(p.pp("prelu"))?,
                ConvBn::new(inner, f, sp, Activation::None, p.pp("conv2"), p.pp("bn2"))?,
            ));
        }
        let mid = ConvBn::new(f, f, sp, Activation::None, vb.pp("conv_mid"), vb.pp("bn_mid"))?;
        let (convs, _) = cfg.up_names();
        let (up, last_c) = build_up(&cfg.setting, &cfg.widths, f, convs.iter().map(|c| vb.pp(c)).collect())?;
        let up = up
            .into_iter()
            .enumerate()
            .map(|(k, (c, r))| Ok((c, r, PRelu::new(vb.pp(format!("up.{k}.prelu")))?)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let last = Conv2d::new(last_c, nc, ConvSpec::same(9).with_bias(), vb.pp("conv_last"))?;
        Ok(Self { first, blocks, mid, up, last })
    }
}

impl ModuleT for SrResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let h = self.first.1.forward(&self.first.0.forward(x)?)?;
        let mut r = h.clone();
        for (a, p, b) in &self.blocks {
            let y = b.forward_t(&p.forward(&a.forward_t(&r, train)?)?, train)?;
            r = (r + y)?;
        }
        let mut y = (self.mid.forward_t(&r, train)? + h)?;
        for (conv, s, p) in &self.up {
            y = p.forward(&pixel_shuffle(&conv.forward(&y)?, *s)?)?;
        }
        self.last.forward(&y)
    }
}
