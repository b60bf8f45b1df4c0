//! Checks every zoo architecture must pass: masked equals pruned, analytic cost equals counted
//! cost, every parameter receives a gradient.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use compress_core::rng::SeededRng;
use compress_nn::network::{AnalyticCost, ArchConfig, Architecture, Network};
use rand::Rng;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;

/// Random values for every variable (BatchNorm statistics and affine terms included), so that a
/// masking or slicing bug cannot hide behind zeros and ones.
pub fn randomise<A: Architecture>(net: &Network<A>, seed: u64) {
    let rng = SeededRng::new(seed);
    let data = net.varmap.data().lock().expect("lock");
    for (name, var) in data.iter() {
        let mut r = rng.stream(name, 0);
        let n = var.elem_count();
        let v: Vec<f32> = if name.ends_with("running_var") {
            (0..n).map(|_| r.random_range(0.5..2.0)).collect()
        } else if name.ends_with("running_mean") || name.ends_with("bias") {
            (0..n).map(|_| r.random_range(-0.5..0.5)).collect()
        } else if name.ends_with("weight") && var.rank() == 1 {
            (0..n).map(|_| r.random_range(0.5..1.5)).collect()
        } else {
            let std = var
                .as_tensor()
                .sqr()
                .and_then(|t| t.mean_all())
                .and_then(|t| t.to_scalar::<f32>())
                .unwrap_or(0.01)
                .sqrt()
                .max(0.01);
            (0..n).map(|_| r.random_range(-std..std) * 1.7).collect()
        };
        let t = Tensor::from_vec(v, var.shape(), &Device::Cpu).expect("tensor");
        var.set(&t).expect("set");
    }
}

/// A random kept set for every prunable group (at least one channel kept, at least one removed
/// where the group has two or more).
pub fn random_kept(cfg: &impl ArchConfig, seed: u64) -> BTreeMap<String, Vec<usize>> {
    let mut r = SeededRng::new(seed).stream("kept", 0);
    let mut kept = BTreeMap::new();
    for g in cfg.groups().into_iter().filter(|g| g.prunable && g.width > 1) {
        let n = r.random_range(1..g.width);
        let mut all: Vec<usize> = (0..g.width).collect();
        all.shuffle(&mut r);
        let mut k = all[..n].to_vec();
        k.sort();
        kept.insert(g.name, k);
    }
    kept
}

pub fn input(cfg: &impl ArchConfig, batch: usize, seed: u64) -> Tensor {
    let [c, h, w] = cfg.input_shape();
    let mut r = SeededRng::new(seed).stream("input", 0);
    let v: Vec<f32> = (0..batch * c * h * w).map(|_| r.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, (batch, c, h, w), &Device::Cpu).expect("input")
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b).expect("d").abs().expect("a").max_all().expect("m").to_scalar::<f32>().expect("s");
    let s = a.abs().expect("a").max_all().expect("m").to_scalar::<f32>().expect("s").max(1e-3);
    d / s
}

/// Masked model == physically pruned model, for several random kept sets, in eval and train mode.
pub fn masked_equals_pruned<A: Architecture>(cfg: A::Config, trials: u64)
where
    A::Config: AnalyticCost,
{
    for t in 0..trials {
        let net = Network::<A>::new(cfg.clone(), t, &Device::Cpu).expect("build");
        randomise(&net, 100 + t);
        let kept = random_kept(&cfg, 200 + t);
        assert!(!kept.is_empty(), "{cfg:?} has no prunable group");
        let masked = net.masked(&kept).expect("mask");
        let pruned = net.prune(&kept).expect("prune");
        for (name, k) in &kept {
            assert_eq!(pruned.config.widths()[name], k.len(), "width of {name}");
        }
        let x = input(&cfg, 2, 300 + t);
        for train in [false, true] {
            let ym = masked.forward_t(&x, train).expect("masked forward");
            let yp = pruned.forward_t(&x, train).expect("pruned forward");
            assert_eq!(ym.dims(), yp.dims());
            let d = max_rel_diff(&ym, &yp);
            assert!(d < 2e-4, "trial {t} train={train}: masked vs pruned differ by {d} (relative)");
        }
        // The pruned model's analytic cost matches its counted cost and its variables.
        let counted = pruned.counted_cost().expect("count");
        let analytic = pruned.config.cost();
        assert_eq!(analytic.macs, counted.macs, "pruned MACs: analytic vs counted");
        assert_eq!(analytic.params, counted.params, "pruned params: analytic vs counted");
        assert_eq!(analytic.params, pruned.count_params().expect("params"), "pruned params: analytic vs variables");
    }
}

/// Analytic cost == counting forward pass == parameter count of the variables.
pub fn cost_is_consistent<A: Architecture>(cfg: A::Config) -> compress_core::cost::Cost
where
    A::Config: AnalyticCost,
{
    let net = Network::<A>::new(cfg.clone(), 0, &Device::Cpu).expect("build");
    let counted = net.counted_cost().expect("count");
    let analytic = cfg.cost();
    assert_eq!(analytic.macs, counted.macs, "MACs: analytic vs counted");
    assert_eq!(analytic.params, counted.params, "params: analytic vs counted");
    assert_eq!(analytic.params, net.count_params().expect("params"), "params: analytic vs variables");
    analytic
}

/// One training step: forward in train mode, backward, every trainable variable gets a gradient
/// (no silent cut) and every conv/linear weight a non-zero one, then eval mode runs. (A norm's
/// bias may rightly get a zero gradient: a per-channel shift before conv + train-mode BatchNorm
/// is removed by the batch mean, as in MobileNetV2's linear bottlenecks.)
pub fn trains_a_step<A: Architecture>(cfg: A::Config, target: impl Fn(&Tensor) -> Tensor) {
    let net = Network::<A>::new(cfg.clone(), 1, &Device::Cpu).expect("build");
    let x = input(&cfg, 2, 5);
    let y = net.forward_t(&x, true).expect("train forward");
    let loss = (&y - target(&y)).expect("d").sqr().expect("s").mean_all().expect("m");
    let grads = loss.backward().expect("backward");
    let data = net.varmap.data().lock().expect("lock");
    for (name, var) in data.iter() {
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            continue;
        }
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient reaches {name}"));
        let n =
            g.abs().expect("a").sum_all().expect("s").to_dtype(DType::F32).expect("f").to_scalar::<f32>().expect("v");
        assert!(n > 0.0 || var.rank() < 2, "gradient of {name} is zero");
    }
    drop(data);
    let e = net.forward_t(&x, false).expect("eval forward");
    assert_eq!(e.dims(), y.dims());
}
