//! A PSS-Net run interrupted and resumed from its epoch-end checkpoint (pools restored from the
//! run folder, draws from per-batch streams) ends as the uninterrupted run: weights and pools.
#![allow(clippy::unwrap_used)] // helpers of tests, not library code

use candle_core::Device;
use compress_train::optim::OptimizerKind;
use compress_train::schedule::Decay;
use compress_train::{NoHooks, Run, TrainConfig, TrainError};
use pss_net::{PssSchedule, PssSettings, PssState, Sandwich, SlimMobileNetV1, Supernet};

fn settings() -> PssSettings {
    PssSettings {
        schedule: PssSchedule::official(2),
        capacity: 2,
        lambda: 0.9,
        buckets: (55.0, 660.0, 55.0),
        n_map: 3_000,
        min_count: 10,
        unit: 1e3,
        random_only: false,
    }
}

#[test]
fn a_run_resumed_from_its_epoch_end_checkpoint_ends_as_an_uninterrupted_one() {
    let (train, _) = compress_data::embedded::mnist_5k_digits(Some(320), Some(10)).unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut cfg = TrainConfig::sgd(2, 32, 0.05, Decay::Cosine { total: 20, min_lr: 0.0, start: 0 }, 1e-4, 4);
    cfg.optimizer = OptimizerKind::sgd(0.9, true);
    cfg.log_every = 0;
    let s = settings();
    let go = |run: &mut Run, cfg: &TrainConfig, resume: bool| {
        let sup = Supernet::new(SlimMobileNetV1::tiny(), 4, &Device::Cpu).unwrap();
        let state = PssState::new(&sup, &s, 4).unwrap();
        let obj = Sandwich {
            sup: &sup,
            settings: &s,
            state: &state,
            seed: 4,
            pools_file: Some(run.dir().join("pools.json")),
        };
        if resume {
            obj.restore().unwrap();
        }
        let out = compress_train::classify::fit_objective(&obj, &train, cfg, run, resume, &mut NoHooks);
        let pools = state.pools.borrow().clone();
        (out, sup.net.tensors().unwrap(), pools)
    };
    let mut whole = Run::create(root.path(), "whole", &cfg, 4, "cpu").unwrap();
    whole.quiet = true;
    let (out, weights, pools) = go(&mut whole, &cfg, false);
    out.unwrap();
    // Interrupted inside the second epoch (10 steps an epoch); the step's own checkpoint is then
    // lost, as a kill between checkpoints loses it: the epoch-end one is the newest.
    let mut stopping = cfg.clone();
    stopping.stop_after_steps = Some(13);
    let mut parts = Run::create(root.path(), "parts", &stopping, 4, "cpu").unwrap();
    parts.quiet = true;
    let (e, _, _) = go(&mut parts, &stopping, false);
    assert!(matches!(e, Err(TrainError::Stopped(13))), "{e:?}");
    let newest = compress_train::checkpoint::list(&parts.checkpoints()).unwrap().pop().unwrap();
    std::fs::remove_dir_all(newest).unwrap();
    drop(parts); // releases the run's lock, as the interrupted process would
    let mut again = Run::newest(root.path(), "parts").unwrap().unwrap();
    again.quiet = true;
    let (out, resumed, resumed_pools) = go(&mut again, &cfg, true);
    out.unwrap();
    assert_eq!(resumed_pools, pools, "the pools");
    for (k, v) in &weights {
        let diff = (v - &resumed[k]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "{k}");
    }
    assert!(pools.values().any(|p| !p.is_empty()));
}
