//! FDDA's generator step timed (`cargo xtask bench synth` prints it after IntraQ's synthesis):
//! the mini's (28 x 28 digits, 32 / 16 / 8 generator, the section-9 CNN) and the paper's
//! (224 x 224, GDFQ's ImageNet generator, ResNet-18), batches 16 + 16, medians of `steps` steps.

use crate::centres::BnsCentres;
use crate::error::Result;
use crate::generator::{FddaGenerator, GeneratorSettings};
use crate::net::{DigitCnn, digit_cnn, digit_generator};
use candle_core::{DType, Device, Tensor};
use compress_core::rng::SeededRng;
use compress_core::timing::median_seconds;
use compress_nn::zoo::{ResNet, ResNetConfig};
use compress_nn::{Architecture, Network};
use compress_synth::{CondGenerator, GenConfig};

fn time_step<A: Architecture>(teacher: &Network<A>, gen_cfg: GenConfig, steps: usize) -> Result<f64> {
    let dev = Device::Cpu;
    let [c, h, w] = compress_nn::ArchConfig::input_shape(&teacher.config);
    let k = gen_cfg.classes;
    let pairs: Vec<(Tensor, usize)> = (0..k)
        .map(|i| Ok(((Tensor::ones((c, h, w), DType::F32, &dev)? * (i as f64 / k as f64))?, i)))
        .collect::<Result<_>>()?;
    let mut centres = BnsCentres::compute(teacher, &pairs, k)?;
    centres.correct = vec![true; k];
    let mut g = FddaGenerator::new(CondGenerator::new(gen_cfg, 0, &dev)?, centres, GeneratorSettings::code())?;
    let rng = SeededRng::new(0);
    let mut i = 0u64;
    let t = median_seconds(1, steps.max(1), 0.0, || -> Result<()> {
        i += 1;
        g.step(teacher, 5, &mut rng.stream("bench", i)).map(|_| ())
    })?;
    Ok(t)
}

/// Milliseconds per generator step at the mini's and the paper's size.
pub fn generator_step(steps: usize) -> Result<String> {
    let dev = Device::Cpu;
    let mini = Network::<DigitCnn>::new(digit_cnn()?, 0, &dev)?;
    let small = digit_generator(100);
    let a = time_step(&mini, small, steps)?;
    let r18 = Network::<ResNet>::new(ResNetConfig::resnet18(1000)?, 0, &dev)?;
    let b = time_step(&r18, GenConfig::imagenet(1000), steps.min(3))?;
    Ok(format!(
        "FDDA generator step (batches 16 + 16, {} candle thread(s)): mini (28 x 28, section-9 CNN) {:.0} ms; \
         ImageNet (224 x 224, ResNet-18) {:.0} ms, so the paper's 80,000 steps take {:.0} h here",
        candle_core::utils::get_num_threads(),
        a * 1e3,
        b * 1e3,
        b * 80_000.0 / 3600.0
    ))
}
