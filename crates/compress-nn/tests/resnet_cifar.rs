mod common;

use compress_nn::ArchConfig;
use compress_nn::zoo::{ResNetCifar, ResNetCifarConfig, Shortcut};

#[test]
fn resnet56_and_110_match_the_published_cost() {
    // Published (HRank, DCFF, Torch-Pruning tables): ResNet-56 125.49 M MACs ("FLOPs" there)
    // and 0.85 M params; ResNet-110 252.89 M MACs and 1.72-1.73 M params. Option A.
    let c56 = common::cost_is_consistent::<ResNetCifar>(ResNetCifarConfig::new(56, 10).expect("cfg"));
    assert!((c56.macs as f64 / 125.49e6 - 1.0).abs() < 0.01, "{}", c56.macs);
    assert!((c56.params as f64 / 0.853e6 - 1.0).abs() < 0.01, "{}", c56.params);
    let c110 = common::cost_is_consistent::<ResNetCifar>(ResNetCifarConfig::new(110, 10).expect("cfg"));
    assert!((c110.macs as f64 / 252.89e6 - 1.0).abs() < 0.01, "{}", c110.macs);
    assert!((c110.params as f64 / 1.73e6 - 1.0).abs() < 0.01, "{}", c110.params);
}

#[test]
fn masked_equals_pruned_option_a_and_b() {
    common::masked_equals_pruned::<ResNetCifar>(ResNetCifarConfig::new(20, 10).expect("cfg"), 2);
    let b = ResNetCifarConfig::new(20, 10).expect("cfg").with_shortcut(Shortcut::B);
    common::masked_equals_pruned::<ResNetCifar>(b, 2);
    let mnist = ResNetCifarConfig::new(8, 10).expect("cfg").with_shortcut(Shortcut::B).input(1, 28);
    common::masked_equals_pruned::<ResNetCifar>(mnist, 1);
}

#[test]
fn trains_a_step_on_mnist_shape() {
    let cfg = ResNetCifarConfig::new(20, 10).expect("cfg").input(1, 28);
    common::cost_is_consistent::<ResNetCifar>(cfg.clone());
    common::trains_a_step::<ResNetCifar>(cfg, |y| y.ones_like().expect("t"));
}

#[test]
fn bad_configs_and_kept_sets_are_errors() {
    assert!(ResNetCifarConfig::new(21, 10).is_err());
    assert!(ResNetCifarConfig::new(20, 0).is_err());
    let cfg = ResNetCifarConfig::new(20, 10).expect("cfg");
    let mut w = cfg.widths().clone();
    w.insert("stage1".into(), 0);
    assert!(cfg.with_widths(w).is_err());
    let mut w = compress_nn::structure::Widths::new();
    w.insert("nope".into(), 3);
    assert!(cfg.with_widths(w).is_err());
    let net = compress_nn::Network::<ResNetCifar>::new(cfg, 0, &candle_core::Device::Cpu).expect("net");
    let kept = |k: &str, v: Vec<usize>| [(k.to_string(), v)].into_iter().collect();
    assert!(net.prune(&kept("stage1", vec![0, 1])).expect_err("option A").to_string().contains("not prunable"));
    assert!(net.prune(&kept("layer1.0.inner", vec![])).is_err());
    assert!(net.prune(&kept("layer1.0.inner", vec![16])).is_err());
    assert!(net.prune(&kept("nope", vec![0])).is_err());
}

#[test]
fn a_zoo_network_runs_as_a_candle_module_t() {
    // candle code that takes any `ModuleT` (`x.apply_t(&net, train)`) runs a zoo network and
    // gets exactly its own forward.
    let cfg = ResNetCifarConfig::new(8, 10).expect("cfg").input(1, 12);
    let net = compress_nn::Network::<ResNetCifar>::new(cfg.clone(), 2, &candle_core::Device::Cpu).expect("net");
    let x = common::input(&cfg, 2, 5);
    let via_candle = x.apply_t(&net, false).expect("apply_t");
    let own = net.forward_t(&x, false).expect("forward");
    let d = (via_candle - own).expect("d").abs().expect("a").max_all().expect("m").to_scalar::<f32>().expect("s");
    assert_eq!(d, 0.0);
}
