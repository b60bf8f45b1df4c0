//! IntraQ on a network of your own: a small CNN is trained on 2,000 digits, then quantized to
//! W4A4 from synthetic images alone (no training digit is seen by stage 1 or 2), and its 4-bit
//! weights are exported as integer codes. Run: `cargo run --release -p intraq --example digit_cnn`
use candle_core::{Device, ModuleT, Tensor};
use candle_nn::{Module, Optimizer, VarBuilder, loss::cross_entropy};
use compress_data::{batch::Batcher, embedded::mnist_5k_digits};
use compress_nn::layers::{Activation, ConvBn, ConvSpec, Linear, max_pool2d};
use compress_nn::stack::{Stack, StackConfig};
use compress_nn::{Architecture, Model, Network};
use compress_train::classify::evaluate;
use intraq::{FinetuneConfig, IntraqSettings, export_weights, quantize};

#[derive(Debug)]
struct DigitNet {
    c1: ConvBn,
    c2: ConvBn,
    hidden: Linear,
    out: Linear,
}

impl Architecture for DigitNet {
    type Config = StackConfig;
    fn build(cfg: &StackConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let (a, b, h) = (cfg.width("c1")?, cfg.width("c2")?, cfg.width("hidden")?);
        let conv = |cin, cout, n: &str| {
            ConvBn::new(cin, cout, ConvSpec::same(3), Activation::Relu, vb.pp(n), vb.pp(format!("{n}_bn")))
        };
        let (c1, c2) = (conv(1, a, "c1")?, conv(a, b, "c2")?);
        Ok(Self {
            c1,
            c2,
            hidden: Linear::new(b * 49, h, true, vb.pp("hidden"))?,
            out: Linear::new(h, 10, true, vb.pp("out"))?,
        })
    }
}

impl ModuleT for DigitNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let x = max_pool2d(&self.c1.forward_t(x, train)?, 2, 2, 0)?;
        let x = max_pool2d(&self.c2.forward_t(&x, train)?, 2, 2, 0)?.flatten_from(1)?;
        self.out.forward(&Activation::Relu.apply(&self.hidden.forward(&x)?)?) // relu: a quantized site
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cfg = Stack::new([1, 28, 28]).conv("c1", 8).norm("c1_bn").conv("c2", 16).norm("c2_bn");
    let cfg = cfg.flatten(49).linear("hidden", 32).bias().output("out", 10).bias().build()?;
    let teacher = Network::<DigitNet>::new(cfg, 0, &Device::Cpu)?;
    let (train, test) = mnist_5k_digits(Some(2000), Some(500))?;
    let mut opt =
        candle_nn::AdamW::new(teacher.trainable_vars()?.into_iter().map(|(_, v)| v).collect(), Default::default())?;
    for epoch in 0..3 {
        for batch in Batcher::new(32, true, 0, Device::Cpu)?.epoch(&train, epoch, 0)? {
            let batch = batch?;
            opt.backward_step(&cross_entropy(&teacher.forward_t(&batch.images, true)?, &batch.labels)?)?;
        }
    }
    println!("full-precision teacher: test top-1 {:.1} %", evaluate(&teacher, &test, 250)?.0);

    // Stage 1 makes 2 x 64 images in 60 iterations; stage 2 calibrates and fine-tunes 150 steps.
    let mut settings = IntraqSettings::official(4, 4, [1, 28, 28], 10);
    (settings.synth.groups, settings.synth.batches_per_group, settings.synth.batch, settings.synth.iters) =
        (2, 1, 64, 60);
    settings.terms.flip = false; // digits are not mirror-symmetric
    let recipe =
        FinetuneConfig { steps: 150, lr: 1e-4, milestones: vec![100], eval_every: 50, ..FinetuneConfig::mini() };
    let runs = std::env::temp_dir().join(format!("intraq-own-model-{}", std::process::id()));
    let q = quantize(&teacher, &settings, &recipe, &test, 0, &runs)?;
    println!("W4A4 student: calibrated {:.1} %, fine-tuned {:?} %", q.calibrated_top1, q.evals);
    // The teacher's passes in half precision (a GPU user sets Bf16; f16 also runs on the CPU).
    // (A shorter run: candle's f16 ops on the CPU are slow.)
    let mut half = IntraqSettings { teacher_precision: compress_nn::half::Precision::F16, ..settings.clone() };
    half.synth.iters = 20;
    let short = FinetuneConfig { steps: 40, milestones: vec![30], eval_every: 20, ..recipe.clone() };
    let h = quantize(&teacher, &half, &short, &test, 0, &runs)?;
    std::fs::remove_dir_all(&runs)?;
    println!("with f16 teacher passes: calibrated {:.1} %, fine-tuned {:?} %", h.calibrated_top1, h.evals);
    assert!(h.evals.last().is_some_and(|&a| a > 80.0), "an f16 teacher quantizes as well");

    let codes = export_weights(q.student.varmap(), settings.wbits)?;
    let (bytes, floats) =
        codes.values().fold((0, 0), |(b, f), t| (b + t.codes.len(), f + 4 * t.shape.iter().product::<usize>()));
    println!("{} weights exported: {bytes} bytes of 4-bit codes for {floats} bytes of f32", codes.len());
    Ok(())
}

#[test]
fn example_runs() {
    main().expect("the example runs");
}
