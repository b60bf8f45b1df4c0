//! MobileNetV1 (Howard et al. 2017) and MobileNetV2 (Sandler et al. 2018), with a width
//! multiplier, configurable input and classes.
//!
//! V1: a 3x3/2 stem, then 13 depthwise-separable blocks (`blocks.{i}.dw|pw.conv|bn`), global
//! pooling and `fc`. V2 uses torchvision's names: `features.0` stem, inverted residual blocks
//! `features.{i}.conv.*` (expand 1x1, depthwise 3x3, linear 1x1), `features.18` head 1x1 to 1280,
//! `classifier.1`. A depthwise conv carries its input's channel group through (its `groups`
//! equals the width), so pruning an expansion shrinks the expand conv, the depthwise conv and the
//! projection's input together.

mod v1;
mod v2;

pub use v1::{MobileNetV1, MobileNetV1Config};
pub use v2::{MobileNetV2, MobileNetV2Config};

use crate::error::{Result, config_err};
use crate::layers::{Activation, ConvBn, ConvSpec, Linear, WeightInit, global_avg_pool};
use crate::network::{AnalyticCost, ArchConfig, Architecture, replace_widths};
use crate::structure::{ChannelGroup, Widths};
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_core::cost::{self, Cost};

/// torchvision's `_make_divisible`: round to a multiple of `d`, never below 90 % of `v`.
pub fn make_divisible(v: f64, d: usize) -> usize {
    let d = d as f64;
    let mut n = ((v + d / 2.0) / d).floor() * d;
    n = n.max(d);
    if n < 0.9 * v {
        n += d;
    }
    n as usize
}

fn side_after(n: usize, stride: usize) -> usize {
    cost::conv_out(n, 3, stride, 1, 1)
}

/// A "same" `k x k` convolution initialised as the architecture's official code does.
fn fan_out(k: usize) -> ConvSpec {
    ConvSpec::same(k).init(WeightInit::KaimingFanOut)
}
