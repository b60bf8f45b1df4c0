//! DDTB on a super-resolution network of your own: a 2-block residual x2 SR net, written once for
//! any quantization scheme (full precision for the teacher, DDTB's quantizers for the student),
//! trained in full precision on photos-12 patches, then quantized to W4A4 by DDTB.
//! Run: `cargo run --release -p ddtb --example tiny_sr`
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use compress_core::rng::SeededRng;
use compress_data::embedded::{photos_12, photos_12_first};
use compress_nn::layers::{Activation, Conv2d, ConvSpec, pixel_shuffle};
use compress_nn::zoo::SrSetting;
use compress_train::{record::Run, super_resolution::bicubic_score};
use ddtb::scheme::{ActQuant, QuantConv2d, QuantScheme};
use ddtb::{DdtbSettings, QuantSr, SrNet, SrOutput, SrRecipe};

#[derive(Debug)]
struct TinySr {
    head: Conv2d,
    blocks: Vec<(ActQuant, QuantConv2d, ActQuant, QuantConv2d)>,
    up: Conv2d,
}

impl QuantSr for TinySr {
    fn forward_t(&self, x: &Tensor, train: bool) -> ddtb::Result<SrOutput> {
        let h = self.head.forward(x)?;
        let mut r = h.clone();
        for (q_in, conv1, q_act, conv2) in &self.blocks {
            let a = Activation::Relu.apply(&conv1.forward(&q_in.forward_t(&r, train)?)?)?;
            r = (&r + conv2.forward(&q_act.forward_t(&a, train)?)?)?;
        }
        let feature = (r + h)?; // what attention transfer compares
        Ok(SrOutput { sr: pixel_shuffle(&self.up.forward(&feature)?, 2)?, feature })
    }
    fn act_quants(&self) -> Vec<&ActQuant> {
        self.blocks.iter().flat_map(|b| [&b.0, &b.2]).collect()
    }
    fn body_convs(&self) -> Vec<&QuantConv2d> {
        self.blocks.iter().flat_map(|b| [&b.1, &b.3]).collect()
    }
}

/// The network's code: the same variable names at every scheme, so FP weights load into the student.
#[derive(Debug)]
struct TinySrNet;

impl SrNet for TinySrNet {
    fn build(&self, scheme: &QuantScheme, vb: VarBuilder) -> ddtb::Result<Box<dyn QuantSr>> {
        let sp = ConvSpec::same(3).with_bias();
        let block = |i: usize| -> ddtb::Result<_> {
            let b = vb.pp(format!("body.{i}"));
            let conv = |n: &str| QuantConv2d::new(16, 16, sp, scheme, b.pp(n));
            Ok((
                ActQuant::new(scheme, b.pp("quant_in"))?,
                conv("conv1")?,
                ActQuant::new(scheme, b.pp("quant_act"))?,
                conv("conv2")?,
            ))
        };
        let head = Conv2d::new(3, 16, sp, vb.pp("head"))?;
        Ok(Box::new(TinySr { head, blocks: vec![block(0)?, block(1)?], up: Conv2d::new(16, 12, sp, vb.pp("up"))? }))
    }
    fn setting(&self) -> SrSetting {
        SrSetting { scale: 2, n_colors: 3, lr_size: 24, rgb_range: 1.0 }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (dev, net) = (Device::Cpu, TinySrNet);
    let (train, test) = (photos_12("train", 2)?, photos_12_first("test", 2, Some(3))?);
    let vm = VarMap::new();
    let fp_model =
        net.build(&QuantScheme::full_precision(), compress_nn::init::seeded_builder(&vm, 0, DType::F32, &dev))?;
    let mut opt = candle_nn::AdamW::new(
        vm.all_vars(),
        candle_nn::ParamsAdamW { lr: 1e-3, weight_decay: 0.0, ..Default::default() },
    )?;
    for step in 0..400 {
        let b = train.patch_batch(&mut SeededRng::new(0).stream("fp", step), 16, 24, &dev)?;
        opt.backward_step(&(fp_model.forward_t(&b.lr, true)?.sr - b.hr)?.abs()?.mean_all()?)?;
    }
    let fp = compress_nn::model_tensors(&*vm.data().lock().map_err(|_| "lock")?); // the weights by name
    let fp_score = ddtb::trainer::evaluate(fp_model.as_ref(), &test, 1.0, &dev)?;

    // DDTB's settings at 4 bits; a short recipe (the paper's runs 59,000 iterations).
    let recipe = SrRecipe {
        iterations: 300,
        stage1_iterations: 60,
        epoch_iterations: 100,
        calibration_batches: 10,
        lr: 1e-4,
        bound_lr: 1e-3,
        batch: 8,
        lr_patch: 24,
        rounds: 1,
        ..SrRecipe::paper(24)
    };
    let dir = std::env::temp_dir().join(format!("ddtb-tiny-sr-{}", std::process::id()));
    let mut run = Run::create(&dir, "ddtb", &recipe, recipe.seed, "cpu")?;
    run.quiet = true;
    let (outcome, _student) =
        ddtb::quantize(&net, &DdtbSettings::paper(4), &recipe, &fp, &train, &test, &mut run, &dev)?;
    drop(run);
    std::fs::remove_dir_all(&dir)?;
    println!(
        "PSNR-Y x2 on 3 test photos: bicubic {:.2} dB, FP {:.2} dB, DDTB W4A4 {:.2} dB ({} of {} sites dynamic)",
        bicubic_score(&test)?.psnr,
        fp_score.psnr,
        outcome.score.psnr,
        outcome.calibration.dynamic.len(),
        outcome.calibration.names.len()
    );
    Ok(())
}

#[test]
fn example_runs() {
    main().expect("the example runs");
}
