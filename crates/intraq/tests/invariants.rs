//! Section 8's invariants that live in this crate (the quantizer, range, synthesis-loss and crop
//! invariants are tested where those live: compress_core::quant::{asym, range},
//! compress_synth::{losses, crop}), the quantized network, and the smoke reproduction.
#![allow(clippy::unwrap_used)]

use candle_core::{D, Device, Tensor};
use compress_core::quant::RangeRule;
use compress_nn::Model;
use compress_nn::fake_quant::Quantized;
use compress_synth::Teacher;
use compress_train::{RunContext, harness};
use intraq::finetune::{CalibSource, FinetuneConfig};
use intraq::reproduce::IntraqReproduction;
use intraq::{DigitCnn, lr_at_epoch};

#[test]
fn distillation_of_the_spec_example() {
    let dev = Device::Cpu;
    let s = Tensor::new(&[[1f64, 0.0, -1.0]], &dev).unwrap();
    let t = Tensor::new(&[[2f64, 0.0, -2.0]], &dev).unwrap();
    let y = Tensor::new(&[0u32], &dev).unwrap();
    let kd = compress_train::loss::distillation(&s, &t, 20.0).unwrap().to_scalar::<f64>().unwrap();
    assert!((kd / 400.0 - 8.3039e-4).abs() < 1e-8, "KL {}", kd / 400.0);
    assert!((20.0 * kd - 6.64312).abs() < 1e-4, "{}", 20.0 * kd);
    let ce = compress_train::loss::cross_entropy(&s, &y, 0.0).unwrap().to_scalar::<f64>().unwrap();
    assert!((ce - 0.407606).abs() < 1e-6);
    assert!((ce + 20.0 * kd - 7.05073).abs() < 1e-4);
}

#[test]
fn multi_step_learning_rate_of_the_cifar_script() {
    let got: Vec<f64> = [19, 20, 40, 60].iter().map(|&e| lr_at_epoch(1e-4, &[20, 40, 60], e)).collect();
    for (a, b) in got.iter().zip([1e-4, 1e-5, 1e-6, 1e-7]) {
        assert!((a / b - 1.0).abs() < 1e-9, "{got:?}");
    }
}

#[test]
fn quantized_student_ranges_and_straight_through_gradients() {
    let dev = Device::Cpu;
    let teacher = DigitCnn::new(1, &dev).unwrap();
    let x = Tensor::randn(0f32, 1.0, (8, 1, 28, 28), &dev).unwrap();
    // A copy computes the teacher exactly.
    let fp = DigitCnn::from_tensors(&teacher.tensors().unwrap(), &dev).unwrap();
    let d = (fp.forward_t(&x, false).unwrap() - teacher.forward_t(&x, false).unwrap()).unwrap();
    assert_eq!(d.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    for bits in [2u32, 3] {
        let q = Quantized::new(
            DigitCnn::from_tensors(&teacher.tensors().unwrap(), &dev).unwrap(),
            bits,
            bits,
            RangeRule::BiasCorrected,
        )
        .unwrap();
        q.forward_t(&x, false).unwrap();
        q.quant.set_running(false).unwrap();
        let r = q.quant.snapshot().unwrap();
        assert_eq!(r.len(), 4, "one activation site per ReLU");
        assert!(r.iter().all(|s| s.updates() == 1 && !s.running && s.range().1 > 0.0));
        let logits = q.forward_t(&x, false).unwrap();
        assert_eq!(q.quant.snapshot().unwrap(), r, "frozen ranges do not move");
        assert!(
            (&logits - teacher.forward_t(&x, false).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
        // Gradients pass the quantizers straight through to every weight.
        let g = logits.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in q.varmap().data().lock().unwrap().iter() {
            if name.ends_with("weight") {
                assert!(g.get(v.as_tensor()).is_some(), "{name} gets no gradient");
            }
        }
    }
    assert!(Quantized::new(DigitCnn::new(0, &dev).unwrap(), 0, 4, RangeRule::Legacy).is_err());
}

#[test]
fn the_teacher_probe_sees_four_batchnorms_and_the_features() {
    let dev = Device::Cpu;
    let t = DigitCnn::new(2, &dev).unwrap();
    let out = t.forward_probe(&Tensor::randn(0f32, 1.0, (3, 1, 28, 28), &dev).unwrap()).unwrap();
    assert_eq!(out.bn.len(), 4);
    assert_eq!(out.features.dims(), &[3, 32]);
    let (f, _) =
        t.features_and_logits(&Tensor::zeros((3, 1, 28, 28), candle_core::DType::F32, &dev).unwrap(), false).unwrap();
    assert_eq!(f.dims(), &[3, 32]);
    let p = candle_nn::ops::softmax(&out.logits, D::Minus1).unwrap().sum(D::Minus1).unwrap();
    assert!(p.to_vec1::<f32>().unwrap().iter().all(|v| (v - 1.0).abs() < 1e-5));
}

#[test]
fn smoke_reproduction_runs_and_resumes_to_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = RunContext::new(dir.path(), Device::Cpu).quiet(true);
    let a = harness::reproduce(&IntraqReproduction, "smoke", &ctx).unwrap();
    let b = harness::reproduce(&IntraqReproduction, "smoke", &ctx.clone().resume(true)).unwrap();
    let b_dir = b.dir().to_path_buf();
    let (a, b) = (a.report(), b.report());
    assert_eq!(a.rows.len(), b.rows.len());
    // Claim (1)'s direction even at smoke size: IntraQ's synthetic digits are more diverse
    // (larger intra-class cosine distance of the teacher's features) than the baseline's, and
    // both are real measurements in (0, 2). Swapped arms or IntraQ's terms switched off fail.
    let diversity = &a.rows[0];
    assert!(diversity.setting.starts_with("intra-class cosine distance"), "{}", diversity.setting);
    let (da, db) = (diversity.baseline.unwrap(), diversity.method.unwrap());
    assert!(da > 0.0 && db < 2.0, "{da} {db}");
    assert!(db > 1.2 * da, "IntraQ's images are not more diverse: A {da}, B {db}");
    for (x, y) in a.rows.iter().zip(&b.rows) {
        assert_eq!((x.baseline, x.method), (y.baseline, y.method), "{}", x.setting);
    }
    // Every (arm, bit-width) fine-tunes at the first rate with the best validation score.
    let choice: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b_dir.join("choice.json")).unwrap()).unwrap();
    let table = choice["table"].as_array().unwrap();
    let lrs = choice["lrs"].as_array().unwrap();
    assert_eq!((table.len(), lrs.len()), (2, 2), "{choice}");
    for (col, pick) in lrs.iter().enumerate() {
        let score = |r: &serde_json::Value| r[1][col].as_f64().unwrap();
        let best = table.iter().map(score).fold(f64::NEG_INFINITY, f64::max);
        let first = table.iter().find(|r| score(r) == best).unwrap();
        assert_eq!(pick[2].as_f64(), first[0].as_f64(), "column {col}: {choice}");
        assert_eq!(pick[0].as_str(), Some(["Baseline", "IntraQ"][col]));
    }
    assert!(a.notes.contains("rates chosen on the last 64 training digits"), "{}", a.notes);
    // The second run reused the recorded rate choice (same settings) instead of choosing again.
    assert!(!a.notes.contains("reused") && b.notes.contains("reused"), "{}", b.notes);
    // Nothing of the paper profile can run here: every row is reported as missing, with the inputs.
    let p = harness::reproduce(&IntraqReproduction, "paper", &ctx).unwrap();
    assert!(!p.missing().is_empty());
    assert!(p.report().rows.iter().all(|r| r.verdict == compress_train::Verdict::Missing));
}

#[test]
fn paper_configurations_build_and_run_one_synthesis_and_one_fine_tuning_step() {
    use intraq::paper::{Dataset, PAPER_ROWS, PaperModel};
    let dev = Device::Cpu;
    assert_eq!(PAPER_ROWS.len(), 10);
    assert_eq!(Dataset::Cifar100.terms().eps_soft, 0.6);
    assert_eq!(Dataset::ImageNet.terms().lambda, (0.0, 2.0));
    let ft = Dataset::ImageNet.finetune();
    assert_eq!((ft.batch, ft.lr, ft.calib_batches), (16, 1e-6, 800));
    for (dataset, model) in [
        (Dataset::Cifar10, PaperModel::ResNet20),
        (Dataset::Cifar100, PaperModel::ResNet20),
        (Dataset::ImageNet, PaperModel::ResNet18),
        (Dataset::ImageNet, PaperModel::MobileNetV1),
        (Dataset::ImageNet, PaperModel::MobileNetV2),
    ] {
        let teacher = model.build(dataset.classes(), 0, &dev).unwrap();
        let t = teacher.model();
        // One synthesis iteration on two images at the dataset's size.
        let cfg =
            compress_synth::SynthConfig { groups: 1, batches_per_group: 1, batch: 2, iters: 1, ..dataset.synth() };
        let mut method = dataset.terms().method(cfg.classes).unwrap();
        let set = compress_synth::synthesize(&teacher, &cfg, &mut method, 0, None, &dev).unwrap();
        assert_eq!(set.images.dims(), &[2, 3, cfg.image_size, cfg.image_size], "{model:?}");
        assert!(set.stats[0].bns.is_finite());
        // One fine-tuning step of the 4-bit student (a copy of the teacher's variables).
        let student =
            Quantized::new(model.build(dataset.classes(), 0, &dev).unwrap(), 4, 4, RangeRule::Legacy).unwrap();
        let x = intraq::paper::random_images(dataset, 2, &dev).unwrap();
        let y = Tensor::new(&[1u32, 0], &dev).unwrap();
        student.inner.model().forward_t(&x, false).unwrap();
        let s = compress_nn::fake_quant::with(&student.quant, || student.inner.model().forward_t(&x, false)).unwrap();
        let tl = t.forward_t(&x, false).unwrap().detach();
        let loss = (compress_train::loss::cross_entropy(&s, &y, 0.0).unwrap()
            + (compress_train::loss::distillation(&s, &tl, 20.0).unwrap() * 20.0).unwrap())
        .unwrap();
        let vm = student.inner.model().varmap();
        let groups = compress_train::optim::all_params(vm, 1e-4).unwrap();
        let mut opt =
            compress_train::optim::Optimizer::new(compress_train::optim::OptimizerKind::sgd(0.9, true), groups)
                .unwrap();
        opt.step(&loss.backward().unwrap(), 1e-3).unwrap();
        let sites = student.quant.snapshot().unwrap().len();
        assert!(sites > 4, "{model:?}: {sites} activation sites");
        // One step of the official generator calibration at the dataset's size (once per dataset).
        if model != PaperModel::ResNet18 && model != PaperModel::MobileNetV1 {
            let calib = match dataset.finetune().calib {
                CalibSource::Generator { config, lr, bns_weight, .. } => {
                    assert_eq!(config.image_size(), cfg.image_size);
                    CalibSource::Generator { config, batch: 2, lr, bns_weight }
                }
                c => panic!("{dataset:?} calibrates with {c:?}"),
            };
            let ft = FinetuneConfig { calib_batches: 1, calib, ..dataset.finetune() };
            let before: Vec<u64> = student.quant.snapshot().unwrap().iter().map(|r| r.updates()).collect();
            intraq::calibrate(&student, t, &set, &ft, 0).unwrap();
            let ranges = student.quant.snapshot().unwrap();
            assert!(
                ranges
                    .iter()
                    .zip(&before)
                    .all(|(r, b)| r.updates() == b + 1 && !r.running && r.range().1 > r.range().0),
                "{model:?}: ranges did not move: {:?}",
                ranges.iter().map(|r| (r.updates(), r.range())).collect::<Vec<_>>()
            );
        }
    }
}
