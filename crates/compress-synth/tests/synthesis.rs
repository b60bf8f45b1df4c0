//! The synthesis loop on a small zoo network: the BN loss falls, labels and shapes are right, a
//! seed repeats itself, the cache resumes and refuses another configuration or method, a method's
//! terms plug in.
#![allow(clippy::unwrap_used)]

use candle_core::{Device, Tensor};
use compress_nn::network::Network;
use compress_nn::zoo::{ResNetCifar, ResNetCifarConfig};
use compress_synth::{BatchContext, BnsOnly, SynthConfig, SynthMethod, Teacher, TeacherOut, synthesize};
use rand::rngs::StdRng;

fn teacher() -> Network<ResNetCifar> {
    let cfg = ResNetCifarConfig::new(8, 4).unwrap().input(1, 8);
    let net = Network::<ResNetCifar>::new(cfg, 3, &Device::Cpu).unwrap();
    // Running statistics of a distribution the noise does not start from: N(0.5, 2^2) inputs.
    for _ in 0..30 {
        let x = Tensor::randn(0.5f32, 2.0, (32, 1, 8, 8), &Device::Cpu).unwrap();
        net.forward_t(&x, true).unwrap();
    }
    net
}

fn small(iters: usize) -> SynthConfig {
    SynthConfig {
        groups: 2,
        batches_per_group: 1,
        batch: 8,
        iters,
        image_size: 8,
        channels: 1,
        classes: 4,
        ..SynthConfig::cifar10()
    }
}

#[test]
fn the_bn_loss_falls_and_a_seed_repeats_itself() {
    let t = teacher();
    let dev = Device::Cpu;
    let first = synthesize(&t, &small(1), &mut BnsOnly, 5, None, &dev).unwrap();
    let set = synthesize(&t, &small(150), &mut BnsOnly, 5, None, &dev).unwrap();
    assert_eq!(set.images.dims(), &[16, 1, 8, 8]);
    assert_eq!(set.labels.len(), 16);
    assert!(set.labels.iter().all(|&l| l < 4));
    for (a, b) in first.stats.iter().zip(&set.stats) {
        assert!(b.bns < 0.2 * a.bns, "BNS {} -> {}", a.bns, b.bns);
    }
    let again = synthesize(&t, &small(150), &mut BnsOnly, 5, None, &dev).unwrap();
    let d = (&set.images - &again.images).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(d, 0.0);
    assert_eq!(set.labels, again.labels);
    assert!(synthesize(&t, &SynthConfig { iters: 0, ..small(1) }, &mut BnsOnly, 5, None, &dev).is_err());
}

#[test]
fn the_cache_resumes_and_refuses_another_configuration() {
    let t = teacher();
    let dev = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let a = synthesize(&t, &small(5), &mut BnsOnly, 1, Some((dir.path(), "t")), &dev).unwrap();
    assert!(a.stats.iter().all(|s| !s.cached));
    let b = synthesize(&t, &small(5), &mut BnsOnly, 1, Some((dir.path(), "t")), &dev).unwrap();
    assert!(b.stats.iter().all(|s| s.cached));
    for (x, y) in a.stats.iter().zip(&b.stats) {
        assert_eq!((x.loss, x.bns, x.lr), (y.loss, y.bns, y.lr), "the cache keeps each batch's stats");
    }
    let d = (&a.images - &b.images).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(d, 0.0);
    assert_eq!(a.labels, b.labels);
    assert!(synthesize(&t, &small(6), &mut BnsOnly, 1, Some((dir.path(), "t")), &dev).is_err());
    assert!(synthesize(&t, &small(5), &mut BnsOnly, 1, Some((dir.path(), "other")), &dev).is_err());
    assert!(synthesize(&t, &small(5), &mut Brightness, 1, Some((dir.path(), "t")), &dev).is_err(), "another method");
    // A truncated batch file is an error, not a silent re-synthesis.
    std::fs::write(dir.path().join("g1-b0.safetensors"), b"garbage").unwrap();
    assert!(synthesize(&t, &small(5), &mut BnsOnly, 1, Some((dir.path(), "t")), &dev).is_err());
}

/// A method that pulls the images' mean brightness towards 3.
struct Brightness;

impl SynthMethod for Brightness {
    type Batch = ();
    fn key(&self) -> serde_json::Value {
        serde_json::json!("brightness")
    }
    fn start_batch(&self, _: &[u32], _: &mut StdRng, _: &Device) -> compress_synth::Result<()> {
        Ok(())
    }
    fn objective(&self, _: &mut (), bns: Tensor, _: &TeacherOut, ctx: &BatchContext) -> compress_synth::Result<Tensor> {
        Ok((bns + ((ctx.images.mean_all()? - 3.0)?.sqr()? * 10.0)?)?)
    }
}

#[test]
fn extra_terms_plug_into_the_loss_and_the_teacher_exposes_features() {
    let t = teacher();
    let dev = Device::Cpu;
    let out = t.forward_probe(&Tensor::zeros((2, 1, 8, 8), candle_core::DType::F32, &dev).unwrap()).unwrap();
    assert_eq!(out.features.dims(), &[2, 64]);
    assert_eq!(out.bn.len(), 7, "stem + 2 blocks x 3 stages: 7 BN layers with option-A shortcuts");
    let cfg = small(60);
    let plain = synthesize(&t, &cfg, &mut BnsOnly, 2, None, &dev).unwrap();
    let pushed = synthesize(&t, &cfg, &mut Brightness, 2, None, &dev).unwrap();
    let m = |s: &compress_synth::SyntheticSet| s.images.mean_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(m(&pushed) > m(&plain) + 0.5, "{} vs {}", m(&pushed), m(&plain));
}
