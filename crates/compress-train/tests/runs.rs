//! Runs that cannot report what they did not compute: resume checks the configuration, caches
//! match it, folders are exclusive and locked, a corrupt checkpoint falls back, a failed run
//! leaves no folder, and one unreadable report does not hide the others.

use candle_core::{Device, Tensor};
use compress_train::checkpoint::{self, LoopState};
use compress_train::harness::RunContext;
use compress_train::optim::OptimizerKind;
use compress_train::record::{self, Run};
use compress_train::schedule::Schedule;
use compress_train::{Report, TrainConfig, TrainError};
use std::collections::HashMap;

fn cfg(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 16,
        accumulate: 1,
        optimizer: OptimizerKind::sgd(0.9, true),
        weight_decay: 5e-4,
        no_decay_on_norm_and_bias: true,
        schedule: Schedule::constant(0.1),
        label_smoothing: 0.0,
        seed: 3,
        checkpoint_every: 0,
        log_every: 0,
        stop_after_steps: None,
    }
}

#[test]
fn resume_refuses_another_configuration_naming_the_fields() {
    let root = tempfile::tempdir().expect("tempdir");
    let first = Run::create(root.path(), "train/x", &cfg(2), 3, "cpu").expect("run");
    let dir = first.dir().to_path_buf();
    std::fs::write(dir.join("model.safetensors"), b"x").expect("mark");
    drop(first);
    let mut other = cfg(3);
    other.batch_size = 32;
    let e = Run::resume_or_create(root.path(), "train/x", &other, 3, "cpu", true).expect_err("refuses");
    let msg = e.to_string();
    assert!(msg.contains("epochs: 2 -> 3") && msg.contains("batch_size: 16 -> 32"), "{msg}");
    assert!(matches!(e, TrainError::Config(_)));
    // The same configuration resumes the same folder; `stop_after_steps` is not part of it.
    let mut stopping = cfg(2);
    stopping.stop_after_steps = Some(5);
    let (again, reopened) = Run::resume_or_create(root.path(), "train/x", &stopping, 3, "cpu", true).expect("resume");
    assert!(reopened);
    assert_eq!(again.dir(), dir);
    drop(again);
    // Through the harness: an arm resumed under another recipe is refused too.
    let ctx = RunContext::new(root.path(), Device::Cpu).resume(true).quiet(true).bound("m", "mini");
    let (mut arm, _) = ctx.arm("a", &cfg(2)).expect("new arm");
    arm.log(&serde_json::json!({"step": 1})).expect("log");
    drop(arm);
    let e = ctx.arm("a", &cfg(4)).expect_err("refuses");
    assert!(e.to_string().contains("epochs: 2 -> 4"), "{e}");
}

#[test]
fn a_cache_lookup_matches_the_configuration_not_the_date() {
    let root = tempfile::tempdir().expect("tempdir");
    let full = Run::create(root.path(), "train/b", &cfg(10), 0, "cpu").expect("run");
    std::fs::write(full.dir().join("model.safetensors"), b"full").expect("w");
    let full_dir = full.dir().to_path_buf();
    drop(full);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let smoke = Run::create(root.path(), "train/b", &cfg(1), 0, "cpu").expect("run");
    std::fs::write(smoke.dir().join("model.safetensors"), b"smoke").expect("w");
    let smoke_dir = smoke.dir().to_path_buf();
    drop(smoke);
    let hit = |c: &TrainConfig| Run::cached(root.path(), "train/b", c, "model.safetensors").expect("lookup");
    assert_eq!(hit(&cfg(10)), Some(full_dir.join("model.safetensors")), "the newer smoke run was taken");
    assert_eq!(hit(&cfg(1)), Some(smoke_dir.join("model.safetensors")));
    assert_eq!(hit(&cfg(5)), None);
    // Equal configurations have equal keys whatever the field order of their text.
    assert_eq!(record::config_key(&cfg(10)).expect("k"), record::config_key(&cfg(10)).expect("k"));
    assert_ne!(record::config_key(&cfg(10)).expect("k"), record::config_key(&cfg(1)).expect("k"));
}

#[test]
fn runs_started_together_get_their_own_folders_and_a_held_run_refuses_a_second_writer() {
    let root = tempfile::tempdir().expect("tempdir");
    let start = || {
        let mut run = Run::create(root.path(), "same", &cfg(1), 0, "cpu").expect("run");
        run.log(&serde_json::json!({"step": 1})).expect("log");
        run
    };
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(start)).collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let mut dirs: Vec<_> = runs.iter().map(|r| r.dir().to_path_buf()).collect();
    dirs.sort();
    dirs.dedup();
    assert_eq!(dirs.len(), 8, "two runs shared a folder");
    for d in &dirs {
        assert!(d.join("config.toml").is_file() && d.join("meta.json").is_file(), "{}", d.display());
    }
    // The newest is held by this process: a resume while it runs is refused, naming the pid.
    let e = Run::newest(root.path(), "same").expect_err("held");
    assert!(e.to_string().contains(&format!("process {}", std::process::id())), "{e}");
    drop(runs);
    // A lock left by a process that is gone (a killed run) is taken over.
    let newest = dirs.last().expect("one");
    std::fs::write(newest.join("run.lock"), "4194305").expect("stale lock");
    let run = Run::newest(root.path(), "same").expect("stale lock taken over").expect("exists");
    assert_eq!(run.dir(), newest);
}

fn state(step: u64) -> LoopState {
    LoopState { epoch: 0, next_batch: 0, step, seed: 0, loss_sum: 0.0, loss_count: 0, history: Vec::new() }
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_the_older_one() {
    let root = tempfile::tempdir().expect("tempdir");
    let model = |v: f32| HashMap::from([("w".to_string(), Tensor::new(&[v, v], &Device::Cpu).expect("t"))]);
    checkpoint::save(root.path(), &model(1.0), &HashMap::new(), &state(1)).expect("save");
    let newest = checkpoint::save(root.path(), &model(2.0), &HashMap::new(), &state(2)).expect("save");
    let file = newest.join("model.safetensors");
    let bytes = std::fs::read(&file).expect("read");
    std::fs::write(&file, &bytes[..bytes.len() / 2]).expect("truncate");
    let ck = checkpoint::latest(root.path(), &Device::Cpu).expect("falls back").expect("one");
    assert_eq!(ck.state.step, 1);
    assert_eq!(ck.model["w"].to_vec1::<f32>().expect("v"), vec![1.0, 1.0]);
    // With no readable checkpoint left, the newest one's error names its file.
    let older = root.path().join("step-00000001").join("state.json");
    std::fs::write(&older, "{").expect("corrupt");
    let e = checkpoint::latest(root.path(), &Device::Cpu).expect_err("none readable");
    assert!(e.to_string().contains("step-00000002"), "{e}");
}

#[test]
fn a_run_that_recorded_nothing_leaves_no_folder() {
    let root = tempfile::tempdir().expect("tempdir");
    let run = Run::create(root.path(), "empty", &cfg(1), 0, "cpu").expect("run");
    let dir = run.dir().to_path_buf();
    drop(run);
    assert!(!dir.exists(), "an empty run folder was left behind");
    let mut run = Run::create(root.path(), "logged", &cfg(1), 0, "cpu").expect("run");
    run.log(&serde_json::json!({"epoch": 0})).expect("log");
    let dir = run.dir().to_path_buf();
    drop(run);
    assert!(dir.join("log.jsonl").is_file() && !dir.join("run.lock").exists());
    // `--epochs 0`: the baseline refuses before it creates anything.
    let e = compress_train::baselines::train(
        "resnet20-mnist",
        compress_train::baselines::Profile::Smoke,
        Some(0),
        root.path(),
        false,
        true,
    )
    .expect_err("epochs 0");
    assert!(e.to_string().contains("at least 1"), "{e}");
    assert!(!root.path().join("train").exists(), "a failed command left a folder");
}

#[test]
fn one_unreadable_report_is_skipped_and_named() {
    let root = tempfile::tempdir().expect("tempdir");
    let good = Run::create(root.path(), "a/mini", &cfg(1), 0, "cpu").expect("run");
    good.write_report(&Report::new("t", "c", "mini", &[0])).expect("report");
    let bad = Run::create(root.path(), "b/mini", &cfg(1), 0, "cpu").expect("run");
    std::fs::write(bad.dir().join("report.json"), "{\"title\": ").expect("corrupt");
    let found = record::newest_reports(root.path());
    assert_eq!(found.found.len(), 1);
    assert_eq!(found.skipped.len(), 1);
    assert!(found.skipped[0].0.starts_with(bad.dir()), "{:?}", found.skipped[0].0);
}
