//! RegNetX (Radosavovic et al. 2020, "Designing Network Design Spaces"): a 3x3/2 stem of 32
//! channels, four stages of X blocks (1x1 conv, 3x3 group conv of fixed group width carrying the
//! stride, 1x1 conv, bottleneck ratio 1) whose first block projects its shortcut with a 1x1/2 conv
//! and BatchNorm, global average pooling and `fc`. Tensor names are torchvision's
//! (`stem.0|1`, `trunk_output.block{s}.block{s}-{b}.f.{a,b,c}.0|1`, `...proj.0|1`); pytorchcv's
//! `regnetx*` load through [`crate::pytorchcv::Family::RegNet`].
//!
//! Widths come from the design space's quantized linear rule: block `j` has the continuous width
//! `u_j = w_0 + w_a j`, quantized to `w_0 w_m^round(log(u_j / w_0) / log(w_m))` rounded to a
//! multiple of 8; equal widths form a stage, and each stage width is rounded to a multiple of its
//! group width `min(g, w)`.

use crate::error::{Result, config_err};
use crate::layers::{Activation, ConvBn, ConvSpec, Linear, WeightInit, global_avg_pool};
use crate::network::{AnalyticCost, ArchConfig, Architecture, replace_widths};
use crate::structure::{ChannelGroup, Widths};
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_core::cost::{self, Cost};

/// Output channels of the stem (every RegNet).
const STEM: usize = 32;

/// Configuration of a RegNetX.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RegNetConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Input side.
    pub image_size: usize,
    /// Classes.
    pub num_classes: usize,
    /// Blocks per stage.
    pub depths: Vec<usize>,
    /// Channels per group of each stage's 3x3 conv.
    pub group_widths: Vec<usize>,
    widths: Widths,
}

/// `(stage widths, stage depths, group widths)` of the quantized linear rule (module doc) with
/// `depth` blocks and group width `g`: pycls' `generate_regnet` and the stage adjustment of
/// torchvision / pytorchcv (numpy's round-half-to-even).
pub fn stage_plan(w0: f64, wa: f64, wm: f64, depth: usize, g: usize) -> Result<(Vec<usize>, Vec<usize>, Vec<usize>)> {
    if !(w0 > 0.0 && wa >= 0.0 && wm > 1.0)
        || depth == 0
        || g == 0
        || w0.fract() != 0.0
        || !(w0 as usize).is_multiple_of(8)
    {
        return Err(config_err(format!(
            "RegNet needs w_0 > 0 (a multiple of 8), w_a >= 0, w_m > 1, depth >= 1 and a group width >= 1; \
             got w_0 {w0}, w_a {wa}, w_m {wm}, depth {depth}, g {g}"
        )));
    }
    let mut widths: Vec<usize> = Vec::with_capacity(depth);
    for j in 0..depth {
        let u = w0 + wa * j as f64;
        let e = ((u / w0).ln() / wm.ln()).round_ties_even();
        widths.push(((w0 * wm.powf(e) / 8.0).round_ties_even() * 8.0) as usize);
    }
    let (mut ws, mut ds) = (Vec::new(), Vec::new());
    let mut sorted = widths.clone();
    sorted.sort_unstable();
    for w in sorted {
        if ws.last() == Some(&w) {
            *ds.last_mut().expect("a stage") += 1;
        } else {
            ws.push(w);
            ds.push(1);
        }
    }
    let gs: Vec<usize> = ws.iter().map(|&w| g.min(w)).collect();
    let ws = ws.iter().zip(&gs).map(|(&w, &g)| ((w as f64 / g as f64).round_ties_even() as usize) * g).collect();
    Ok((ws, ds, gs))
}

impl RegNetConfig {
    /// A RegNetX from its stage widths, depths and group widths.
    pub fn new(stage_widths: &[usize], depths: &[usize], group_widths: &[usize], num_classes: usize) -> Result<Self> {
        let n = stage_widths.len();
        if n == 0 || depths.len() != n || group_widths.len() != n || depths.contains(&0) || num_classes == 0 {
            return Err(config_err("RegNet needs as many widths, depths and group widths as stages, each >= 1"));
        }
        let mut widths = Widths::new();
        widths.insert("stem".into(), STEM);
        for (s, (&w, &g)) in (1..).zip(stage_widths.iter().zip(group_widths)) {
            if g == 0 || !w.is_multiple_of(g) {
                return Err(config_err(format!("RegNet stage {s}: width {w} is not a multiple of group width {g}")));
            }
            widths.insert(format!("stage{s}"), w);
            for b in 0..depths[s - 1] {
                widths.insert(format!("{}.inner", block(s, b)), w);
            }
        }
        Ok(Self {
            in_channels: 3,
            image_size: 224,
            num_classes,
            depths: depths.to_vec(),
            group_widths: group_widths.to_vec(),
            widths,
        })
    }

    /// RegNetX-600MF (`w_0` 48, `w_a` 36.97, `w_m` 2.24, 16 blocks, group width 24): widths
    /// 48 / 96 / 240 / 528, depths 1 / 3 / 5 / 7; 6,196,040 parameters and 0.60 G MACs at 224.
    pub fn x600mf(num_classes: usize) -> Result<Self> {
        let (ws, ds, gs) = stage_plan(48.0, 36.97, 2.24, 16, 24)?;
        Self::new(&ws, &ds, &gs, num_classes)
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

    fn stage(&self, s: usize) -> usize {
        self.w(&format!("stage{s}"))
    }

    fn block_in(&self, s: usize, b: usize) -> usize {
        match (s, b) {
            (1, 0) => self.w("stem"),
            (_, 0) => self.stage(s - 1),
            _ => self.stage(s),
        }
    }

    fn stages(&self) -> usize {
        self.depths.len()
    }
}

/// torchvision's name of block `b` (0-based) of stage `s` (1-based).
fn block(s: usize, b: usize) -> String {
    format!("trunk_output.block{s}.block{s}-{b}")
}

impl ArchConfig for RegNetConfig {
    fn widths(&self) -> &Widths {
        &self.widths
    }

    fn with_widths(&self, widths: Widths) -> Result<Self> {
        let out = Self { widths: replace_widths(&self.widths, widths)?, ..self.clone() };
        for s in 1..=out.stages() {
            for b in 0..out.depths[s - 1] {
                let inner = out.w(&format!("{}.inner", block(s, b)));
                if !inner.is_multiple_of(out.group_widths[s - 1]) {
                    return Err(config_err(format!(
                        "{}: inner width {inner} is not a multiple of group width {}",
                        block(s, b),
                        out.group_widths[s - 1]
                    )));
                }
            }
        }
        Ok(out)
    }

    /// The stem and each stage's residual stream are prunable (produced by the last 1x1 conv of
    /// every block and the projection, consumed by the next blocks' first 1x1 conv and
    /// projection, or by `fc`). A block's inner width is fixed: its group conv ties channels to
    /// groups by position.
    fn groups(&self) -> Vec<ChannelGroup> {
        let mut stem = ChannelGroup::new("stem", self.w("stem")).produced_by("stem.0", false).batch_norm("stem.1");
        stem = stem.consumed_by(&format!("{}.f.a.0", block(1, 0))).consumed_by(&format!("{}.proj.0", block(1, 0)));
        let mut out = vec![stem];
        for s in 1..=self.stages() {
            let mut g = ChannelGroup::new(format!("stage{s}"), self.stage(s));
            for b in 0..self.depths[s - 1] {
                let p = block(s, b);
                g = g.produced_by(&format!("{p}.f.c.0"), false).batch_norm(&format!("{p}.f.c.1"));
                if b == 0 {
                    g = g.produced_by(&format!("{p}.proj.0"), false).batch_norm(&format!("{p}.proj.1"));
                } else {
                    g = g.consumed_by(&format!("{p}.f.a.0"));
                }
            }
            g = if s < self.stages() {
                let next = block(s + 1, 0);
                g.consumed_by(&format!("{next}.f.a.0")).consumed_by(&format!("{next}.proj.0"))
            } else {
                g.consumed_by("fc")
            };
            out.push(g);
            for b in 0..self.depths[s - 1] {
                let p = block(s, b);
                let name = format!("{p}.inner");
                out.push(
                    ChannelGroup::new(name.clone(), self.w(&name))
                        .fixed()
                        .produced_by(&format!("{p}.f.a.0"), false)
                        .batch_norm(&format!("{p}.f.a.1"))
                        .produced_by(&format!("{p}.f.b.0"), false)
                        .batch_norm(&format!("{p}.f.b.1"))
                        .consumed_by(&format!("{p}.f.c.0")),
                );
            }
        }
        out
    }

    fn input_shape(&self) -> [usize; 3] {
        [self.in_channels, self.image_size, self.image_size]
    }
}

impl AnalyticCost for RegNetConfig {
    fn cost(&self) -> Cost {
        let stem = self.w("stem");
        let mut side = cost::conv_out(self.image_size, 3, 2, 1, 1);
        let mut c = cost::conv2d(self.in_channels, stem, 3, 1, side, side, false) + cost::norm(stem);
        for s in 1..=self.stages() {
            for b in 0..self.depths[s - 1] {
                let (cin, cout) = (self.block_in(s, b), self.stage(s));
                let inner = self.w(&format!("{}.inner", block(s, b)));
                let out = if b == 0 { cost::conv_out(side, 3, 2, 1, 1) } else { side };
                c += cost::conv2d(cin, inner, 1, 1, side, side, false) + cost::norm(inner);
                c += cost::conv2d(inner, inner, 3, inner / self.group_widths[s - 1], out, out, false)
                    + cost::norm(inner);
                c += cost::conv2d(inner, cout, 1, 1, out, out, false) + cost::norm(cout);
                if b == 0 {
                    c += cost::conv2d(cin, cout, 1, 1, out, out, false) + cost::norm(cout);
                }
                side = out;
            }
        }
        c + cost::linear(self.stage(self.stages()), self.num_classes, 1, true)
    }
}

#[derive(Debug, Clone)]
struct XBlock {
    a: ConvBn,
    b: ConvBn,
    c: ConvBn,
    proj: Option<ConvBn>,
}

impl XBlock {
    /// `relu(f(x) + proj(x))`, the projection an identity inside a stage. The projection runs
    /// first, as in pytorchcv's `RegNetUnit` (BatchNorm probes see that order).
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let skip = match &self.proj {
            Some(p) => p.forward_t(x, train)?,
            None => x.clone(),
        };
        let h = self.b.forward_t(&self.a.forward_t(x, train)?, train)?;
        self.c.forward_residual(&h, &skip, Activation::Relu, train)
    }
}

/// A RegNetX.
#[derive(Debug, Clone)]
pub struct RegNet {
    stem: ConvBn,
    blocks: Vec<XBlock>,
    fc: Linear,
}

impl Architecture for RegNet {
    type Config = RegNetConfig;

    fn build(cfg: &RegNetConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let relu = Activation::Relu;
        let stem =
            ConvBn::new(cfg.in_channels, cfg.w("stem"), fan_out(3).stride(2), relu, vb.pp("stem.0"), vb.pp("stem.1"))?;
        let mut blocks = Vec::new();
        for s in 1..=cfg.stages() {
            for b in 0..cfg.depths[s - 1] {
                let p = vb.pp(block(s, b));
                let (cin, cout) = (cfg.block_in(s, b), cfg.stage(s));
                let inner = cfg.w(&format!("{}.inner", block(s, b)));
                let stride = if b == 0 { 2 } else { 1 };
                let groups = inner / cfg.group_widths[s - 1];
                let f = p.pp("f");
                let a = ConvBn::new(cin, inner, fan_out(1), relu, f.pp("a.0"), f.pp("a.1"))?;
                let b3 = fan_out(3).stride(stride).groups(groups);
                let bconv = ConvBn::new(inner, inner, b3, relu, f.pp("b.0"), f.pp("b.1"))?;
                let c = ConvBn::new(inner, cout, fan_out(1), Activation::None, f.pp("c.0"), f.pp("c.1"))?;
                let proj = if b == 0 {
                    Some(ConvBn::new(
                        cin,
                        cout,
                        fan_out(1).stride(2),
                        Activation::None,
                        p.pp("proj.0"),
                        p.pp("proj.1"),
                    )?)
                } else {
                    None
                };
                blocks.push(XBlock { a, b: bconv, c, proj });
            }
        }
        Ok(Self { stem, blocks, fc: Linear::new(cfg.stage(cfg.stages()), cfg.num_classes, true, vb.pp("fc"))? })
    }
}

impl ModuleT for RegNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = self.stem.forward_t(x, train)?;
        for b in &self.blocks {
            h = b.forward_t(&h, train)?;
        }
        self.fc.forward(&global_avg_pool(&h)?)
    }
}

/// A "same" `k x k` convolution initialised as torchvision's RegNet does (Kaiming, fan out).
fn fan_out(k: usize) -> ConvSpec {
    ConvSpec::same(k).init(WeightInit::KaimingFanOut)
}
