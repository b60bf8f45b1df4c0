//! CLR-RNF on a network of your own: a three-conv CNN with max pooling and a flattening head, declared in a few lines,
//! trained on 2,000 digits, pruned in one call (CLR plans the widths, RNF picks the filters) and
//! fine-tuned as an ordinary candle model.
//! Run: `cargo run --release -p clr-rnf --example own_cnn`
use candle_core::{Device, ModuleT, Tensor};
use candle_nn::{Optimizer, VarBuilder, loss::cross_entropy};
use clr_rnf::{ClrRnfSettings, prune};
use compress_data::{ImageDataset, batch::Batcher, embedded::mnist_5k_digits};
use compress_nn::layers::{Activation, ConvBn, ConvSpec, Linear, max_pool2d};
use compress_nn::stack::{Stack, StackConfig};
use compress_nn::{ArchConfig, Architecture, Model, Network};
use compress_train::classify::evaluate;

#[derive(Debug)]
struct Digits {
    convs: Vec<ConvBn>,
    fc: Linear,
}

impl Architecture for Digits {
    type Config = StackConfig;
    fn build(cfg: &StackConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let mut convs = Vec::new();
        let mut cin = 1;
        for name in ["c1", "c2", "c3"] {
            let cout = cfg.width(name)?;
            let spec = ConvSpec::same(3);
            convs.push(ConvBn::new(cin, cout, spec, Activation::Relu, vb.pp(name), vb.pp(format!("{name}_bn")))?);
            cin = cout;
        }
        Ok(Self { convs, fc: Linear::new(cin * 49, 10, true, vb.pp("fc"))? }) // 7 x 7 positions per channel
    }
}

impl ModuleT for Digits {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (i, c) in self.convs.iter().enumerate() {
            h = c.forward_t(&h, train)?;
            if i < 2 {
                h = max_pool2d(&h, 2, 2, 0)?; // 28 -> 14 -> 7
            }
        }
        candle_core::Module::forward(&self.fc, &h.flatten_from(1)?)
    }
}

fn train(net: &Network<Digits>, data: &ImageDataset, epochs: usize, lr: f64) -> Result<(), Box<dyn std::error::Error>> {
    let vars = net.trainable_vars()?.into_iter().map(|(_, v)| v).collect();
    let mut opt = candle_nn::AdamW::new(vars, candle_nn::ParamsAdamW { lr, ..Default::default() })?;
    let batcher = Batcher::new(32, true, 0, Device::Cpu)?;
    for epoch in 0..epochs {
        for batch in batcher.epoch(data, epoch as u64, 0)? {
            let batch = batch?;
            opt.backward_step(&cross_entropy(&net.forward_t(&batch.images, true)?, &batch.labels)?)?;
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cfg = Stack::new([1, 28, 28])
        .conv("c1", 16)
        .norm("c1_bn")
        .conv("c2", 32)
        .norm("c2_bn")
        .conv("c3", 32)
        .norm("c3_bn")
        .flatten(49)
        .output("fc", 10)
        .bias()
        .build()?;
    let (data, test) = mnist_5k_digits(Some(2000), Some(500))?;
    let net = Network::<Digits>::new(cfg, 0, &Device::Cpu)?;
    train(&net, &data, 4, 3e-3)?;
    let (dense, _) = evaluate(&net, &test, 250)?;
    // Remove half the conv weights by |w| / f^0.5; RNF keeps the hub filters.
    let pruned = prune(&net, &ClrRnfSettings::new(0.5, 0.5), 0)?;
    let small = pruned.network;
    let (right_after, _) = evaluate(&small, &test, 250)?;
    train(&small, &data, 4, 3e-3)?;
    let (tuned, _) = evaluate(&small, &test, 250)?;
    let ratios: Vec<String> = pruned.plan.ranking.layers.iter().map(|l| format!("{:.2}", l.prune_ratio)).collect();
    println!(
        "widths {:?} (p = {}), {} -> {} params; test top-1 dense {dense:.1} %, pruned {right_after:.1} %, \
         fine-tuned {tuned:.1} %",
        small.config.widths(),
        ratios.join(" / "),
        net.count_params()?,
        small.count_params()?
    );
    assert!(small.config.widths()["c3"] < 32 && small.config.widths()["c1"] <= 16);
    assert!(tuned > 80.0, "the pruned network recovers");
    Ok(())
}

#[test]
fn example_runs() {
    main().expect("the example runs");
}
