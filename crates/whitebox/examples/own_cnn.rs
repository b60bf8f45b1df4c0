//! White-Box on a network of your own: a strided CNN with a global-pool head, declared in a few
//! lines, trained with class-wise masks (stage 1), pruned by the global vote to half its FLOPs
//! (stage 2, BatchNorms folded) and fine-tuned as an ordinary network (stage 3).
//! Run: `cargo run --release -p whitebox --example own_cnn`
use candle_core::{Device, ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_data::embedded::mnist_5k_digits;
use compress_nn::layers::{Activation, ConvBn, ConvSpec, Linear, global_avg_pool};
use compress_nn::stack::{Stack, StackConfig};
use compress_nn::{ArchConfig, Architecture, Network};
use compress_train::classify::{evaluate, fit};
use compress_train::record::Run;
use compress_train::{NoHooks, TrainConfig, schedule::Decay};
use whitebox::{WhiteBoxSettings, prune, train_masks};

#[derive(Debug)]
struct Strided {
    convs: Vec<ConvBn>,
    fc: Linear,
}

const LAYERS: [(&str, usize); 3] = [("c1", 1), ("c2", 2), ("c3", 2)]; // (name, stride): 28 -> 14 -> 7

impl Architecture for Strided {
    type Config = StackConfig;
    fn build(cfg: &StackConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let mut convs = Vec::new();
        let mut cin = 1;
        for (name, stride) in LAYERS {
            let cout = cfg.width(name)?;
            let spec = ConvSpec::same(3).stride(stride);
            convs.push(ConvBn::new(cin, cout, spec, Activation::Relu, vb.pp(name), vb.pp(format!("{name}_bn")))?);
            cin = cout;
        }
        Ok(Self { convs, fc: Linear::new(cin, 10, true, vb.pp("fc"))? })
    }
}

impl ModuleT for Strided {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for c in &self.convs {
            h = c.forward_t(&h, train)?;
        }
        candle_core::Module::forward(&self.fc, &global_avg_pool(&h)?)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cfg = Stack::new([1, 28, 28])
        .conv("c1", 16)
        .norm("c1_bn")
        .conv("c2", 32)
        .norm("c2_bn")
        .conv("c3", 64)
        .norm("c3_bn")
        .output("fc", 10)
        .bias()
        .build()?;
    let (data, test) = mnist_5k_digits(Some(2000), Some(500))?;
    let net = Network::<Strided>::new(cfg, 0, &Device::Cpu)?;
    // Stage 1: the network and one class-wise mask per conv, trained together (the toolkit's
    // engine; any run folder will do).
    let settings = WhiteBoxSettings::new(0.01, 0.5);
    let stage1 = TrainConfig::sgd(4, 32, 0.01, Decay::Constant, 5e-4, 0);
    let dir = tempfile::tempdir()?;
    let mut run = Run::create(dir.path(), "stage1", &stage1, 0, "cpu")?;
    run.quiet = true;
    let masks = train_masks(&net, 10, &settings, &data, &stage1, &mut run, false)?;
    // Stage 2: vote to half the FLOPs; the result is folded and carries no masks.
    let pruned = prune(&net, &masks, &settings, 0)?;
    let small = pruned.network;
    let (right_after, _) = evaluate(&small, &test, 250)?;
    // Stage 3: ordinary training of an ordinary network (here the toolkit's loop again).
    let stage3 = TrainConfig::sgd(2, 32, 0.02, Decay::Cosine { total: 2 * 62, min_lr: 0.0, start: 0 }, 5e-4, 0);
    let mut run = Run::create(dir.path(), "stage3", &stage3, 0, "cpu")?;
    run.quiet = true;
    fit(&small, &data, &test, &stage3, &mut run, false, &mut NoHooks)?;
    let (tuned, _) = evaluate(&small, &test, 250)?;
    let widths: Vec<String> = ["c1", "c2", "c3"].iter().map(|g| format!("{g} {}", small.config.widths()[*g])).collect();
    println!(
        "vote: {} ({} passes, FLOPs -{:.1} %); top-1 right after pruning {right_after:.1} %, fine-tuned {tuned:.1} %",
        widths.join(", "),
        pruned.plan.passes.len(),
        100.0 * pruned.plan.reduction
    );
    assert!(pruned.plan.reduction >= 0.5);
    assert!(small.tensors()?.keys().all(|k| !k.contains("whitebox")), "the pruned network carries no masks");
    assert!(tuned > 80.0, "fine-tuned top-1 {tuned}");
    Ok(())
}

#[test]
fn example_runs() {
    main().expect("the example runs");
}
