//! PSS-Net on a network of your own: a strided CNN declared in a few lines (not from the zoo)
//! becomes a slimmable supernet over its channel groups (widths x [0.5, 1], inputs 16-28 px),
//! trained 2 epochs with prioritized subnet pools per MACs bucket (MACs counted by a forward
//! pass: no formula needed), then the subnet for a budget of half the largest net's MACs is
//! selected, recalibrated and deployed as an ordinary narrow network.
//! Run: `cargo run --release -p pss-net --example own_supernet`
use candle_core::{Device, ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_data::batch::Batcher;
use compress_data::embedded::mnist_5k_digits;
use compress_nn::layers::{Activation, ConvBn, ConvSpec, Linear, global_avg_pool};
use compress_nn::stack::{Stack, StackConfig};
use compress_nn::structure::Widths;
use compress_nn::{Architecture, Network};
use compress_train::optim::OptimizerKind;
use compress_train::schedule::Decay;
use compress_train::{NoHooks, Run, TrainConfig};
use pss_net::supernet::SlimArch;
use pss_net::{Budget, PssSchedule, PssSettings, PssState, Sandwich, StructureSpace, SubnetConfig, Supernet, select};

#[derive(Debug)]
struct Strided {
    convs: Vec<ConvBn>,
    fc: Linear,
}

const LAYERS: [(&str, usize); 3] = [("c1", 1), ("c2", 2), ("c3", 2)]; // (name, stride)

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

/// The slimmable version: one multiplier per conv group.
#[derive(Debug, Clone)]
struct SlimStrided {
    space: StructureSpace,
    config: StackConfig,
}

impl SlimArch for SlimStrided {
    type Net = Strided;
    fn space(&self) -> &StructureSpace {
        &self.space
    }
    fn config(&self) -> pss_net::Result<StackConfig> {
        Ok(self.config.clone())
    }
    fn widths(&self, cfg: &SubnetConfig) -> Widths {
        let c = self.space.channels(cfg);
        LAYERS.iter().zip(c).map(|((name, _), w)| (name.to_string(), w)).collect()
    }
    fn in_channels(&self) -> usize {
        1
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Stack::new([1, 28, 28])
        .conv("c1", 16)
        .norm("c1_bn")
        .conv("c2", 32)
        .norm("c2_bn")
        .conv("c3", 64)
        .norm("c3_bn")
        .output("fc", 10)
        .bias()
        .build()?;
    let space = StructureSpace { bases: vec![16, 32, 64], mults: (0.5, 1.0), resolutions: (16, 28, 4), divisor: 4 };
    let sup = Supernet::new(SlimStrided { space: space.clone(), config }, 0, &Device::Cpu)?;
    let (max, min) = (sup.macs(&space.max_config()), sup.macs(&space.min_config()));
    println!("MACs: largest subnet {max}, smallest {min} (counted by a forward pass)");
    // Buckets of a fifth of the range, in kMACs.
    let step = ((max - min) as f64 / 5e3).round();
    let settings = PssSettings {
        schedule: PssSchedule::official(2),
        capacity: 5,
        lambda: 0.9,
        buckets: (0.0, (max as f64 / 1e3 / step).ceil() * step + step, step),
        n_map: 2_000,
        min_count: 20,
        unit: 1e3,
        random_only: false,
    };
    let state = PssState::new(&sup, &settings, 0)?;
    println!("{} pools, buckets {:?} kMACs", state.sampler.buckets().len(), state.sampler.buckets());
    let (train, test) = mnist_5k_digits(Some(1000), Some(300))?;
    let mut cfg = TrainConfig::sgd(2, 50, 0.1, Decay::Cosine { total: 40, min_lr: 0.0, start: 0 }, 1e-4, 0);
    cfg.optimizer = OptimizerKind::sgd(0.9, true);
    let root = std::env::temp_dir().join(format!("pss-example-{}", std::process::id()));
    let mut run = Run::create(&root, "own-supernet", &cfg, 0, "cpu")?;
    run.quiet = true;
    let obj = Sandwich { sup: &sup, settings: &settings, state: &state, seed: 0, pools_file: None };
    compress_train::classify::fit_objective(&obj, &train, &cfg, &mut run, false, &mut NoHooks)?;
    // Deploy for half the largest net's MACs.
    let budget = max / 2;
    let d = select(&sup, &state, Budget::Macs(budget), &train, 9, 50, 0)?;
    let got = sup.macs(&d.config);
    println!("budget {budget} MACs: subnet r {} widths {:?}, {got} MACs", d.config.resolution, sup.widths(&d.config));
    if got > budget {
        return Err("the deployed subnet exceeds the budget".into());
    }
    let x = Batcher::new(300, false, 0, Device::Cpu)?.epoch(&test, 0, 0)?.next().ok_or("no test batch")??;
    let diff =
        (d.forward(&x.images)? - sup.forward(&x.images, &d.config, false)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
    let right = d
        .forward(&x.images)?
        .argmax(1)?
        .eq(&x.labels)?
        .to_dtype(candle_core::DType::F32)?
        .mean_all()?
        .to_scalar::<f32>()?;
    println!(
        "deployed narrow network: top-1 {:.1} % on 300 test digits; |deployed - supernet| {diff:e}",
        100.0 * right
    );
    if diff != 0.0 {
        return Err(format!("the deployed network differs from the supernet by {diff}").into());
    }
    let narrow: &Network<Strided> = &d.net;
    println!(
        "its conv widths: {:?}",
        narrow
            .tensors()?
            .iter()
            .filter(|(k, _)| k.ends_with("weight") && k.starts_with('c') && !k.contains("bn"))
            .map(|(k, v)| (k.clone(), v.dim(0).unwrap_or(0)))
            .collect::<std::collections::BTreeMap<_, _>>()
    );
    std::fs::remove_dir_all(&root).ok();
    Ok(())
}

#[test]
fn example_runs() {
    main().expect("the example runs");
}
