//! Super-resolution networks: EDSR (Lim et al. 2017), SRResNet (Ledig et al. 2017) and RDN
//! (Zhang et al. 2018), with sub-pixel upsamplers for scales 2, 3 and 4.
//!
//! Inputs and outputs are RGB in `[0, rgb_range]` (1 for this toolkit's data, 255 for the
//! official EDSR/RDN weights). EDSR subtracts and adds back the DIV2K mean (MeanShift, a
//! constant, not a variable); RDN, as in EDSR-PyTorch, has no MeanShift. Tensor names follow EDSR-PyTorch (EDSR: `head.0`,
//! `body.{i}.body.0|2`, `body.{n}`, `tail.0.{0|2}`, `tail.1`; RDN: `SFENet1|2`,
//! `RDBs.{i}.convs.{c}.conv.0`, `RDBs.{i}.LFF`, `GFF.0|1`, `UPNet.{0|2|4}`).

use crate::error::{Result, config_err};
use crate::layers::{Activation, Conv2d, ConvBn, ConvSpec, PRelu, pixel_shuffle};
use crate::network::{ArchConfig, Architecture, replace_widths};
use crate::structure::{ChannelGroup, Member, Widths};
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_core::cost::{self, Cost};

/// DIV2K RGB mean used by EDSR and RDN's MeanShift.
pub const DIV2K_MEAN: [f32; 3] = [0.4488, 0.4371, 0.4040];

/// What every SR config shares.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SrSetting {
    /// Upscaling factor: 2, 3 or 4.
    pub scale: usize,
    /// Colour channels (3).
    pub n_colors: usize,
    /// LR input side used for the cost figures and `input_shape` (EDSR trains on 48).
    pub lr_size: usize,
    /// Pixel range of inputs and outputs.
    pub rgb_range: f32,
}

impl SrSetting {
    fn new(scale: usize) -> Result<Self> {
        if !matches!(scale, 2..=4) {
            return Err(config_err(format!("SR scale must be 2, 3 or 4, not {scale}")));
        }
        Ok(Self { scale, n_colors: 3, lr_size: 48, rgb_range: 1.0 })
    }

    /// Pixel-shuffle factors of the upsampler: `[2]`, `[3]` or `[2, 2]`.
    pub fn stages(&self) -> Vec<usize> {
        if self.scale == 4 { vec![2, 2] } else { vec![self.scale] }
    }
}

/// EDSR's MeanShift: `x + sign * DIV2K_MEAN * rgb_range` per colour (identity unless RGB).
pub fn mean_shift(x: &Tensor, s: &SrSetting, sign: f32) -> candle_core::Result<Tensor> {
    if s.n_colors != 3 {
        return Ok(x.clone());
    }
    let m: Vec<f32> = DIV2K_MEAN.iter().map(|v| sign * v * s.rgb_range).collect();
    x.broadcast_add(&Tensor::from_vec(m, (1, 3, 1, 1), x.device())?.to_dtype(x.dtype())?)
}

/// Upsampler groups `up{k}`: conv `convs[k]` produces `r^2` channels per group channel,
/// consumed by `consumers[k]`.
fn up_groups(s: &SrSetting, widths: &Widths, convs: &[String], consumers: &[String]) -> Vec<ChannelGroup> {
    s.stages()
        .iter()
        .enumerate()
        .map(|(k, r)| {
            ChannelGroup::new(format!("up{k}"), widths[&format!("up{k}")])
                .with(Member::produce(format!("{}.weight", convs[k])).unit(r * r))
                .with(Member::produce(format!("{}.bias", convs[k])).unit(r * r))
                .consumed_by(&consumers[k])
        })
        .collect()
}

/// Names of the upsampler convs (`conv(k)` for stage `k`) and of the layer that consumes each
/// one's output: the next upsampler conv, then `last`.
fn up_chain(s: &SrSetting, conv: impl Fn(usize) -> String, last: &str) -> (Vec<String>, Vec<String>) {
    let convs: Vec<String> = (0..s.stages().len()).map(conv).collect();
    let mut consumers: Vec<String> = convs[1..].to_vec();
    consumers.push(last.to_string());
    (convs, consumers)
}

/// Widths of a residual SR body: `features`, one `body.{i}.inner` per block, one `up{k}` per
/// upsampling stage, all `feats`.
fn residual_widths(s: &SrSetting, blocks: usize, feats: usize) -> Widths {
    let mut widths = Widths::new();
    widths.insert("features".into(), feats);
    for i in 0..blocks {
        widths.insert(format!("body.{i}.inner"), feats);
    }
    for k in 0..s.stages().len() {
        widths.insert(format!("up{k}"), feats);
    }
    widths
}

/// Cost of the upsampler from `cin` channels at the LR side, and the side it ends at.
fn up_cost(s: &SrSetting, widths: &Widths, mut cin: usize, k: usize) -> (Cost, usize, usize) {
    let mut side = s.lr_size;
    let mut c = Cost::default();
    for (i, r) in s.stages().iter().enumerate() {
        let w = widths[&format!("up{i}")];
        c += cost::conv2d(cin, w * r * r, k, 1, side, side, true);
        side *= r;
        cin = w;
    }
    (c, cin, side)
}

/// The sub-pixel upsampler convs (one `vb` per stage, `up{k}` widths): `(conv, factor)` per
/// stage, and the channels it ends with.
pub fn build_up(
    s: &SrSetting,
    widths: &Widths,
    mut cin: usize,
    vbs: Vec<VarBuilder>,
) -> candle_core::Result<(Vec<(Conv2d, usize)>, usize)> {
    let mut out = Vec::new();
    for ((i, r), vb) in s.stages().into_iter().enumerate().zip(vbs) {
        let w = widths[&format!("up{i}")];
        out.push((Conv2d::new(cin, w * r * r, ConvSpec::same(3).with_bias(), vb)?, r));
        cin = w;
    }
    Ok((out, cin))
}

// ---------------------------------------------------------------------------------------------
// EDSR

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

// ---------------------------------------------------------------------------------------------
// SRResNet

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

// ---------------------------------------------------------------------------------------------
// RDN

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
