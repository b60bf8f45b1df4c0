//! The training engine on real data at smoke size: resuming equals an uninterrupted run, a
//! non-finite loss stops with the last good checkpoint kept, gradient accumulation equals a
//! larger batch, reports and plots are written.

mod common;
use candle_core::Device;
use common::data;
use compress_data::batch::{Augment, PixelTransform};
use compress_nn::Network;
use compress_nn::zoo::{ResNetCifar, ResNetCifarConfig, Vit, VitConfig};
use compress_train::optim::OptimizerKind;
use compress_train::schedule::Schedule;
use compress_train::{NoHooks, Run, TrainConfig, TrainError, checkpoint, classify};

fn cfg() -> TrainConfig {
    TrainConfig {
        epochs: 2,
        batch_size: 16,
        accumulate: 1,
        optimizer: OptimizerKind::sgd(0.9, true),
        weight_decay: 5e-4,
        no_decay_on_norm_and_bias: true,
        schedule: Schedule::cosine(0.05, 16, 0.0).with_warmup(2, 0.1),
        label_smoothing: 0.1,
        seed: 3,
        checkpoint_every: 3,
        log_every: 1,
        stop_after_steps: None,
    }
}

fn model() -> ResNetCifarConfig {
    ResNetCifarConfig::new(8, 10).expect("cfg").input(1, 28)
}

fn weights(net: &Network<ResNetCifar>) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = net
        .tensors()
        .expect("t")
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().expect("f").to_vec1::<f32>().expect("v")))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn a_resumed_run_ends_exactly_as_an_uninterrupted_one() {
    let (train, test) = (data(128, true), data(64, false));
    let root = tempfile::tempdir().expect("tempdir");

    let mut whole = Run::create(root.path(), "whole", &cfg(), 3, "cpu").expect("run");
    whole.quiet = true;
    let a = Network::<ResNetCifar>::new(model(), 3, &Device::Cpu).expect("net");
    let ha = classify::fit(&a, &train, &test, &cfg(), &mut whole, false, &mut NoHooks).expect("fit");

    // Stop mid-way through epoch 2 (8 steps per epoch; stop at step 11), then resume in a fresh
    // process-like setting: a new network with other initial weights, the same run folder.
    let mut stopping = cfg();
    stopping.stop_after_steps = Some(11);
    let mut part = Run::create(root.path(), "parts", &stopping, 3, "cpu").expect("run");
    part.quiet = true;
    let b = Network::<ResNetCifar>::new(model(), 3, &Device::Cpu).expect("net");
    let e = classify::fit(&b, &train, &test, &stopping, &mut part, false, &mut NoHooks).expect_err("stops");
    assert!(matches!(e, TrainError::Stopped(11)), "{e}");
    drop(part); // the interrupted process ends, releasing the run
    let mut again = Run::newest(root.path(), "parts").expect("find").expect("exists");
    again.quiet = true;
    let c = Network::<ResNetCifar>::new(model(), 99, &Device::Cpu).expect("net");
    let hc = classify::fit(&c, &train, &test, &cfg(), &mut again, true, &mut NoHooks).expect("resume");

    assert_eq!(weights(&a), weights(&c), "final weights (BatchNorm statistics included) differ");
    let strip = |h: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        h.into_iter()
            .map(|mut v| {
                v.as_object_mut().map(|o| o.remove("seconds"));
                v
            })
            .collect()
    };
    assert_eq!(strip(ha), strip(hc), "histories (wall time aside) differ");
    assert!(again.dir().join("log.jsonl").is_file());
}

#[test]
fn a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let (train, test) = (data(96, true), data(32, false));
    let root = tempfile::tempdir().expect("tempdir");
    let mut c = cfg();
    c.schedule = Schedule::constant(1e12);
    c.checkpoint_every = 1;
    c.no_decay_on_norm_and_bias = false;
    let mut run = Run::create(root.path(), "nan", &c, 3, "cpu").expect("run");
    run.quiet = true;
    let net = Network::<ResNetCifar>::new(model(), 3, &Device::Cpu).expect("net");
    let e = classify::fit(&net, &train, &test, &c, &mut run, false, &mut NoHooks).expect_err("diverges");
    let TrainError::NonFinite { step, checkpoint: Some(dir), .. } = &e else { panic!("{e}") };
    assert!(*step >= 1, "{e}");
    assert!(e.to_string().contains(&format!("at step {step}")), "{e}");
    assert!(e.to_string().contains(&format!("kept at {}", dir.display())), "{e}");
    // The kept checkpoint is complete and loadable, no later than the stop, and every weight in
    // it is finite (a checkpoint of diverged weights is refused, not kept as "good").
    let ck = checkpoint::load(dir, &Device::Cpu).expect("load");
    assert!(ck.state.step <= *step);
    assert!(!ck.model.is_empty());
    for (name, t) in &ck.model {
        let sum = t.to_dtype(candle_core::DType::F64).expect("f64").sum_all().expect("sum");
        assert!(sum.to_scalar::<f64>().expect("s").is_finite(), "{name} is not finite in the kept checkpoint");
    }
}

#[test]
fn gradient_accumulation_equals_a_larger_batch() {
    // No BatchNorm (a ViT), plain SGD, one step: 2 x 8 accumulated == 1 x 16.
    let (train, test) = (data(16, true), data(16, false));
    let train =
        train.with_transform(PixelTransform { augment: Augment::None, mean: vec![0.13], std: vec![0.31] }).expect("t");
    let vit = VitConfig::new(28, 7, 16, 1, 2, 32, 10).expect("cfg").channels(1);
    let run_with = |batch: usize, accumulate: usize| {
        let root = tempfile::tempdir().expect("tempdir");
        let mut c = cfg();
        c.epochs = 1;
        c.batch_size = batch;
        c.accumulate = accumulate;
        c.optimizer = OptimizerKind::sgd(0.0, false);
        c.schedule = Schedule::constant(0.5);
        c.label_smoothing = 0.0;
        c.weight_decay = 0.0;
        let mut run = Run::create(root.path(), "acc", &c, 3, "cpu").expect("run");
        run.quiet = true;
        let net = Network::<Vit>::new(vit.clone(), 1, &Device::Cpu).expect("net");
        classify::fit(&net, &train, &test, &c, &mut run, false, &mut NoHooks).expect("fit");
        net.tensors().expect("t")
    };
    let (a, b) = (run_with(16, 1), run_with(8, 2));
    let mut worst = 0f32;
    for (k, t) in &a {
        let d = (t - &b[k]).expect("d").abs().expect("a").max_all().expect("m").to_scalar::<f32>().expect("s");
        worst = worst.max(d);
    }
    assert!(worst < 1e-5, "accumulated update differs by {worst}");
    let init = Network::<Vit>::new(vit, 1, &Device::Cpu).expect("net").tensors().expect("t");
    let moved = (&a["head.weight"] - &init["head.weight"]).expect("d").abs().expect("a").max_all().expect("m");
    assert!(moved.to_scalar::<f32>().expect("s") > 0.0, "no update happened");
}

#[test]
fn reports_and_plots_are_written() {
    let root = tempfile::tempdir().expect("tempdir");
    let run = Run::create(root.path(), "m/mini", &cfg(), 1, "cpu").expect("run");
    let rule = compress_train::Rule::AtLeast(1.0);
    let row = compress_train::ReportRow::claim("top-1 (%)", Some(90.0), Some(91.5), "c", rule);
    let r = compress_train::Report::new("t", "cargo xtask reproduce m", "mini", &[1])
        .rows(vec![row.against_paper(Some(92.0), None)]);
    run.write_report(&r).expect("report");
    let md = std::fs::read_to_string(run.dir().join("report.md")).expect("md");
    assert!(md.contains("| top-1 (%) | 90.00 | 91.50 | 92.00 | +1.50 | c | Holds |"), "{md}");
    let p = run.plot("loss.svg", "loss", "epoch", &[("train", vec![(1.0, 2.0), (2.0, 1.0)])]).expect("plot");
    let svg = std::fs::read_to_string(p).expect("svg");
    assert!(svg.contains("<svg") && svg.contains("polyline"), "not a line plot");
    assert!(run.dir().join("config.toml").is_file() && run.dir().join("meta.json").is_file());
    let found = compress_train::record::newest_reports(root.path());
    assert_eq!(found.found.len(), 1);
    assert!(found.skipped.is_empty());
}
