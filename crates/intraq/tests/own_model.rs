//! IntraQ's entry point on a user's network: a network the quantizers never see is refused with
//! an error naming it, before any synthesis runs.

use candle_core::{Device, Module, ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_nn::stack::{Stack, StackConfig};
use compress_nn::{Architecture, Network};
use intraq::{FinetuneConfig, IntraqSettings, quantize, sites};

/// A classifier of candle-nn's own layers: no toolkit layer, so no quantization site.
#[derive(Debug)]
struct PlainCandle {
    fc: candle_nn::Linear,
}

impl Architecture for PlainCandle {
    type Config = StackConfig;
    fn build(cfg: &StackConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self { fc: candle_nn::linear(4, cfg.width("fc")?, vb.pp("fc"))? })
    }
}

impl ModuleT for PlainCandle {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        self.fc.forward(&x.flatten_from(1)?)
    }
}

#[test]
fn a_network_without_quantization_sites_is_refused_by_name() {
    let cfg = Stack::new([1, 2, 2]).flatten(4).output("fc", 3).bias().build().expect("stack");
    let net = Network::<PlainCandle>::new(cfg, 0, &Device::Cpu).expect("build");
    assert_eq!(sites(&net, 4, 4).expect("sites"), Default::default());
    let settings = IntraqSettings::official(4, 4, [1, 2, 2], 3);
    let test = compress_data::embedded::mnist_5k_digits(Some(1), Some(1)).expect("digits").1;
    let dir = tempfile::tempdir().expect("dir");
    let err = quantize(&net, &settings, &FinetuneConfig::mini(), &test, 0, dir.path()).expect_err("refused");
    let msg = err.to_string();
    assert!(msg.contains("PlainCandle") && msg.contains("0 weight and 0 activation"), "{msg}");
    assert!(std::fs::read_dir(dir.path()).expect("dir").next().is_none(), "nothing was written");
}

/// The toolkit's conv, BatchNorm and ReLU, but a classifier of candle-nn's own.
#[derive(Debug)]
struct OneLayerOfItsOwn {
    conv: compress_nn::layers::ConvBn,
    head: candle_nn::Linear,
}

impl Architecture for OneLayerOfItsOwn {
    type Config = StackConfig;
    fn build(cfg: &StackConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        use compress_nn::layers::{Activation, ConvBn, ConvSpec};
        let c = cfg.width("conv")?;
        Ok(Self {
            conv: ConvBn::new(1, c, ConvSpec::same(3), Activation::Relu, vb.pp("conv"), vb.pp("bn"))?,
            head: candle_nn::linear(c, cfg.width("head")?, vb.pp("head"))?,
        })
    }
}

impl ModuleT for OneLayerOfItsOwn {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.head.forward(&self.conv.forward_t(x, train)?.mean((2, 3))?)
    }
}

#[test]
fn a_layer_the_quantizers_never_see_is_named() {
    let cfg = Stack::new([1, 4, 4]).conv("conv", 4).norm("bn").output("head", 3).bias().build().expect("stack");
    let net = Network::<OneLayerOfItsOwn>::new(cfg, 0, &Device::Cpu).expect("build");
    let s = sites(&net, 4, 4).expect("sites");
    assert_eq!((s.weights, s.activations), (1, 1));
    assert_eq!(intraq::unquantized_weights(&net, &s).expect("missed"), ["head.weight"]);
    let settings = IntraqSettings::official(4, 4, [1, 4, 4], 3);
    let test = compress_data::embedded::mnist_5k_digits(Some(1), Some(1)).expect("digits").1;
    let dir = tempfile::tempdir().expect("dir");
    let err = quantize(&net, &settings, &FinetuneConfig::mini(), &test, 0, dir.path()).expect_err("refused");
    assert!(err.to_string().contains("[\"head.weight\"]"), "{err}");
}
