//! Quantized SRResNet (spec section 4): the inputs of conv 1 and conv 2 of every residual block
//! are quantized (2 per block) and both convs have quantized weights; BatchNorm and PReLU, the
//! 9x9 convs, `conv_mid` and the upsampler stay in full precision.

use super::{QuantSr, SrOutput, upsample};
use crate::error::Result;
use crate::scheme::{ActQuant, QuantConv2d, QuantScheme};
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_nn::ArchConfig;
use compress_nn::layers::{Activation, BatchNorm2d, Conv2d, ConvBn, ConvSpec, PRelu};
use compress_nn::zoo::{SrResNetConfig, build_up};

#[derive(Debug)]
struct Block {
    q1: ActQuant,
    conv1: QuantConv2d,
    bn1: BatchNorm2d,
    prelu: PRelu,
    q2: ActQuant,
    conv2: QuantConv2d,
    bn2: BatchNorm2d,
}

/// SRResNet with DDTB's quantizer placement.
#[derive(Debug)]
pub struct QuantSrResNet {
    first: (Conv2d, PRelu),
    blocks: Vec<Block>,
    mid: ConvBn,
    up: Vec<(Conv2d, usize)>,
    up_prelu: Vec<PRelu>,
    last: Conv2d,
}

impl QuantSrResNet {
    /// Builds the network under `vb`.
    pub fn new(cfg: &SrResNetConfig, scheme: &QuantScheme, vb: VarBuilder) -> Result<Self> {
        let (w, nc) = (cfg.widths(), cfg.setting.n_colors);
        let f = w["features"];
        let sp = ConvSpec::same(3).with_bias();
        let first = (
            Conv2d::new(nc, f, ConvSpec::same(9).with_bias(), vb.pp("conv_first"))?,
            PRelu::new(vb.pp("prelu_first"))?,
        );
        let mut blocks = Vec::with_capacity(cfg.n_blocks);
        for i in 0..cfg.n_blocks {
            let p = vb.pp(format!("body.{i}"));
            let inner = w[&format!("body.{i}.inner")];
            blocks.push(Block {
                q1: ActQuant::new(scheme, p.pp("quant_act1"))?,
                conv1: QuantConv2d::new(f, inner, sp, scheme, p.pp("conv1"))?,
                bn1: BatchNorm2d::new(inner, p.pp("bn1"))?,
                prelu: PRelu::new(p.pp("prelu"))?,
                q2: ActQuant::new(scheme, p.pp("quant_act2"))?,
                conv2: QuantConv2d::new(inner, f, sp, scheme, p.pp("conv2"))?,
                bn2: BatchNorm2d::new(f, p.pp("bn2"))?,
            });
        }
        let mid = ConvBn::new(f, f, sp, Activation::None, vb.pp("conv_mid"), vb.pp("bn_mid"))?;
        let (names, _) = cfg.up_names();
        let (up, last_c) = build_up(&cfg.setting, w, f, names.iter().map(|c| vb.pp(c)).collect())?;
        let up_prelu =
            (0..up.len()).map(|k| PRelu::new(vb.pp(format!("up.{k}.prelu")))).collect::<candle_core::Result<_>>()?;
        let last = Conv2d::new(last_c, nc, ConvSpec::same(9).with_bias(), vb.pp("conv_last"))?;
        Ok(Self { first, blocks, mid, up, up_prelu, last })
    }
}

impl QuantSr for QuantSrResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<SrOutput> {
        let h = self.first.1.forward(&self.first.0.forward(x)?)?;
        let mut r = h.clone();
        for b in &self.blocks {
            let a = b.bn1.forward_t(&b.conv1.forward(&b.q1.forward_t(&r, train)?)?, train)?;
            let a = b.prelu.forward(&a)?;
            let y = b.bn2.forward_t(&b.conv2.forward(&b.q2.forward_t(&a, train)?)?, train)?;
            r = (r + y)?;
        }
        let feature = (self.mid.forward_t(&r, train)? + h)?;
        let y = upsample(&self.up, feature.clone(), |k, t| self.up_prelu[k].forward(&t))?;
        Ok(SrOutput { sr: self.last.forward(&y)?, feature })
    }

    fn act_quants(&self) -> Vec<&ActQuant> {
        self.blocks.iter().flat_map(|b| [&b.q1, &b.q2]).collect()
    }

    fn body_convs(&self) -> Vec<&QuantConv2d> {
        self.blocks.iter().flat_map(|b| [&b.conv1, &b.conv2]).collect()
    }
}
