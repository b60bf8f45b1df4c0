//! The spec's section 8 invariants, on the fused network itself.
#![allow(clippy::unwrap_used)] // helpers of tests, not library code

use candle_core::{DType, Device, Tensor, Var};
use compress_nn::AnalyticCost;
use compress_nn::zoo::{ResNet, ResNetCifar, ResNetCifarConfig, ResNetConfig, Vgg, VggConfig};
use compress_nn::{ArchConfig, Architecture, Model};
use compress_prune::{LayerwiseRates, compact_config, expand_resnet50, parse_cprate, top_k};
use dcff::presets::RESNET50_RUNS;
use dcff::{FusedNetwork, KlMode, TemperatureSchedule, filter_proxies};

const W4: [f32; 8] = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 3.0, 0.0];

#[test]
fn fused_filters_and_their_gradient() {
    // Four 2-D filters at T = 1, m = 2: S = {1, 3}, fused filters and dW = Phi^T G.
    let f = filter_proxies(&W4, 4, 1.0, KlMode::Official);
    let s = top_k(&f.scores, 2).unwrap();
    assert_eq!(s, vec![1, 3]);
    let phi: Vec<f32> = s.iter().flat_map(|&j| f.row(j).to_vec()).collect();
    let dev = Device::Cpu;
    let phi = Tensor::from_vec(phi, (2, 4), &dev).unwrap();
    let w = Var::from_tensor(&Tensor::from_vec(W4.to_vec(), (4, 2), &dev).unwrap()).unwrap();
    let fused = phi.matmul(w.as_tensor()).unwrap();
    let got: Vec<Vec<f32>> = fused.to_vec2().unwrap();
    let want = [[0.44636, 0.82735], [2.52402, 0.11616]];
    for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
        assert!((g - w).abs() < 1e-5, "{got:?}");
    }
    let g = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &dev).unwrap();
    let grads = (fused * g).unwrap().sum_all().unwrap().backward().unwrap();
    let dw: Vec<Vec<f32>> = grads.get(w.as_tensor()).unwrap().to_vec2().unwrap();
    let want = [[0.46312, 0.71552], [0.70370, 1.34149], [0.47212, 0.77783], [2.36106, 3.16515]];
    for (g, w) in dw.iter().flatten().zip(want.iter().flatten()) {
        assert!((g - w).abs() < 1e-4, "{dw:?}");
    }
}

fn mini_vgg() -> VggConfig {
    VggConfig::new(&[16, 0, 32, 0], 10).unwrap().input(1, 28).unwrap().single_linear()
}

fn batch(c: usize, side: usize, n: usize, seed: u64) -> Tensor {
    let mut rng = compress_core::rng::SeededRng::new(seed).stream("x", 0);
    let v: Vec<f32> = (0..n * c * side * side).map(|_| rand::Rng::random_range(&mut rng, -1.0..1.0)).collect();
    Tensor::from_vec(v, (n, c, side, side), &Device::Cpu).unwrap()
}

/// A few SGD steps with refreshes, so that weights, BN statistics and Phi are all non-trivial.
fn train_a_little<A: Architecture>(net: &FusedNetwork<A>, x: &Tensor, epochs: usize)
where
    A::Config: LayerwiseRates,
{
    let sched = TemperatureSchedule::official(epochs);
    let params: Vec<Var> = net.trainable_vars().unwrap().into_iter().map(|(_, v)| v).collect();
    for e in 0..epochs {
        net.refresh(e, sched.at(e)).unwrap();
        let y = net.forward_t(x, true).unwrap();
        let loss = y.sqr().unwrap().mean_all().unwrap();
        let g = loss.backward().unwrap();
        for p in &params {
            if let Some(d) = g.get(p.as_tensor()) {
                p.set(&(p.as_tensor() - (d * 0.01).unwrap()).unwrap()).unwrap();
            }
        }
    }
}

fn extraction_is_exact<A: Architecture>(full: A::Config, rates: &[f64], x: &Tensor)
where
    A::Config: LayerwiseRates,
{
    let net = FusedNetwork::<A>::new(full, rates, KlMode::Official, 3, &Device::Cpu).unwrap();
    train_a_little(&net, x, 3);
    let compact = net.to_compact().unwrap();
    let a = net.forward_t(x, false).unwrap();
    let b = compact.forward_t(x, false).unwrap();
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(d < 1e-4, "fused vs compact logits differ by {d}");
    assert_eq!(compact.config.widths(), net.compact.widths());
}

/// The variable `name` of a model's VarMap.
fn var_of(m: &dyn Model, name: &str) -> Var {
    m.varmap().data().lock().unwrap()[name].clone()
}

#[test]
fn extraction_and_gradients_with_a_soft_phi() {
    // At T = 1 Phi is a soft matrix (rows of P), so extraction must apply the soft weights and
    // Phi b, not pick rows; and the gradient the fused network's own backward gives W must be
    // Phi^T G, with G the compact weight's gradient under the same loss.
    let net = FusedNetwork::<Vgg>::new(mini_vgg(), &[0.75, 0.75], KlMode::Official, 4, &Device::Cpu).unwrap();
    net.refresh(0, 1.0).unwrap();
    let phi = var_of(&net, "features.conv0.buffer_phi").as_tensor().copy().unwrap();
    let rows: Vec<Vec<f32>> = phi.to_vec2().unwrap();
    let largest = rows.iter().map(|r| r.iter().copied().fold(0f32, f32::max)).fold(1f32, f32::min);
    assert!(largest < 0.9, "Phi is (nearly) one-hot at T = 1: {largest}");
    // Non-zero biases, so that a missing Phi b would show.
    for name in ["features.conv0.bias", "features.conv1.bias"] {
        let b = var_of(&net, name);
        let n = b.as_tensor().dim(0).unwrap();
        let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 0.5).collect();
        b.set(&Tensor::from_vec(v, n, &Device::Cpu).unwrap()).unwrap();
    }
    let x = batch(1, 28, 3, 11);
    let compact = net.to_compact().unwrap();
    let (a, b) = (net.forward_t(&x, false).unwrap(), compact.forward_t(&x, false).unwrap());
    let scale = a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let d = (&a - &b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(scale > 0.0 && d <= 1e-5 * scale, "fused vs compact with a soft Phi: {d} of {scale}");
    // A row pick (the bug this guards against) would differ by far more.
    let r = Tensor::from_vec(
        (0..30).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect::<Vec<f32>>(),
        (3, 10),
        &Device::Cpu,
    )
    .unwrap();
    let loss = |y: Tensor| (y * &r).unwrap().sum_all().unwrap();
    let g_fused = loss(net.forward_t(&x, false).unwrap()).backward().unwrap();
    let g_compact = loss(compact.forward_t(&x, false).unwrap()).backward().unwrap();
    for (w, b) in [("features.conv0.weight", "features.conv0.bias"), ("features.conv1.weight", "features.conv1.bias")] {
        let phi = var_of(&net, &w.replace("weight", "buffer_phi")).as_tensor().copy().unwrap();
        let dw = g_fused.get(var_of(&net, w).as_tensor()).unwrap();
        let gc = g_compact.get(var_of(&compact, w).as_tensor()).unwrap();
        let want = phi.t().unwrap().matmul(&gc.flatten_from(1).unwrap()).unwrap();
        let norm = want.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap();
        let err = (dw.flatten_from(1).unwrap() - &want).unwrap().abs().unwrap().max_all().unwrap();
        let err = err.to_scalar::<f32>().unwrap();
        assert!(norm > 1e-3, "{w}: the gradient is (nearly) zero: {norm}");
        assert!(err <= 1e-5 * norm.max(1.0), "{w}: dW differs from Phi^T G by {err} (norm {norm})");
        let db = g_fused.get(var_of(&net, b).as_tensor()).unwrap();
        let gb = g_compact.get(var_of(&compact, b).as_tensor()).unwrap();
        let want_b = phi.t().unwrap().matmul(&gb.unsqueeze(1).unwrap()).unwrap().squeeze(1).unwrap();
        let err_b = (db - want_b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(err_b <= 1e-5 * norm.max(1.0), "{b}: db differs from Phi^T g by {err_b}");
    }
}

#[test]
fn compact_equals_fused_vgg() {
    extraction_is_exact::<Vgg>(mini_vgg(), &[0.75, 0.75], &batch(1, 28, 4, 1));
}

#[test]
fn compact_equals_fused_resnet56() {
    let cfg = ResNetCifarConfig::new(56, 10).unwrap().input(3, 16);
    let rates = dcff::presets::paper_settings().unwrap()[1].layer_rates.clone();
    extraction_is_exact::<ResNetCifar>(cfg, &rates, &batch(3, 16, 4, 2));
}

#[test]
fn compact_equals_fused_resnet50() {
    // ResNet-50's structure at 1/8 of its widths (the refresh is O(C^2) per layer).
    let full = ResNetConfig::resnet50(10).unwrap().input(3, 32);
    let eighth = full.widths().iter().map(|(k, v)| (k.clone(), v / 8)).collect();
    let cfg = full.with_widths(eighth).unwrap();
    let rates = expand_resnet50(&parse_cprate(RESNET50_RUNS[5].2).unwrap()).unwrap();
    extraction_is_exact::<ResNet>(cfg, &rates, &batch(3, 32, 2, 3));
}

#[test]
fn over_provisioned_weights_and_hot_refresh() {
    let net = FusedNetwork::<Vgg>::new(mini_vgg(), &[0.75, 0.75], KlMode::Official, 0, &Device::Cpu).unwrap();
    let data = net.varmap().data().lock().unwrap();
    assert_eq!(data["features.conv0.weight"].dims(), &[16, 1, 3, 3], "all C filters, compact inputs");
    assert_eq!(data["features.conv1.weight"].dims(), &[32, 4, 3, 3], "C' is the previous compact width");
    assert_eq!(data["features.conv1.bias"].dims(), &[32]);
    assert_eq!(data["features.norm1.weight"].dims(), &[8], "BN is compact");
    assert_eq!(data["classifier.linear.weight"].dims(), &[10, 8 * 49]);
    drop(data);
    let r0 = net.refresh(0, 1.0).unwrap();
    for (r, l) in r0.layers.iter().zip(&net.layers) {
        assert!(r.finite && r.selected.len() == l.keep && r.selected.windows(2).all(|w| w[0] < w[1]));
    }
    // At a hot temperature P = I: every score is NaN, the stored ones and S stay.
    let r1 = net.refresh(1, TemperatureSchedule::official(6).at(1)).unwrap();
    for (a, b) in r0.layers.iter().zip(&r1.layers) {
        assert!(!b.finite && !b.changed && a.selected == b.selected);
    }
    assert_eq!(net.refreshed_epoch().unwrap(), Some(1));
    // Phi is one-hot on S: the fused weight is W[S].
    let data = net.varmap().data().lock().unwrap();
    let phi: Vec<Vec<f32>> = data["features.conv0.buffer_phi"].as_tensor().to_vec2().unwrap();
    for (row, &j) in phi.iter().zip(&r1.layers[0].selected) {
        assert_eq!(row.iter().sum::<f32>(), 1.0);
        assert_eq!(row[j], 1.0);
    }
}

#[test]
fn stable_mode_keeps_s_when_p_is_the_identity() {
    // With the stable rule, P = I leaves only the diagonal terms: every filter scores the same
    // and the scores carry no ranking. S must stay what epoch 0 chose, not collapse to the lowest
    // indices (which epoch 0 did not choose here: the check below makes sure of that).
    let net = FusedNetwork::<Vgg>::new(mini_vgg(), &[0.75, 0.75], KlMode::Stable, 0, &Device::Cpu).unwrap();
    let r0 = net.refresh(0, 1.0).unwrap();
    assert!(
        r0.layers.iter().any(|l| l.selected != (0..l.selected.len()).collect::<Vec<_>>()),
        "epoch 0 chose the lowest indices: this test could not see a collapse"
    );
    let r1 = net.refresh(1, TemperatureSchedule::official(6).at(1)).unwrap();
    for (a, b) in r0.layers.iter().zip(&r1.layers) {
        assert!(b.finite, "the stable rule keeps the scores finite");
        assert_eq!(a.selected, b.selected, "{}: S changed on uninformative scores", b.conv);
        assert!(!b.changed);
    }
}

#[test]
fn trainable_vars_leave_out_phi_and_running_statistics() {
    let net = FusedNetwork::<Vgg>::new(mini_vgg(), &[0.75, 0.75], KlMode::Official, 0, &Device::Cpu).unwrap();
    let names: Vec<String> = net.trainable_vars().unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(
        names.contains(&"features.conv0.weight".to_string()) && names.contains(&"classifier.linear.weight".to_string())
    );
    assert!(!names.iter().any(|n| compress_nn::is_buffer(n)), "{names:?}");
    let all = net.varmap().all_vars().len();
    assert!(all > names.len() && !names.iter().any(|n| n.contains("phi") || n.contains("running")));
}

#[test]
fn train_mode_updates_compact_running_statistics() {
    let net = FusedNetwork::<Vgg>::new(mini_vgg(), &[0.75, 0.75], KlMode::Official, 0, &Device::Cpu).unwrap();
    net.refresh(0, 1.0).unwrap();
    let before = net.varmap().data().lock().unwrap()["features.norm0.running_mean"].as_tensor().copy().unwrap();
    net.forward_t(&batch(1, 28, 4, 5), true).unwrap();
    let after = net.varmap().data().lock().unwrap()["features.norm0.running_mean"].as_tensor().copy().unwrap();
    let d = (after - before).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(d > 0.0, "running statistics must move in train mode");
}

#[test]
fn resnet50_parameter_counts_of_the_spec() {
    // Section 8: conv + BN(gamma, beta) + fc parameters of runs A and B, and the unpruned model.
    let full = ResNetConfig::resnet50(1000).unwrap();
    assert_eq!(full.cost().params, 25_557_032);
    for (run, want) in [(0, 7_403_402u64), (1, 10_581_581)] {
        let rates = expand_resnet50(&parse_cprate(RESNET50_RUNS[run].2).unwrap()).unwrap();
        let c = compact_config(&full, &rates).unwrap();
        assert_eq!(c.cost().params, want, "run {}", RESNET50_RUNS[run].0);
    }
}

#[test]
fn stable_mode_is_an_option_not_the_default() {
    assert_eq!(KlMode::default(), KlMode::Official);
    let w = batch(1, 3, 8, 9).to_dtype(DType::F32).unwrap();
    let rows: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    let hot = filter_proxies(&rows, 8, 1e4, KlMode::Stable);
    assert!(hot.all_finite());
}

#[test]
fn paper_table_sizes() {
    // Every compact model's FLOPs and params reductions equal the paper's to two decimals, except
    // VGG-16's params (ours 1,071,248 = 92.73 %, the README's 1.06 M = 92.80 %; the FLOPs of the
    // same widths match to the digit: see the crate README).
    let rows = dcff::paper::paper_sizes().unwrap();
    assert_eq!(rows.len(), 18);
    for r in &rows {
        let vgg_params = r.setting.starts_with("C10 VGG-16: params");
        assert_eq!(r.verdict == compress_train::Verdict::Holds, !vgg_params, "{}: {:?}", r.setting, r.method);
    }
}

/// `selections()` reads every layer's `S` back from `Phi`; epoch 0 never counts as a change (even
/// where its `S` differs from the initial `Phi`), a later refresh counts exactly the layers whose
/// `S` moved.
#[test]
fn selections_and_changes_across_refreshes() {
    let net = FusedNetwork::<Vgg>::new(mini_vgg(), &[0.75, 0.75], KlMode::Official, 0, &Device::Cpu).unwrap();
    assert!(format!("{net:?}").contains("FusedNetwork"));
    let initial = net.selections().unwrap();
    let r0 = net.refresh(0, 1.0).unwrap();
    let s0 = net.selections().unwrap();
    assert!(r0.layers.iter().any(|l| initial[&l.conv] != l.selected), "epoch 0 kept the initial S: no test");
    for l in &r0.layers {
        assert_eq!(s0[&l.conv], l.selected);
        assert!(!l.changed, "{}: epoch 0 is not a change", l.conv);
    }
    // New weights for conv0: its S moves at the next refresh, and only that counts as changed.
    {
        let data = net.varmap().data().lock().unwrap();
        let w = &data["features.conv0.weight"];
        let v: Vec<f32> = (0..w.elem_count()).map(|i| ((i * 7919 % 97) as f32 - 48.0) / 40.0).collect();
        w.set(&Tensor::from_vec(v, w.dims(), &Device::Cpu).unwrap()).unwrap();
    }
    let r1 = net.refresh(1, 1.0).unwrap();
    let s1 = net.selections().unwrap();
    for l in &r1.layers {
        assert_eq!(s1[&l.conv], l.selected);
        assert_eq!(l.changed, s0[&l.conv] != l.selected, "{}", l.conv);
    }
    assert!(r1.layers[0].changed, "conv0's new weights move its S");
}
