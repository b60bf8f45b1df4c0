//! OptG's joins as wholes: the two-group optimizer on routed gradients (section 8's score
//! momentum), the trainer's schedule and masks on a real network, the baselines' zeroing,
//! revival, the Taylor scores, and a resume that ends bit for bit as an uninterrupted run.
#![allow(clippy::unwrap_used)] // helpers of tests, not library code

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use compress_data::ImageDataset;
use compress_nn::zoo::{Mlp, MlpConfig};
use compress_nn::{Model, Network};
use compress_train::optim::{Optimizer, OptimizerKind};
use compress_train::schedule::Decay;
use compress_train::{Run, TrainConfig, TrainError};
use optg::{Criterion, OptgSettings, Sparsified, param_groups, sparsifiable_weights, taylor_scores, train};

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

fn close(a: &[f32], b: &[f32], tol: f32) {
    assert!(a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol), "{a:?} vs {b:?}");
}

/// Section 8, "score momentum": eta_S = 0.01, mu = 0.9, wd = 0, S0 = 0, W fixed, through the
/// trainer's own pieces (parameter groups, routed gradients, the SGD of the engine).
#[test]
fn the_score_group_steps_with_momentum_as_section_8_computes() {
    let vm = VarMap::new();
    let w = Tensor::new(&[[0.5f32, -1.0, 2.0, 0.0]], &Device::Cpu).unwrap();
    vm.data().lock().unwrap().insert("fc.weight".into(), Var::from_tensor(&w).unwrap());
    vm.data().lock().unwrap().insert("fc.bias".into(), Var::zeros(1, DType::F32, &Device::Cpu).unwrap());
    let sparse = Sparsified::new(&vm, &["fc.weight".into()]).unwrap();
    sparse.set_masks(&vec![vec![1.0, 0.0, 1.0, 0.0]]).unwrap();
    sparse.write_effective(false).unwrap();
    let mut cfg = TrainConfig::sgd(100, 1, 0.01, Decay::Constant, 0.0, 0);
    cfg.weight_decay = 5e-4;
    let settings = OptgSettings::new(0.9);
    let groups = param_groups(&vm, &sparse, &settings, &cfg).unwrap();
    let names: Vec<(String, Vec<String>, f64)> =
        groups.iter().map(|g| (g.name.clone(), g.vars.iter().map(|v| v.0.clone()).collect(), g.weight_decay)).collect();
    assert_eq!(
        names,
        [
            ("weights".to_string(), vec!["fc.bias".to_string(), "optg.fc.weight.dense".to_string()], 5e-4),
            ("scores".to_string(), vec!["optg.fc.weight.score".to_string()], 0.0)
        ],
        "scores alone without decay, the model's W (.) M in no group, biases decayed as the official code does"
    );
    let mut opt = Optimizer::new(OptimizerKind::sgd(0.9, false), groups).unwrap();
    opt.set_lr_scale("scores", 1.0).unwrap();
    opt.set_lr_scale("weights", 0.0).unwrap(); // W fixed
    let model = sparse.slots()[0].model.clone();
    let step = |g: [f32; 4], opt: &mut Optimizer| {
        let g = Tensor::new(&[g], &Device::Cpu).unwrap();
        let mut grads = (model.as_tensor() * &g).unwrap().sum_all().unwrap().backward().unwrap();
        sparse.route(&mut grads, true).unwrap();
        opt.step(&grads, 0.01).unwrap();
    };
    step([0.2, 0.3, -0.1, 0.4], &mut opt);
    close(&values(sparse.slots()[0].score.as_tensor()), &[-0.001, 0.003, 0.002, 0.0], 1e-9);
    let (state, _) = opt.state_tensors();
    close(&values(&state["optg.fc.weight.score#0"]), &[0.1, -0.3, -0.2, 0.0], 1e-7);
    step([0.1, -0.2, 0.0, 0.3], &mut opt);
    let (state, _) = opt.state_tensors();
    close(&values(&state["optg.fc.weight.score#0"]), &[0.14, -0.07, -0.18, 0.0], 1e-7);
    close(&values(sparse.slots()[0].score.as_tensor()), &[-0.0024, 0.0037, 0.0038, 0.0], 1e-8);
    // Without the score group (a baseline), no score moves.
    let base = OptgSettings::new(0.9).with_criterion(Criterion::Magnitude);
    assert_eq!(param_groups(&vm, &sparse, &base, &cfg).unwrap().len(), 1);
}

fn digits() -> (ImageDataset, ImageDataset) {
    compress_data::embedded::mnist_5k_digits(Some(1000), Some(300)).unwrap()
}

fn net(seed: u64) -> Network<Mlp> {
    Network::<Mlp>::new(MlpConfig::new([1, 28, 28], &[64, 32], 10).unwrap(), seed, &Device::Cpu).unwrap()
}

fn recipe(epochs: usize) -> TrainConfig {
    // 1,000 digits, batch 50: 20 steps an epoch.
    let decay = Decay::EpochCosine { steps_per_epoch: 20, epochs: epochs as u64, warmup: 0 };
    let mut cfg = TrainConfig::sgd(epochs, 50, 0.1, decay, 5e-4, 3);
    cfg.no_decay_on_norm_and_bias = true;
    cfg.log_every = 0;
    cfg
}

fn run(root: &std::path::Path, name: &str, cfg: &TrainConfig) -> Run {
    let mut r = Run::create(root, name, cfg, cfg.seed, "cpu").unwrap();
    r.quiet = true;
    r
}

/// OptG on a real network: nothing is pruned while every score is 0 (epoch 0), the scores hardly
/// move while `sigma(e - E/2)` is tiny (the group's rate follows the schedule), the final masks
/// meet the target exactly, pruned weights keep their values and some re-enter.
#[test]
fn optg_trains_to_the_target_with_revival_and_the_schedules_joined() {
    let (train_set, test) = digits();
    let root = tempfile::tempdir().unwrap();
    let n = net(0);
    let sparse = Sparsified::new(n.varmap(), &sparsifiable_weights(n.varmap(), &[]).unwrap()).unwrap();
    let total = sparse.total();
    assert_eq!(total, 784 * 64 + 64 * 32 + 32 * 10);
    // E = 20: after epoch 0 the score rate is eta_W sigma(-10) ~ 4.5e-6 eta_W.
    let short = recipe(20);
    let mut one = short.clone();
    one.stop_after_steps = Some(20);
    let e =
        train(&n, &sparse, &OptgSettings::new(0.9), &one, &train_set, &test, &mut run(root.path(), "a", &one), false);
    assert!(matches!(e, Err(optg::OptgError::Train(TrainError::Stopped(20)))), "{e:?}");
    assert_eq!(sparse.last_changes().unwrap(), 0, "all-zero scores prune nothing at epoch 0");
    let max_score = sparse.scores().unwrap().iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    assert!(max_score > 0.0 && max_score < 1e-4, "epoch 0's score steps are eta_W sigma(-10) small: {max_score}");

    let n = net(0);
    let sparse = Sparsified::new(n.varmap(), &sparsifiable_weights(n.varmap(), &[]).unwrap()).unwrap();
    let cfg = recipe(10);
    let t =
        train(&n, &sparse, &OptgSettings::new(0.8), &cfg, &train_set, &test, &mut run(root.path(), "b", &cfg), false)
            .unwrap();
    for h in &t.history {
        eprintln!("{h}");
    }
    let keep = optg::keep_count(total, 0.8).unwrap();
    assert!((t.sparsity - (total - keep) as f64 / total as f64).abs() < 1e-12, "{}", t.sparsity);
    assert!(t.top1 > 50.0, "an 80 % sparse MLP still learns the digits: {}", t.top1);
    let changes: Vec<u64> = t.history.iter().map(|h| h["mask_changes"].as_u64().unwrap()).collect();
    let pruned: Vec<f64> = t.history.iter().map(|h| h["sparsity"].as_f64().unwrap() * total as f64).collect();
    // More changes than the growth of the pruned set: weights came back.
    let growth = pruned.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() + pruned[0];
    assert!(changes.iter().sum::<u64>() as f64 > growth + 10.0, "changes {changes:?}, pruned {pruned:?}");
    // Pruned weights keep their values in W (OptG never zeroes them).
    let s = &sparse.slots()[0];
    let (w, m) = (values(s.dense.as_tensor()), values(s.mask.as_tensor()));
    assert!(w.iter().zip(&m).filter(|(_, m)| **m == 0.0).any(|(w, _)| *w != 0.0));
    assert_eq!(values(s.model.as_tensor()), w.iter().zip(&m).map(|(a, b)| a * b).collect::<Vec<_>>());
}

/// GMP and Taylor zero pruned weights for good: a pruned entry never comes back.
#[test]
fn the_baselines_never_revive_and_meet_the_target_exactly() {
    let (train_set, test) = digits();
    let root = tempfile::tempdir().unwrap();
    for c in [Criterion::Magnitude, Criterion::Taylor { batches: 2 }] {
        let n = net(1);
        let sparse = Sparsified::new(n.varmap(), &sparsifiable_weights(n.varmap(), &[]).unwrap()).unwrap();
        let cfg = recipe(10);
        let settings = OptgSettings::new(0.8).with_criterion(c);
        let t = train(&n, &sparse, &settings, &cfg, &train_set, &test, &mut run(root.path(), c.tag(), &cfg), false)
            .unwrap();
        let total = sparse.total();
        let want = (total - optg::keep_count(total, 0.8).unwrap()) as f64 / total as f64;
        assert!((t.sparsity - want).abs() < 1e-12, "{c:?}: {}", t.sparsity);
        // Mask changes are exactly the growth of the pruned set: nothing re-entered.
        let pruned: Vec<u64> =
            t.history.iter().map(|h| (h["sparsity"].as_f64().unwrap() * total as f64).round() as u64).collect();
        let changes: Vec<u64> = t.history.iter().map(|h| h["mask_changes"].as_u64().unwrap()).collect();
        assert_eq!(changes[0], pruned[0], "{c:?}");
        for e in 1..pruned.len() {
            assert_eq!(changes[e], pruned[e] - pruned[e - 1], "{c:?} epoch {e}");
        }
        for s in sparse.slots() {
            let (w, m) = (values(s.dense.as_tensor()), values(s.mask.as_tensor()));
            assert!(w.iter().zip(&m).all(|(w, m)| *m == 1.0 || *w == 0.0), "{c:?}: pruned weights are zero");
        }
        assert!(t.top1 > 50.0, "{c:?}: {}", t.top1);
    }
}

/// The Taylor score is `|G (.) W (.) M|` with `G` summed over the batches, computed by hand here.
#[test]
fn taylor_scores_sum_fresh_batches_of_the_masked_network() {
    let (train_set, _) = digits();
    let n = net(2);
    let sparse = Sparsified::new(n.varmap(), &sparsifiable_weights(n.varmap(), &[]).unwrap()).unwrap();
    let masks: Vec<Vec<f32>> =
        sparse.slots().iter().map(|s| (0..s.model.elem_count()).map(|i| (i % 3 != 0) as u8 as f32).collect()).collect();
    sparse.set_masks(&masks).unwrap();
    sparse.write_effective(false).unwrap();
    let got = taylor_scores(&n, &sparse, &train_set, 2, 50, 9, 4).unwrap();
    // By hand: the same two batches (the run's Taylor stream for epoch 4).
    let seed = compress_core::rng::SeededRng::new(9).child("optg/taylor").seed();
    let b = compress_data::batch::Batcher::new(50, true, seed, Device::Cpu).unwrap().drop_last(true);
    let mut sum: Vec<Option<Tensor>> = vec![None; 3];
    for batch in b.epoch(&train_set, 4, 0).unwrap().take(2) {
        let batch = batch.unwrap();
        let loss = compress_train::loss::cross_entropy(&n.forward_t(&batch.images, true).unwrap(), &batch.labels, 0.0)
            .unwrap();
        let g = loss.backward().unwrap();
        for (acc, s) in sum.iter_mut().zip(sparse.slots()) {
            let gi = g.get(s.model.as_tensor()).unwrap().clone();
            *acc = Some(match acc.take() {
                Some(a) => (a + gi).unwrap(),
                None => gi,
            });
        }
    }
    for ((g, s), got) in sum.iter().zip(sparse.slots()).zip(&got) {
        let want = values(&(g.as_ref().unwrap() * s.model.as_tensor()).unwrap().abs().unwrap());
        close(got, &want, 1e-6);
        // Pruned entries score 0 (W (.) M = 0), kept ones mostly not.
        let m = values(s.mask.as_tensor());
        assert!(got.iter().zip(&m).all(|(v, m)| *m == 1.0 || *v == 0.0));
        assert!(got.iter().zip(&m).filter(|(v, m)| **m == 1.0 && **v > 0.0).count() > m.len() / 3);
    }
}

/// A run stopped mid-epoch and resumed ends with the weights, scores and masks of an
/// uninterrupted run (the masks of the interrupted epoch are the checkpointed ones).
#[test]
fn optg_resumes_bit_for_bit() {
    let (train_set, test) = digits();
    let root = tempfile::tempdir().unwrap();
    let cfg = recipe(4);
    let whole = |name: &str, cfg: &TrainConfig| {
        let n = net(5);
        let sparse = Sparsified::new(n.varmap(), &sparsifiable_weights(n.varmap(), &[]).unwrap()).unwrap();
        let out = train(
            &n,
            &sparse,
            &OptgSettings::new(0.9),
            cfg,
            &train_set,
            &test,
            &mut run(root.path(), name, cfg),
            false,
        );
        (out, n)
    };
    let (a, na) = whole("whole", &cfg);
    let a = a.unwrap();
    let mut stopping = cfg.clone();
    stopping.checkpoint_every = 3;
    stopping.stop_after_steps = Some(51); // 20 steps an epoch: inside the third
    let (e, _) = whole("parts", &stopping);
    assert!(matches!(e, Err(optg::OptgError::Train(TrainError::Stopped(51)))), "{e:?}");
    let mut again = Run::newest(root.path(), "parts").unwrap().unwrap();
    again.quiet = true;
    let nb = net(5);
    let sparse = Sparsified::new(nb.varmap(), &sparsifiable_weights(nb.varmap(), &[]).unwrap()).unwrap();
    let mut resumed_cfg = cfg.clone();
    resumed_cfg.checkpoint_every = 3;
    let b = train(&nb, &sparse, &OptgSettings::new(0.9), &resumed_cfg, &train_set, &test, &mut again, true).unwrap();
    assert_eq!(a.top1, b.top1);
    let (ta, tb) = (na.tensors().unwrap(), nb.tensors().unwrap());
    assert_eq!(ta.len(), tb.len());
    for (k, v) in &ta {
        assert_eq!(values(v), values(&tb[k]), "{k}");
    }
}
