//! The section-9 teacher as a declared network: conv3x3 1->8, 8->16 stride 2, 16->16, 16->32
//! stride 2, each with BatchNorm and ReLU; global average pool; Linear 32->10 (L = 4 BN layers).

use candle_core::{ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_nn::layers::{Activation, ConvBn, ConvSpec, Linear, WeightInit, global_avg_pool};
use compress_nn::stack::{Stack, StackConfig};
use compress_synth::GenConfig;
use compress_synth::generator::Conditioning;

/// Strides of the four convolutions.
const STRIDES: [usize; 4] = [1, 2, 1, 2];

/// The mini CNN.
#[derive(Debug)]
pub struct DigitCnn {
    convs: Vec<ConvBn>,
    fc: Linear,
}

/// Its declaration on `1 x 28 x 28` digits.
pub fn digit_cnn() -> compress_nn::Result<StackConfig> {
    let mut s = Stack::new([1, 28, 28]);
    for (i, w) in [8, 16, 16, 32].into_iter().enumerate() {
        s = s.conv(&format!("convs.{i}"), w).norm(&format!("bns.{i}"));
    }
    s.output("fc", 10).bias().build()
}

/// Section 9's generator for `28 x 28` digits: `latent -> 32 x 7 x 7`, conditional BN, convs
/// 32 -> 16 -> 8 -> 1 (inner eps 0.8).
pub fn digit_generator(latent: usize) -> GenConfig {
    GenConfig {
        latent,
        classes: 10,
        init_size: 7,
        channels: 1,
        inner_eps: 0.8,
        conditioning: Conditioning::CondBn,
        widths: [32, 16, 8],
    }
}

impl compress_nn::Architecture for DigitCnn {
    type Config = StackConfig;
    fn build(cfg: &StackConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let mut convs = Vec::new();
        let mut cin = compress_nn::ArchConfig::input_shape(cfg)[0];
        for (i, stride) in STRIDES.into_iter().enumerate() {
            let cout = cfg.width(&format!("convs.{i}"))?;
            let spec = ConvSpec::same(3).stride(stride).init(WeightInit::KaimingFanOut);
            convs.push(ConvBn::new(
                cin,
                cout,
                spec,
                Activation::Relu,
                vb.pp(format!("convs.{i}")),
                vb.pp(format!("bns.{i}")),
            )?);
            cin = cout;
        }
        Ok(Self { convs, fc: Linear::new(cin, cfg.width("fc")?, true, vb.pp("fc"))? })
    }
}

impl ModuleT for DigitCnn {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for c in &self.convs {
            h = c.forward_t(&h, train)?;
        }
        candle_core::Module::forward(&self.fc, &global_avg_pool(&h)?)
    }
}
