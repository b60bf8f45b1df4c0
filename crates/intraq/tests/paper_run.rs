//! The paper pipeline end to end on a CIFAR-10-format test file and a ResNet-20 written in
//! pytorchcv's names: teacher top-1, synthesis, generator calibration, fine-tuning with
//! evaluations; a resumed run gives the same outcome; missing inputs are named.
#![allow(clippy::unwrap_used)]

use candle_core::{Device, Tensor};
use compress_nn::Network;
use compress_nn::pytorchcv::Family;
use compress_nn::zoo::{ResNetCifar, ResNetCifarConfig, Shortcut};
use compress_synth::SynthConfig;
use compress_train::RunContext;
use intraq::finetune::{CalibSource, FinetuneConfig};
use intraq::paper::{Dataset, PaperModel};
use intraq::paper_run::{PaperRun, run};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// `n` random CIFAR-10 records (label byte + 3072 pixel bytes) as `test_batch.bin`.
fn cifar10_test(dir: &std::path::Path, n: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut bytes = Vec::with_capacity(n * 3073);
    for i in 0..n {
        bytes.push((i % 10) as u8);
        bytes.extend((0..3072).map(|_| rng.random::<u8>()));
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("test_batch.bin"), bytes).unwrap();
}

/// A random ResNet-20 (B shortcuts) whose running statistics have seen some data, saved in
/// pytorchcv's names.
fn teacher_file(path: &std::path::Path) {
    let cfg = ResNetCifarConfig::new(20, 10).unwrap().with_shortcut(Shortcut::B);
    let net = Network::<ResNetCifar>::new(cfg, 3, &Device::Cpu).unwrap();
    for _ in 0..3 {
        net.forward_t(&Tensor::randn(0f32, 1.0, (16, 3, 32, 32), &Device::Cpu).unwrap(), true).unwrap();
    }
    let renamed: HashMap<String, Tensor> =
        net.tensors().unwrap().into_iter().map(|(k, t)| (Family::ResNetCifar.name(&k), t)).collect();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    candle_core::safetensors::save(&renamed, path).unwrap();
}

/// Rewrites the labels of `test_batch.bin` as the argmax of the teacher at `weights`.
fn relabel_with_teacher(data: &std::path::Path, weights: &std::path::Path) {
    let cfg = ResNetCifarConfig::new(20, 10).unwrap().with_shortcut(Shortcut::B);
    let net: Network<ResNetCifar> =
        compress_nn::pytorchcv::load(Family::ResNetCifar, weights, cfg, &Device::Cpu).unwrap();
    let file = data.join("test_batch.bin");
    let mut bytes = std::fs::read(&file).unwrap();
    let (mean, std) = ([0.4914f32, 0.4822, 0.4465], [0.2470f32, 0.2435, 0.2616]);
    let n = bytes.len() / 3073;
    let mut x = Vec::with_capacity(n * 3072);
    for i in 0..n {
        let rec = &bytes[i * 3073 + 1..(i + 1) * 3073];
        for (c, plane) in rec.chunks(1024).enumerate() {
            x.extend(plane.iter().map(|&p| (f32::from(p) / 255.0 - mean[c]) / std[c]));
        }
    }
    let x = Tensor::from_vec(x, (n, 3, 32, 32), &Device::Cpu).unwrap();
    let pred: Vec<u32> = net.forward_t(&x, false).unwrap().argmax(1).unwrap().to_vec1().unwrap();
    for (i, p) in pred.iter().enumerate() {
        bytes[i * 3073] = *p as u8;
    }
    std::fs::write(&file, bytes).unwrap();
}

fn tiny(data: &std::path::Path, weights: &std::path::Path) -> PaperRun {
    let mut r = PaperRun::official(Dataset::Cifar10, PaperModel::ResNet20, 1);
    assert_eq!(r.bits, vec![(3, 3), (4, 4)]);
    assert!(matches!(r.finetune.calib, CalibSource::Generator { batch: 16, .. }) && r.finetune.flip);
    r.data_dir = data.to_path_buf();
    r.weights = weights.to_path_buf();
    r.synth = SynthConfig { groups: 2, batches_per_group: 1, batch: 4, iters: 2, ..r.synth };
    let calib = match r.finetune.calib {
        CalibSource::Generator { config, lr, bns_weight, .. } => {
            CalibSource::Generator { config, batch: 4, lr, bns_weight }
        }
        c => c,
    };
    r.finetune = FinetuneConfig {
        steps: 2,
        batch: 4,
        milestones: vec![1],
        calib_batches: 2,
        calib,
        eval_every: 1,
        ..r.finetune
    };
    r
}

#[test]
fn paper_pipeline_runs_end_to_end_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (data, weights) = (dir.path().join("cifar-10-batches-bin"), dir.path().join("w/resnet20_cifar10.safetensors"));
    let r = tiny(&data, &weights);
    assert_eq!(r.missing().len(), 2);
    let ctx = |root: &std::path::Path, resume: bool| {
        RunContext::new(root, Device::Cpu).quiet(true).resume(resume).bound("intraq", "paper")
    };
    assert!(run(&r, &ctx(dir.path(), false)).unwrap_err().to_string().contains("resnet20_cifar10"));
    cifar10_test(&data, 20);
    teacher_file(&weights);
    assert!(r.missing().is_empty());
    // Relabel the images with the teacher's own predictions (weights loaded from pytorchcv's
    // names, CIFAR-10's normalisation, written here independently): the pipeline must then
    // measure 100 % full-precision top-1; a wrong normalisation, weight mapping or label join
    // lands near chance instead.
    relabel_with_teacher(&data, &weights);

    let root = dir.path().join("runs");
    let a = run(&r, &ctx(&root, false)).unwrap();
    assert_eq!(a.fp_top1, 100.0, "the teacher's top-1 on its own predictions");
    assert_eq!(a.quant.iter().map(|q| q.bits).collect::<Vec<_>>(), vec![(3, 3), (4, 4)]);
    for q in &a.quant {
        assert_eq!(q.evals.len(), 2);
        assert!(q.evals.iter().chain([&q.calibrated]).all(|v| (0.0..=100.0).contains(v)));
    }
    assert!(a.bns.is_finite());
    assert!(root.join("intraq/paper/synth/resnet20_cifar10-seed1/g1-b0.safetensors").is_file());

    // Resumed: the cached synthesis and the finished fine-tuning give the same numbers.
    let b = run(&r, &ctx(&root, true)).unwrap();
    assert_eq!(a.fp_top1, b.fp_top1);
    for (x, y) in a.quant.iter().zip(&b.quant) {
        assert_eq!((x.calibrated, &x.evals), (y.calibrated, &y.evals));
    }

    // Another teacher file is refused by the synthesis cache.
    let cfg = ResNetCifarConfig::new(20, 10).unwrap().with_shortcut(Shortcut::B);
    Network::<ResNetCifar>::new(cfg, 4, &Device::Cpu).unwrap().save(&weights).unwrap();
    let e = run(&r, &ctx(&root, true)).unwrap_err().to_string();
    assert!(e.contains("synthesis cache"), "{e}");
}

#[test]
fn the_table_has_five_runs_with_official_inputs() {
    let runs = PaperRun::table(1);
    assert_eq!(runs.len(), 5);
    assert!(runs.iter().all(|r| !r.bits.is_empty() && r.weights.starts_with("weights/intraq")));
    let imagenet = runs.iter().find(|r| r.model == PaperModel::MobileNetV2).unwrap();
    assert_eq!(imagenet.bits, vec![(4, 4), (5, 5)]);
    assert!(imagenet.data_dir.ends_with("imagenet/val"));
    assert_eq!(imagenet.finetune.batch, 16);
}
