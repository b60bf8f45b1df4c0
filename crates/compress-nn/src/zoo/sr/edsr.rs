//! EDSR (Lim et al. 2017): residual blocks without BatchNorm, residual scaling, MeanShift.

use super::*;

/// Configuration of EDSR.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EdsrConfig {
    /// Scale, colours, cost size, pixel range.
    pub setting: SrSetting,
    /// Residual blocks.
    pub n_resblocks: usize,
    /// Scaling of each block's residual branch (0.1 in the full EDSR, 1 in the baseline).
    pub res_scale: f64,
    widths: Widths,
}

impl EdsrConfig {
    /// EDSR with `blocks` residual blocks of `feats` channels.
    pub fn new(scale: usize, blocks: usize, feats: usize, res_scale: f64) -> Result<Self> {
        if blocks == 0 || feats == 0 {
            return Err(config_err("EDSR needs at least one block and one feature"));
        }
        let setting = SrSetting::new(scale)?;
        let widths = residual_widths(&setting, blocks, feats);
        Ok(Self { setting, n_resblocks: blocks, res_scale, widths })
    }

    /// The EDSR baseline: 16 blocks x 64 channels, res-scale 1.
    pub fn baseline(scale: usize) -> Result<Self> {
        Self::new(scale, 16, 64, 1.0)
    }

    /// The full EDSR: 32 blocks x 256 channels, res-scale 0.1.
    pub fn full(scale: usize) -> Result<Self> {
        Self::new(scale, 32, 256, 0.1)
    }

    /// The same network with another LR side for cost figures, and pixel range.
    pub fn with_setting(mut self, lr_size: usize, rgb_range: f32) -> Self {
        self.setting.lr_size = lr_size;
        self.setting.rgb_range = rgb_range;
        self
    }

    /// Names of the upsampler convs and of each one's consumer.
    pub fn tail_names(&self) -> (Vec<String>, Vec<String>) {
        up_chain(&self.setting, |k| format!("tail.0.{}", 2 * k), "tail.1")
    }
}

impl ArchConfig for EdsrConfig {
    fn widths(&self) -> &Widths {
        &self.widths
    }

    fn with_widths(&self, widths: Widths) -> Result<Self> {
        Ok(Self { widths: replace_widths(&self.widths, widths)?, ..self.clone() })
    }

    fn groups(&self) -> Vec<ChannelGroup> {
        let n = self.n_resblocks;
        let mut g = ChannelGroup::new("features", self.widths["features"]).produced_by("head.0", true);
        for i in 0..n {
            g = g.produced_by(&format!("body.{i}.body.2"), true).consumed_by(&format!("body.{i}.body.0"));
        }
        g = g.produced_by(&format!("body.{n}"), true).consumed_by(&format!("body.{n}")).consumed_by("tail.0.0");
        let mut out = vec![g];
        for i in 0..n {
            let name = format!("body.{i}.inner");
            out.push(
                ChannelGroup::new(name.clone(), self.widths[&name])
                    .produced_by(&format!("body.{i}.body.0"), true)
                    .consumed_by(&format!("body.{i}.body.2")),
            );
        }
        let (convs, consumers) = self.tail_names();
        out.extend(up_groups(&self.setting, &self.widths, &convs, &consumers));
        out
    }

    fn input_shape(&self) -> [usize; 3] {
        [self.setting.n_colors, self.setting.lr_size, self.setting.lr_size]
    }
}

impl AnalyticCost for EdsrConfig {
    fn cost(&self) -> Cost {
        let (s, f, nc) = (self.setting.lr_size, self.widths["features"], self.setting.n_colors);
        let mut c = cost::conv2d(nc, f, 3, 1, s, s, true);
        for i in 0..self.n_resblocks {
            let inner = self.widths[&format!("body.{i}.inner")];
            c += cost::conv2d(f, inner, 3, 1, s, s, true) + cost::conv2d(inner, f, 3, 1, s, s, true);
        }
        c += cost::conv2d(f, f, 3, 1, s, s, true);
        let (up, last, side) = up_cost(&self.setting, &self.widths, f, 3);
        c + up + cost::conv2d(last, nc, 3, 1, side, side, true)
    }
}

/// EDSR.
#[derive(Debug, Clone)]
pub struct Edsr {
    setting: SrSetting,
    head: Conv2d,
    blocks: Vec<(Conv2d, Conv2d)>,
    body_end: Conv2d,
    up: Vec<(Conv2d, usize)>,
    tail: Conv2d,
    res_scale: f64,
}

impl Architecture for Edsr {
    type Config = EdsrConfig;

    fn build(cfg: &EdsrConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let (f, nc) = (cfg.widths["features"], cfg.setting.n_colors);
        let sp = ConvSpec::same(3).with_bias();
        let head = Conv2d::new(nc, f, sp, vb.pp("head.0"))?;
        let mut blocks = Vec::new();
        for i in 0..cfg.n_resblocks {
            let inner = cfg.widths[&format!("body.{i}.inner")];
            let b = vb.pp(format!("body.{i}.body"));
            blocks.push((Conv2d::new(f, inner, sp, b.pp("0"))?, Conv2d::new(inner, f, sp, b.pp("2"))?));
        }
        let body_end = Conv2d::new(f, f, sp, vb.pp(format!("body.{}", cfg.n_resblocks)))?;
        let (convs, _) = cfg.tail_names();
        let (up, last) = build_up(&cfg.setting, &cfg.widths, f, convs.iter().map(|c| vb.pp(c)).collect())?;
        let tail = Conv2d::new(last, nc, sp, vb.pp("tail.1"))?;
        Ok(Self { setting: cfg.setting, head, blocks, body_end, up, tail, res_scale: cfg.res_scale })
    }
}

impl ModuleT for Edsr {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        let h = self.head.forward(&mean_shift(x, &self.setting, -1.0)?)?;
        let mut r = h.clone();
        for (a, b) in &self.blocks {
            let y = b.forward(&Activation::Relu.apply(&a.forward(&r)?)?)?;
            r = (r + y.affine(self.res_scale, 0.0)?)?;
        }
        let mut y = (self.body_end.forward(&r)? + h)?;
        for (conv, s) in &self.up {
            y = pixel_shuffle(&conv.forward(&y)?, *s)?;
        }
        mean_shift(&self.tail.forward(&y)?, &self.setting, 1.0)
    }
}
