//! Quantized RDN (spec section 4): in each residual dense block the block input, the input of
//! every dense conv after the first, and the LFF input are quantized (9 per block at C = 8), and
//! so is the D x G0-channel GFF input: 9 D + 1 sites. The first dense conv reads the block's
//! quantized input (the official code's quantizer of conv 0 is never called, so it is not built
//! here). The dense concatenation carries full-precision tensors, and the local residual adds the
//! full-precision block input (UNKNOWN in the spec; the structure of EDSR-PyTorch's RDN). Weights
//! of the dense convs, LFF and both GFF convs are quantized; SFENet 1/2 and UPNet stay in full
//! precision.

use super::{QuantSr, SrOutput, upsample};
use crate::error::Result;
use crate::scheme::{ActQuant, QuantConv2d, QuantScheme};
use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use compress_nn::ArchConfig;
use compress_nn::layers::{Activation, Conv2d, ConvSpec};
use compress_nn::zoo::{RdnConfig, build_up};

#[derive(Debug)]
struct Rdb {
    input: ActQuant,
    convs: Vec<(Option<ActQuant>, QuantConv2d)>,
    lff_in: ActQuant,
    lff: QuantConv2d,
}

/// RDN with DDTB's quantizer placement.
#[derive(Debug)]
pub struct QuantRdn {
    sfe1: Conv2d,
    sfe2: Conv2d,
    rdbs: Vec<Rdb>,
    gff_in: ActQuant,
    gff: (QuantConv2d, QuantConv2d),
    up: Vec<(Conv2d, usize)>,
    out: Conv2d,
}

impl QuantRdn {
    /// Builds the network under `vb`.
    pub fn new(cfg: &RdnConfig, scheme: &QuantScheme, vb: VarBuilder) -> Result<Self> {
        let w = cfg.widths();
        let sp = ConvSpec::same(3).with_bias();
        let one = ConvSpec::same(1).with_bias();
        let (nc, g0, sfe, gff) = (cfg.setting.n_colors, w["features"], w["sfe1"], w["gff"]);
        let sfe1 = Conv2d::new(nc, sfe, sp, vb.pp("SFENet1"))?;
        let sfe2 = Conv2d::new(sfe, g0, sp, vb.pp("SFENet2"))?;
        let mut rdbs = Vec::with_capacity(cfg.d);
        for i in 0..cfg.d {
            let b = vb.pp(format!("RDBs.{i}"));
            let convs = (0..cfg.c)
                .map(|j| {
                    let c = b.pp(format!("convs.{j}"));
                    let q = if j == 0 { None } else { Some(ActQuant::new(scheme, c.pp("quant_act"))?) };
                    Ok((q, QuantConv2d::new(cfg.conv_in(i, j), cfg.growth(i, j), sp, scheme, c.pp("conv.0"))?))
                })
                .collect::<Result<Vec<_>>>()?;
            rdbs.push(Rdb {
                input: ActQuant::new(scheme, b.pp("quant_in"))?,
                convs,
                lff_in: ActQuant::new(scheme, b.pp("quant_lff"))?,
                lff: QuantConv2d::new(cfg.conv_in(i, cfg.c), g0, one, scheme, b.pp("LFF"))?,
            });
        }
        let gff_in = ActQuant::new(scheme, vb.pp("quant_gff"))?;
        let gff = (
            QuantConv2d::new(cfg.d * g0, gff, one, scheme, vb.pp("GFF.0"))?,
            QuantConv2d::new(gff, sfe, sp, scheme, vb.pp("GFF.1"))?,
        );
        let (names, consumers) = cfg.up_names();
        let (up, last) = build_up(&cfg.setting, w, sfe, names.iter().map(|c| vb.pp(c)).collect())?;
        let out = Conv2d::new(last, nc, sp, vb.pp(consumers.last().cloned().unwrap_or_default()))?;
        Ok(Self { sfe1, sfe2, rdbs, gff_in, gff, up, out })
    }
}

impl QuantSr for QuantRdn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<SrOutput> {
        let f1 = self.sfe1.forward(x)?;
        let mut h = self.sfe2.forward(&f1)?;
        let mut outs = Vec::with_capacity(self.rdbs.len());
        for b in &self.rdbs {
            let mut cat = b.input.forward_t(&h, train)?;
            for (q, conv) in &b.convs {
                let inp = match q {
                    Some(q) => q.forward_t(&cat, train)?,
                    None => cat.clone(),
                };
                let y = Activation::Relu.apply(&conv.forward(&inp)?)?;
                cat = Tensor::cat(&[&cat, &y], 1)?;
            }
            h = (b.lff.forward(&b.lff_in.forward_t(&cat, train)?)? + &h)?;
            outs.push(h.clone());
        }
        let g = self.gff_in.forward_t(&Tensor::cat(&outs, 1)?, train)?;
        let feature = (self.gff.1.forward(&self.gff.0.forward(&g)?)? + f1)?;
        let y = upsample(&self.up, feature.clone(), |_, t| Ok(t))?;
        Ok(SrOutput { sr: self.out.forward(&y)?, feature })
    }

    fn act_quants(&self) -> Vec<&ActQuant> {
        let mut v = Vec::new();
        for b in &self.rdbs {
            v.push(&b.input);
            v.extend(b.convs.iter().filter_map(|(q, _)| q.as_ref()));
            v.push(&b.lff_in);
        }
        v.push(&self.gff_in);
        v
    }

    fn body_convs(&self) -> Vec<&QuantConv2d> {
        let mut v = Vec::new();
        for b in &self.rdbs {
            v.extend(b.convs.iter().map(|(_, c)| c));
            v.push(&b.lff);
        }
        v.extend([&self.gff.0, &self.gff.1]);
        v
    }
}
