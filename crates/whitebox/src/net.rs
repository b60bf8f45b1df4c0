//! Section 9's "VGG-tiny", declared as a user would declare a network: conv3x3 1 -> 16, 16 -> 32,
//! max-pool, 32 -> 64, 64 -> 64, max-pool, each conv with BatchNorm and ReLU; global average
//! pool; Linear 64 -> 10. A mask sits after each ReLU (the default layout of a declared network).

use candle_core::{ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_nn::layers::{Activation, ConvBn, ConvSpec, Linear, WeightInit, global_avg_pool, max_pool2d};
use compress_nn::stack::{Stack, StackConfig};

/// Whether a 2x2 max-pool follows each conv.
const POOL_AFTER: [bool; 4] = [false, true, false, true];

/// The mini's network.
#[derive(Debug)]
pub struct VggTiny {
    convs: Vec<ConvBn>,
    fc: Linear,
}

/// Its declaration on `1 x 28 x 28` digits at widths 16, 32, 64, 64.
pub fn vgg_tiny() -> compress_nn::Result<StackConfig> {
    let mut s = Stack::new([1, 28, 28]);
    for (i, w) in [16, 32, 64, 64].into_iter().enumerate() {
        s = s.conv(&format!("convs.{i}"), w).norm(&format!("bns.{i}"));
    }
    s.output("fc", 10).bias().build()
}

impl compress_nn::Architecture for VggTiny {
    type Config = StackConfig;
    fn build(cfg: &StackConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let mut convs = Vec::new();
        let mut cin = compress_nn::ArchConfig::input_shape(cfg)[0];
        for i in 0..POOL_AFTER.len() {
            let cout = cfg.width(&format!("convs.{i}"))?;
            // Kaiming-normal conv weights, as the official code initialises them.
            let spec = ConvSpec::same(3).init(WeightInit::KaimingFanOut);
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

impl ModuleT for VggTiny {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (c, pool) in self.convs.iter().zip(POOL_AFTER) {
            h = c.forward_t(&h, train)?;
            if pool {
                h = max_pool2d(&h, 2, 2, 0)?;
            }
        }
        candle_core::Module::forward(&self.fc, &global_avg_pool(&h)?)
    }
}
