//! DCFF on a network of your own: a CNN with a residual block, declared in a few lines, trained by
//! filter fusion on 2,000 digits, extracted as a compact network of the same code and saved.
//! Run: `cargo run --release -p dcff --example residual_cnn`
use candle_core::{Device, ModuleT, Tensor};
use candle_nn::{Optimizer, VarBuilder, loss::cross_entropy};
use compress_data::{batch::Batcher, embedded::mnist_5k_digits};
use compress_nn::layers::{Activation, ConvBn, ConvSpec, Linear, global_avg_pool};
use compress_nn::stack::{Stack, StackConfig};
use compress_nn::{ArchConfig, Architecture, Network};
use compress_train::classify::evaluate;
use dcff::{Dcff, DcffSettings};

#[derive(Debug)]
struct MyNet {
    stem: ConvBn,
    a: ConvBn,
    b: ConvBn,
    down: ConvBn,
    fc: Linear,
}

impl Architecture for MyNet {
    type Config = StackConfig;
    fn build(cfg: &StackConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let (s, a, d) = (cfg.width("stem")?, cfg.width("a")?, cfg.width("down")?);
        let conv = |cin, cout, stride, name: &str| {
            let spec = ConvSpec::same(3).stride(stride);
            ConvBn::new(cin, cout, spec, Activation::Relu, vb.pp(name), vb.pp(format!("{name}_bn")))
        };
        let (stem, down) = (conv(1, s, 2, "stem")?, conv(s, d, 2, "down")?);
        Ok(Self {
            stem,
            a: conv(s, a, 1, "a")?,
            b: conv(a, s, 1, "b")?,
            down,
            fc: Linear::new(d, 10, true, vb.pp("fc"))?,
        })
    }
}

impl ModuleT for MyNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let x = self.stem.forward_t(x, train)?;
        let y = self.a.forward_t(&x, train)?;
        let x = self.b.forward_residual(&y, &x, Activation::Relu, train)?; // relu(bn(b(y)) + x)
        candle_core::Module::forward(&self.fc, &global_avg_pool(&self.down.forward_t(&x, train)?)?)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cfg = Stack::new([1, 28, 28])
        .conv("stem", 16)
        .norm("stem_bn")
        .residual(|b| b.conv("a", 16).norm("a_bn").conv_into("b").norm("b_bn"))
        .conv("down", 32)
        .norm("down_bn")
        .output("fc", 10)
        .bias()
        .build()?;
    let epochs = 8;
    let settings = DcffSettings::uniform(&cfg, 0.5, epochs); // half the filters of every conv
    let dcff = Dcff::<MyNet>::new(cfg, &settings, 0, &Device::Cpu)?;
    let params = candle_nn::ParamsAdamW { lr: 3e-3, ..Default::default() };
    let mut opt = candle_nn::AdamW::new(dcff.trainable_vars()?, params)?; // buffers excluded
    let (train, test) = mnist_5k_digits(Some(2000), Some(500))?;
    let batcher = Batcher::new(32, true, 0, Device::Cpu)?;
    for epoch in 0..epochs {
        let refresh = dcff.begin_epoch(epoch)?;
        for batch in batcher.epoch(&train, epoch as u64, 0)? {
            let batch = batch?;
            opt.backward_step(&cross_entropy(&dcff.forward_t(&batch.images, true)?, &batch.labels)?)?;
        }
        let changed = refresh.layers.iter().filter(|l| l.changed).count();
        println!("epoch {epoch}: T = {:.1}, {changed} selections changed", refresh.temperature);
    }
    let compact = dcff.extract()?;
    let (fused, _) = evaluate(&dcff, &test, 250)?;
    let path = std::env::temp_dir().join(format!("dcff-own-model-{}.safetensors", std::process::id()));
    compact.save(&path)?; // the user's own tensor names, at the compact widths
    let loaded = Network::<MyNet>::load(compact.config.clone(), &path, &Device::Cpu)?;
    std::fs::remove_file(&path)?;
    let (acc, _) = evaluate(&loaded, &test, 250)?;
    println!(
        "compact widths {:?}, {} params; test top-1 fused {fused:.1} %, compact (reloaded) {acc:.1} %",
        compact.config.widths(),
        compact.count_params()?
    );
    assert!((acc - fused).abs() < 0.5, "the compact network computes the fused one's function");
    Ok(())
}

#[test]
fn example_runs() {
    main().expect("the example runs");
}
