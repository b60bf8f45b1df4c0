//! RDN (Zhang et al. 2018): residual dense blocks, local and global feature fusion.

use super::*;

/// Configuration of RDN: `d` residual dense blocks of `c` convs with growth `g`, `g0` features.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RdnConfig {
    /// Scale, colours, cost size, pixel range.
    pub setting: SrSetting,
    /// Residual dense blocks (D).
    pub d: usize,
    /// Convs per block (C).
    pub c: usize,
    widths: Widths,
}

impl RdnConfig {
    /// RDN with D blocks of C convs, growth G and G0 features.
    pub fn new(scale: usize, d: usize, c: usize, g: usize, g0: usize) -> Result<Self> {
        if d == 0 || c == 0 || g == 0 || g0 == 0 {
            return Err(config_err("RDN needs D, C, G, G0 >= 1"));
        }
        let setting = SrSetting::new(scale)?;
        let mut widths = Widths::new();
        widths.insert("sfe1".into(), g0);
        widths.insert("features".into(), g0);
        for i in 0..d {
            for j in 0..c {
                widths.insert(format!("RDBs.{i}.convs.{j}"), g);
            }
        }
        widths.insert("gff".into(), g0);
        for k in 0..setting.stages().len() {
            widths.insert(format!("up{k}"), g);
        }
        Ok(Self { setting, d, c, widths })
    }

    /// Config B of the paper: D = 16, C = 8, G = 64, G0 = 64.
    pub fn config_b(scale: usize) -> Result<Self> {
        Self::new(scale, 16, 8, 64, 64)
    }

    /// Growth (output channels) of conv `j` of block `i`.
    pub fn growth(&self, i: usize, j: usize) -> usize {
        self.widths[&format!("RDBs.{i}.convs.{j}")]
    }

    /// Input channels of conv `j` of block `i`: G0 + the growths before it.
    pub fn conv_in(&self, i: usize, j: usize) -> usize {
        self.widths["features"] + (0..j).map(|k| self.growth(i, k)).sum::<usize>()
    }

    /// Names of the upsampler convs and of each one's consumer (the last is the output conv).
    pub fn up_names(&self) -> (Vec<String>, Vec<String>) {
        let last = format!("UPNet.{}", 2 * self.setting.stages().len());
        up_chain(&self.setting, |k| format!("UPNet.{}", 2 * k), &last)
    }
}

impl ArchConfig for RdnConfig {
    fn widths(&self) -> &Widths {
        &self.widths
    }

    fn with_widths(&self, widths: Widths) -> Result<Self> {
        Ok(Self { widths: replace_widths(&self.widths, widths)?, ..self.clone() })
    }

    fn groups(&self) -> Vec<ChannelGroup> {
        let g0 = self.widths["features"];
        // sfe1 = SFENet1 output, tied to GFF's output by the global residual.
        let mut out = vec![
            ChannelGroup::new("sfe1", self.widths["sfe1"])
                .produced_by("SFENet1", true)
                .produced_by("GFF.1", true)
                .consumed_by("SFENet2")
                .consumed_by("UPNet.0"),
        ];
        // features = SFENet2 output and every block output (local residuals), concatenated for GFF.
        let mut f = ChannelGroup::new("features", g0).produced_by("SFENet2", true);
        for i in 0..self.d {
            f = f.produced_by(&format!("RDBs.{i}.LFF"), true);
            for j in 0..self.c {
                f = f.consumed_by(&format!("RDBs.{i}.convs.{j}.conv.0"));
            }
            f = f.consumed_by(&format!("RDBs.{i}.LFF")).with(Member::consume("GFF.0.weight").at(i * g0));
        }
        out.push(f);
        for i in 0..self.d {
            for j in 0..self.c {
                let name = format!("RDBs.{i}.convs.{j}");
                let at = self.conv_in(i, j);
                let mut g =
                    ChannelGroup::new(name.clone(), self.growth(i, j)).produced_by(&format!("{name}.conv.0"), true);
                for k in j + 1..self.c {
                    g = g.with(Member::consume(format!("RDBs.{i}.convs.{k}.conv.0.weight")).at(at));
                }
                out.push(g.with(Member::consume(format!("RDBs.{i}.LFF.weight")).at(at)));
            }
        }
        out.push(ChannelGroup::new("gff", self.widths["gff"]).produced_by("GFF.0", true).consumed_by("GFF.1"));
        let (convs, consumers) = self.up_names();
        out.extend(up_groups(&self.setting, &self.widths, &convs, &consumers));
        out
    }

    fn input_shape(&self) -> [usize; 3] {
        [self.setting.n_colors, self.setting.lr_size, self.setting.lr_size]
    }
}

impl AnalyticCost for RdnConfig {
    fn cost(&self) -> Cost {
        let s = self.setting.lr_size;
        let (nc, g0, sfe, gff) =
            (self.setting.n_colors, self.widths["features"], self.widths["sfe1"], self.widths["gff"]);
        let mut c = cost::conv2d(nc, sfe, 3, 1, s, s, true) + cost::conv2d(sfe, g0, 3, 1, s, s, true);
        for i in 0..self.d {
            for j in 0..self.c {
                c += cost::conv2d(self.conv_in(i, j), self.growth(i, j), 3, 1, s, s, true);
            }
            c += cost::conv2d(self.conv_in(i, self.c), g0, 1, 1, s, s, true);
        }
        c += cost::conv2d(self.d * g0, gff, 1, 1, s, s, true) + cost::conv2d(gff, sfe, 3, 1, s, s, true);
        let (up, last, side) = up_cost(&self.setting, &self.widths, sfe, 3);
        c + up + cost::conv2d(last, nc, 3, 1, side, side, true)
    }
}

#[derive(Debug, Clone)]
struct Rdb {
    convs: Vec<Conv2d>,
    lff: Conv2d,
}

/// RDN.
#[derive(Debug, Clone)]
pub struct Rdn {
    sfe1: Conv2d,
    sfe2: Conv2d,
    rdbs: Vec<Rdb>,
    gff: (Conv2d, Conv2d),
    up: Vec<(Conv2d, usize)>,
    out: Conv2d,
}

impl Architecture for Rdn {
    type Config = RdnConfig;

    fn build(cfg: &RdnConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let sp = ConvSpec::same(3).with_bias();
        let (nc, g0, sfe, gff) = (cfg.setting.n_colors, cfg.widths["features"], cfg.widths["sfe1"], cfg.widths["gff"]);
        let sfe1 = Conv2d::new(nc, sfe, sp, vb.pp("SFENet1"))?;
        let sfe2 = Conv2d::new(sfe, g0, sp, vb.pp("SFENet2"))?;
        let mut rdbs = Vec::new();
        for i in 0..cfg.d {
            let b = vb.pp(format!("RDBs.{i}"));
            let convs = (0..cfg.c)
                .map(|j| Conv2d::new(cfg.conv_in(i, j), cfg.growth(i, j), sp, b.pp(format!("convs.{j}.conv.0"))))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let lff = Conv2d::new(cfg.conv_in(i, cfg.c), g0, ConvSpec::same(1).with_bias(), b.pp("LFF"))?;
            rdbs.push(Rdb { convs, lff });
        }
        let gff = (
            Conv2d::new(cfg.d * g0, gff, ConvSpec::same(1).with_bias(), vb.pp("GFF.0"))?,
            Conv2d::new(gff, sfe, sp, vb.pp("GFF.1"))?,
        );
        let (convs, consumers) = cfg.up_names();
        let (up, last) = build_up(&cfg.setting, &cfg.widths, sfe, convs.iter().map(|c| vb.pp(c)).collect())?;
        let out_name = consumers.last().cloned().unwrap_or_default();
        let out = Conv2d::new(last, nc, sp, vb.pp(out_name))?;
        Ok(Self { sfe1, sfe2, rdbs, gff, up, out })
    }
}

impl ModuleT for Rdn {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        let f1 = self.sfe1.forward(x)?;
        let mut h = self.sfe2.forward(&f1)?;
        let mut outs = Vec::with_capacity(self.rdbs.len());
        for b in &self.rdbs {
            let mut cat = h.clone();
            for conv in &b.convs {
                let y = Activation::Relu.apply(&conv.forward(&cat)?)?;
                cat = Tensor::cat(&[&cat, &y], 1)?;
            }
            h = (b.lff.forward(&cat)? + &h)?;
            outs.push(h.clone());
        }
        let mut y = (self.gff.1.forward(&self.gff.0.forward(&Tensor::cat(&outs, 1)?)?)? + f1)?;
        for (conv, s) in &self.up {
            y = pixel_shuffle(&conv.forward(&y)?, *s)?;
        }
        self.out.forward(&y)
    }
}
