//! FDDA on a network of your own: a small CNN with a residual block, declared in a few lines and
//! trained on 2,000 digits, quantized to W4A4 with its first and last layers at 8 bits (F8L8) from
//! one real digit per class plus FDDA's synthetic digits.
//! Run: `cargo run --release -p fdda --example own_teacher`
use candle_core::{Device, ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_data::embedded::mnist_5k_digits;
use compress_nn::layers::{Activation, ConvBn, ConvSpec, Linear, global_avg_pool};
use compress_nn::stack::{Stack, StackConfig};
use compress_nn::{Architecture, Network};
use compress_synth::CondGenerator;
use compress_train::optim::OptimizerKind;
use compress_train::schedule::Decay;
use compress_train::{NoHooks, Run, TrainConfig, classify};
use fdda::{BitPolicy, BnsCentres, Calibration, FddaGenerator, GeneratorSettings, StudentSettings, TestSet};

#[derive(Debug)]
struct ResCnn {
    stem: ConvBn,
    a: ConvBn,
    b: ConvBn,
    fc: Linear,
}

impl Architecture for ResCnn {
    type Config = StackConfig;
    fn build(cfg: &StackConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let (s, a) = (cfg.width("stem")?, cfg.width("a")?);
        let conv = |cin, cout, stride, n: &str| {
            let spec = ConvSpec::same(3).stride(stride);
            ConvBn::new(cin, cout, spec, Activation::Relu, vb.pp(n), vb.pp(format!("{n}_bn")))
        };
        let fc = Linear::new(s, 10, true, vb.pp("fc"))?;
        Ok(Self { stem: conv(1, s, 2, "stem")?, a: conv(s, a, 1, "a")?, b: conv(a, s, 1, "b")?, fc })
    }
}

impl ModuleT for ResCnn {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let x = self.stem.forward_t(x, train)?;
        let x = self.b.forward_residual(&self.a.forward_t(&x, train)?, &x, Activation::Relu, train)?;
        candle_core::Module::forward(&self.fc, &global_avg_pool(&x)?)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let cfg = Stack::new([1, 28, 28])
        .conv("stem", 16)
        .norm("stem_bn")
        .residual(|b| b.conv("a", 16).norm("a_bn").conv_into("b").norm("b_bn"))
        .output("fc", 10)
        .bias()
        .build()?;
    let teacher = Network::<ResCnn>::new(cfg, 0, &dev)?;
    let (train, test) = mnist_5k_digits(Some(2000), Some(500))?;
    let dir = std::env::temp_dir().join(format!("fdda-own-teacher-{}", std::process::id()));
    let adam = OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    let recipe = TrainConfig { optimizer: adam, ..TrainConfig::sgd(3, 32, 3e-3, Decay::Constant, 0.0, 0) };
    let mut run = Run::create(&dir, "teacher", &recipe, 0, "cpu")?;
    run.quiet = true;
    classify::fit(&teacher, &train, &test, &recipe, &mut run, false, &mut NoHooks)?;
    let (fp, _) = classify::evaluate(&teacher, &test, 250)?;
    // One real digit per class: the calibration set and the BNS centres.
    let TestSet { images, labels } = TestSet::of(&train, &dev)?;
    let labels = labels.to_vec1::<u32>()?;
    let mut pairs = Vec::new();
    for k in 0..10u32 {
        let i = labels.iter().position(|&l| l == k).ok_or("a class has no digit")?;
        pairs.push((images.get(i)?, k as usize));
    }
    let centres = BnsCentres::compute(&teacher, &pairs, 10)?;
    let gen_cfg = fdda::net::digit_generator(64);
    let settings = GeneratorSettings { deep_start: Some(1), ..GeneratorSettings::code() };
    let mut generator = FddaGenerator::new(CondGenerator::new(gen_cfg, 0, &dev)?, centres, settings)?;
    let student = StudentSettings {
        policy: BitPolicy::FirstLast8 { w: 4, a: 4 },
        iters: 120,
        iters_per_epoch: 10,
        warmup_iters: 60,
        calib_iters: 20,
        t_max: 60,
        eval_every: 20,
        ..fdda::reproduce::MiniSettings::mini().student // ranges from real digits, KD alpha = T = 20, ...
    };
    let eval = TestSet::of(&test, &dev)?;
    let calib = Calibration::new(&pairs)?;
    let (_, quantizers, record) = fdda::run_student(&teacher, Some(&mut generator), &calib, &eval, &student, 0)?;
    let eights: Vec<String> = quantizers.overrides.weights.keys().cloned().collect();
    println!(
        "teacher {fp:.1} %; W4A4 with {eights:?} and the first / last activations at 8 bits: calibrated {:.1} %, \
         fine-tuned {:.1} % (best {:.1} %)",
        record.calibrated(),
        record.settled(3),
        record.best()
    );
    std::fs::remove_dir_all(&dir)?;
    assert_eq!(eights, ["fc", "stem"]);
    assert!(record.settled(3) > 50.0, "the quantized student works");
    Ok(())
}

#[test]
fn example_runs() {
    main().expect("the example runs");
}
