//! Super-resolution networks: EDSR (Lim et al. 2017), SRResNet (Ledig et al. 2017) and RDN
//! (Zhang et al. 2018), with sub-pixel upsamplers for scales 2, 3 and 4.
//!
//! Inputs and outputs are RGB in `[0, rgb_range]` (1 for this toolkit's data, 255 for the
//! official EDSR/RDN weights). EDSR subtracts and adds back the DIV2K mean (MeanShift, a
//! constant, not a variable); RDN, as in EDSR-PyTorch, has no MeanShift. Tensor names follow EDSR-PyTorch (EDSR: `head.0`,
//! `body.{i}.body.0|2`, `body.{n}`, `tail.0.{0|2}`, `tail.1`; RDN: `SFENet1|2`,
//! `RDBs.{i}.convs.{c}.conv.0`, `RDBs.{i}.LFF`, `GFF.0|1`, `UPNet.{0|2|4}`).

mod edsr;
mod rdn;
mod srresnet;

pub use edsr::{Edsr, EdsrConfig};
pub use rdn::{Rdn, RdnConfig};
pub use srresnet::{SrResNet, SrResNetConfig};

use crate::error::{Result, config_err};
use crate::layers::{Activation, Conv2d, ConvBn, ConvSpec, PRelu, pixel_shuffle};
use crate::network::{AnalyticCost, ArchConfig, Architecture, replace_widths};
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
