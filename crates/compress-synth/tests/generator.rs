//! GDFQ's generator: shapes and parameter layout of both variants, batch-statistics BNs, label
//! conditioning, determinism, and a training step that lowers `CE + 0.1 L_BNS` on a zoo teacher.
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor};
use compress_core::rng::SeededRng;
use compress_nn::network::Network;
use compress_nn::zoo::{ResNetCifar, ResNetCifarConfig};
use compress_synth::generator::{Conditioning, gdfq_loss};
use compress_synth::{CondGenerator, GdfqTrainer, GenConfig};

fn small(conditioning: Conditioning) -> GenConfig {
    GenConfig {
        latent: 12,
        classes: 4,
        init_size: 4,
        channels: 3,
        inner_eps: 0.8,
        conditioning,
        widths: [128, 128, 64],
    }
}

fn inputs(g: &CondGenerator, batch: usize, seed: u64) -> (Tensor, Tensor) {
    g.sample_inputs(batch, &mut SeededRng::new(seed).stream("z", 0), &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn variants_have_gdfq_shapes_and_parameters() {
    let d = Device::Cpu;
    let c = CondGenerator::new(GenConfig::cifar(10), 0, &d).unwrap();
    let (z, y) = inputs(&c, 4, 0);
    assert_eq!(c.forward(&z, &y).unwrap().dims(), [4, 3, 32, 32]);
    let vars = c.varmap().all_vars();
    let count: usize = vars.iter().map(|v| v.elem_count()).sum();
    // Emb 10x100; Linear 100 -> 128*8*8 (+bias); BN(128); conv 128->128 (+bias); BN(128);
    // conv 128->64 (+bias); BN(64); conv 64->3 (+bias); the output BN has no parameters.
    let expected =
        1000 + (100 * 8192 + 8192) + 256 + (128 * 128 * 9 + 128) + 256 + (128 * 64 * 9 + 64) + 128 + (64 * 27 + 3);
    assert_eq!(count, expected);
    let names: Vec<String> = c.varmap().data().lock().unwrap().keys().cloned().collect();
    assert!(names.iter().any(|n| n == "label_emb.weight") && !names.iter().any(|n| n.contains("embed_gamma")));

    let i = CondGenerator::new(GenConfig { init_size: 6, ..GenConfig::imagenet(5) }, 0, &d).unwrap();
    let (z, y) = inputs(&i, 3, 0);
    assert_eq!(i.forward(&z, &y).unwrap().dims(), [3, 3, 24, 24]);
    let data = i.varmap().data().lock().unwrap();
    assert_eq!(data["bn1.embed_gamma"].dims(), [5, 128]);
    assert!(!data.contains_key("label_emb.weight"));
    assert_eq!(GenConfig::imagenet(1000).image_size(), 224);
}

#[test]
fn output_is_batch_normalised_without_affine() {
    let g = CondGenerator::new(small(Conditioning::EmbedMul), 1, &Device::Cpu).unwrap();
    let (z, y) = inputs(&g, 16, 1);
    let x = g.forward(&z, &y).unwrap().to_dtype(DType::F64).unwrap();
    let mean = x.mean_keepdim(0).unwrap().mean_keepdim(2).unwrap().mean_keepdim(3).unwrap();
    let var = x.broadcast_sub(&mean).unwrap().sqr().unwrap().mean(0).unwrap().mean(1).unwrap().mean(1).unwrap();
    for m in mean.flatten_all().unwrap().to_vec1::<f64>().unwrap() {
        assert!(m.abs() < 1e-5, "channel mean {m}");
    }
    for v in var.to_vec1::<f64>().unwrap() {
        assert!((v - 1.0).abs() < 1e-2, "channel variance {v}");
    }
}

#[test]
fn labels_condition_the_images() {
    let d = Device::Cpu;
    for cond in [Conditioning::EmbedMul, Conditioning::CondBn] {
        let g = CondGenerator::new(small(cond), 2, &d).unwrap();
        let (z, _) = inputs(&g, 8, 2);
        let a = g.forward(&z, &Tensor::zeros(8, DType::U32, &d).unwrap()).unwrap();
        let b = g.forward(&z, &Tensor::ones(8, DType::U32, &d).unwrap()).unwrap();
        match cond {
            // z * Emb(y): another label is another input.
            Conditioning::EmbedMul => assert!(max_diff(&a, &b) > 1e-2),
            // Conditional BN starts at gamma = 1, beta = 0 for every class: labels matter only
            // once the tables are trained.
            Conditioning::CondBn => {
                assert_eq!(max_diff(&a, &b), 0.0);
                let data = g.varmap().data().lock().unwrap();
                let gamma = &data["bn1.embed_gamma"];
                let rows = Tensor::cat(
                    &[
                        gamma.as_tensor().narrow(0, 0, 1).unwrap(),
                        (gamma.as_tensor().narrow(0, 1, 3).unwrap() * 3.0).unwrap(),
                    ],
                    0,
                )
                .unwrap();
                gamma.set(&rows).unwrap();
                drop(data);
                let b = g.forward(&z, &Tensor::ones(8, DType::U32, &d).unwrap()).unwrap();
                assert!(max_diff(&a, &b) > 1e-2);
            }
        }
    }
}

#[test]
fn a_seed_repeats_and_bad_inputs_are_errors() {
    let d = Device::Cpu;
    let g1 = CondGenerator::new(small(Conditioning::EmbedMul), 9, &d).unwrap();
    let g2 = CondGenerator::new(small(Conditioning::EmbedMul), 9, &d).unwrap();
    let (z, y) = inputs(&g1, 4, 3);
    assert_eq!(max_diff(&g1.forward(&z, &y).unwrap(), &g2.forward(&z, &y).unwrap()), 0.0);
    let wrong = Tensor::zeros((4, 11), DType::F32, &d).unwrap();
    assert!(g1.forward(&wrong, &y).is_err());
    assert!(CondGenerator::new(GenConfig { latent: 0, ..small(Conditioning::CondBn) }, 0, &d).is_err());
    assert!(CondGenerator::new(GenConfig { inner_eps: 0.0, ..small(Conditioning::CondBn) }, 0, &d).is_err());
}

#[test]
fn training_lowers_the_gdfq_loss() {
    let d = Device::Cpu;
    let teacher = Network::<ResNetCifar>::new(ResNetCifarConfig::new(8, 4).unwrap().input(3, 16), 5, &d).unwrap();
    for cond in [Conditioning::EmbedMul, Conditioning::CondBn] {
        let g = CondGenerator::new(small(cond), 4, &d).unwrap();
        // The same held-out batch before and after training.
        let (z, y) = inputs(&g, 32, 100);
        let before = gdfq_loss(&teacher, &g.forward(&z, &y).unwrap(), &y, 0.1).unwrap();
        let mut t = GdfqTrainer::new(g, 1e-3, 0.1).unwrap();
        let mut rng = SeededRng::new(0).stream("train", 0);
        for _ in 0..40 {
            let (x, labels, l) = t.step(&teacher, 16, &mut rng).unwrap();
            assert_eq!((x.dims(), labels.dims()), (&[16usize, 3, 16, 16][..], &[16usize][..]));
            assert!(l.ce.is_finite() && l.bns.is_finite());
        }
        let after = gdfq_loss(&teacher, &t.generator.forward(&z, &y).unwrap(), &y, 0.1).unwrap();
        let total = |l: &compress_synth::generator::GdfqLoss| l.ce + 0.1 * l.bns;
        assert!(total(&after) < 0.8 * total(&before), "{cond:?}: {} -> {}", total(&before), total(&after));
    }
}
