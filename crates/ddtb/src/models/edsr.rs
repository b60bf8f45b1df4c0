//! Quantized EDSR (spec section 4): per residual block, three activation quantizers (the
//! shortcut input, the ReLU output before conv 2, and the scaled body output) and the block
//! output is the sum of the two quantized tensors; both body convs have quantized weights. conv 1
//! reads the previous block's sum (the first block: the full-precision head output). Head, the
//! last body conv, upsampler and tail stay in full precision.

use super::{QuantSr, SrOutput, upsample};
use crate::error::Result;
use crate::scheme::{ActQuant, QuantConv2d, QuantScheme};
use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use compress_nn::ArchConfig;
use compress_nn::layers::{Activation, Conv2d, ConvSpec};
use compress_nn::zoo::{EdsrConfig, SrSetting, build_up, mean_shift};

#[derive(Debug)]
struct Block {
    skip: ActQuant,
    conv1: QuantConv2d,
    relu: ActQuant,
    conv2: QuantConv2d,
    out: ActQuant,
}

/// EDSR with DDTB's quantizer placement.
#[derive(Debug)]
pub struct QuantEdsr {
    setting: SrSetting,
    head: Conv2d,
    blocks: Vec<Block>,
    body_end: Conv2d,
    up: Vec<(Conv2d, usize)>,
    tail: Conv2d,
    res_scale: f64,
}

impl QuantEdsr {
    /// Builds the network under `vb`.
    pub fn new(cfg: &EdsrConfig, scheme: &QuantScheme, vb: VarBuilder) -> Result<Self> {
        let (w, nc) = (cfg.widths(), cfg.setting.n_colors);
        let f = w["features"];
        let sp = ConvSpec::same(3).with_bias();
        let head = Conv2d::new(nc, f, sp, vb.pp("head.0"))?;
        let mut blocks = Vec::with_capacity(cfg.n_resblocks);
        for i in 0..cfg.n_resblocks {
            let inner = w[&format!("body.{i}.inner")];
            let b = vb.pp(format!("body.{i}"));
            blocks.push(Block {
                skip: ActQuant::new(scheme, b.pp("quant_skip"))?,
                conv1: QuantConv2d::new(f, inner, sp, scheme, b.pp("body.0"))?,
                relu: ActQuant::new(scheme, b.pp("quant_act"))?,
                conv2: QuantConv2d::new(inner, f, sp, scheme, b.pp("body.2"))?,
                out: ActQuant::new(scheme, b.pp("quant_out"))?,
            });
        }
        let body_end = Conv2d::new(f, f, sp, vb.pp(format!("body.{}", cfg.n_resblocks)))?;
        let (names, _) = cfg.tail_names();
        let (up, last) = build_up(&cfg.setting, w, f, names.iter().map(|c| vb.pp(c)).collect())?;
        let tail = Conv2d::new(last, nc, sp, vb.pp("tail.1"))?;
        Ok(Self { setting: cfg.setting, head, blocks, body_end, up, tail, res_scale: cfg.res_scale })
    }
}

impl QuantSr for QuantEdsr {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<SrOutput> {
        let h = self.head.forward(&mean_shift(x, &self.setting, -1.0)?)?;
        let mut r = h.clone();
        for b in &self.blocks {
            let skip = b.skip.forward_t(&r, train)?;
            let a = Activation::Relu.apply(&b.conv1.forward(&r)?)?;
            let y = b.conv2.forward(&b.relu.forward_t(&a, train)?)?.affine(self.res_scale, 0.0)?;
            r = (skip + b.out.forward_t(&y, train)?)?;
        }
        let feature = (self.body_end.forward(&r)? + h)?;
        let y = upsample(&self.up, feature.clone(), |_, t| Ok(t))?;
        let sr = mean_shift(&self.tail.forward(&y)?, &self.setting, 1.0)?;
        Ok(SrOutput { sr, feature })
    }

    fn act_quants(&self) -> Vec<&ActQuant> {
        self.blocks.iter().flat_map(|b| [&b.skip, &b.relu, &b.out]).collect()
    }

    fn body_convs(&self) -> Vec<&QuantConv2d> {
        self.blocks.iter().flat_map(|b| [&b.conv1, &b.conv2]).collect()
    }
}
