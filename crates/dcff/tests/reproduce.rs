//! The reproduction on its smoke scale, and resuming an interrupted DCFF run.
#![allow(clippy::unwrap_used)] // helpers of tests, not library code

use candle_core::Device;
use compress_data::batch::{Augment, ImageDataset};
use compress_data::{embedded, mnist};
use compress_nn::zoo::{Vgg, VggConfig};
use compress_train::{Run, RunContext, TrainError, Verdict, harness};
use dcff::reproduce::{DcffReproduction, MiniSettings, train_dcff};
use dcff::{DcffError, KlMode};

#[test]
fn smoke_reproduction_writes_a_report_whose_structural_claims_hold() {
    let root = tempfile::tempdir().unwrap();
    let ctx = RunContext::new(root.path(), Device::Cpu).quiet(true);
    let out = harness::reproduce(&DcffReproduction, "smoke", &ctx).unwrap();
    let (dir, report) = (out.dir(), out.report());
    assert!(out.missing().is_empty());
    assert!(dir.join("report.md").is_file() && dir.join("accuracy_vs_flops.svg").is_file());
    assert_eq!((report.profile.as_str(), report.seeds.as_slice()), ("smoke", &[0u64][..]));
    assert!(report.title.starts_with("DCFF smoke:"), "a smoke report titled {:?}", report.title);
    assert_eq!(report.rows.len(), 9);
    // Every arm's learning rate is the grid's best on the held-out training digits.
    let arms: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("arms.json")).unwrap()).unwrap();
    let table = arms["validation"].as_array().unwrap();
    assert_eq!(table.len(), 2, "the smoke grid has two rates");
    for (k, arm) in ["dcff", "scratch", "magnitude", "dense"].iter().enumerate() {
        let best = table
            .iter()
            .map(|row| (row[0].as_f64().unwrap(), row[1][k].as_f64().unwrap()))
            .fold((f64::NAN, f64::NEG_INFINITY), |b, (lr, v)| if v > b.1 { (lr, v) } else { b });
        assert_eq!(arms["lrs"][arm].as_f64().unwrap(), best.0, "{arm}: {table:?}");
    }
    assert!(report.notes.contains("Chosen: (a) DCFF"), "{}", report.notes);
    // Claims (3) and (4) do not depend on the training budget: the official KL rule freezes the
    // selection from epoch 1, and extraction is exact.
    assert_eq!(report.rows[2].verdict, Verdict::Holds, "{:?}", report.rows[2]);
    assert_eq!(report.rows[3].verdict, Verdict::Holds, "{:?}", report.rows[3]);
    for r in &report.rows[..2] {
        let acc = r.method.unwrap();
        assert!(acc > 50.0 && acc <= 100.0, "DCFF learns even at smoke scale: {acc}");
    }
}

fn data(train: bool, n: usize) -> ImageDataset {
    let split = if train { mnist::Split::Train } else { mnist::Split::Test };
    embedded::mnist_5k_normalised(split, Augment::None, Some(n)).unwrap()
}

#[test]
fn an_interrupted_dcff_run_resumes_to_the_same_result() {
    let s = MiniSettings::smoke().unwrap();
    let (train, test) = (data(true, 256), data(false, 128));
    let model = VggConfig::new(&[16, 0, 32, 0], 10).unwrap().input(1, 28).unwrap().single_linear();
    let mut cfg = compress_train::TrainConfig { batch_size: 32, ..s_config(&s) };
    cfg.epochs = 3;
    let root = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;

    let mut whole = Run::create(root.path(), "whole", &cfg, 0, "cpu").unwrap();
    whole.quiet = true;
    let (a, ea, ca) =
        train_dcff::<Vgg, _, _>(&model, &s.rates, KlMode::Stable, &cfg, &train, &test, &mut whole, false, &dev)
            .unwrap();

    // Stop in the middle of epoch 1 (8 steps per epoch), then resume from the checkpoint.
    let mut stopping = cfg.clone();
    stopping.stop_after_steps = Some(12);
    let mut part = Run::create(root.path(), "part", &stopping, 0, "cpu").unwrap();
    part.quiet = true;
    let e = train_dcff::<Vgg, _, _>(&model, &s.rates, KlMode::Stable, &stopping, &train, &test, &mut part, false, &dev)
        .unwrap_err();
    assert!(matches!(e, DcffError::Train(TrainError::Stopped(12))), "{e}");
    drop(part); // the interrupted process ends, releasing the run
    let mut again = Run::newest(root.path(), "part").unwrap().unwrap();
    again.quiet = true;
    let (b, eb, cb) =
        train_dcff::<Vgg, _, _>(&model, &s.rates, KlMode::Stable, &cfg, &train, &test, &mut again, true, &dev).unwrap();
    assert_eq!(a.curve, b.curve);
    assert_eq!(ea.refreshes, eb.refreshes);
    let epochs: Vec<usize> = eb.refreshes.iter().map(|r| r.epoch).collect();
    assert_eq!(epochs, vec![0, 1, 2], "the refresh record spans the interruption");
    let (ta, tb) = (ca.tensors().unwrap(), cb.tensors().unwrap());
    for (k, t) in &ta {
        let d = (t - &tb[k]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(d, 0.0, "{k} differs after resuming");
    }
}

fn s_config(s: &MiniSettings) -> compress_train::TrainConfig {
    compress_train::TrainConfig {
        epochs: s.epochs,
        batch_size: s.batch,
        accumulate: 1,
        optimizer: compress_train::optim::OptimizerKind::sgd(0.9, false),
        weight_decay: s.weight_decay,
        no_decay_on_norm_and_bias: false,
        schedule: compress_train::schedule::Schedule::constant(s.lr),
        label_smoothing: 0.0,
        seed: 0,
        checkpoint_every: 4,
        log_every: 4,
        stop_after_steps: None,
    }
}
