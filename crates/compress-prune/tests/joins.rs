//! The crate's functions on whole networks and at their edges, written against the mutants that
//! `cargo mutants -p compress-prune` found alive (issue 27): the magnitude criterion's producer
//! sums, consumer exclusion and errors; the uniform search's one-more channels; the measured
//! cost and reductions; the rate parser's limits and counters.
#![allow(clippy::unwrap_used)] // helpers of tests, not library code

use candle_core::{Device, Tensor};
use compress_core::cost::Cost;
use compress_nn::stack::Stack;
use compress_nn::structure::{Role, Widths};
use compress_nn::zoo::{ResNetCifar, ResNetCifarConfig, Shortcut, Vgg, VggConfig};
use compress_nn::{AnalyticCost, ArchConfig, Network};
use compress_prune::{
    LayerwiseRates, Reduction, filter_l1, magnitude_kept, measured_cost, parse_cprate, parse_cprate_at_most, top_k,
    uniform_at_flops,
};
use std::collections::HashMap;

fn vgg() -> VggConfig {
    VggConfig::new(&[4, 0, 6, 0], 10).unwrap().input(1, 8).unwrap().single_linear()
}

/// `net` with `name` replaced by `value` (same shape).
fn with_tensor<A: compress_nn::Architecture>(net: &Network<A>, name: &str, value: Tensor) -> Network<A> {
    let mut t: HashMap<String, Tensor> = net.tensors().unwrap();
    assert_eq!(t[name].dims(), value.dims(), "{name}");
    t.insert(name.to_string(), value);
    Network::from_tensors(net.config.clone(), &t, net.device()).unwrap()
}

/// A weight of `shape` whose row `i` holds `norms[i]` in every entry.
fn rows_of(norms: &[f32], shape: &[usize]) -> Tensor {
    let rest: usize = shape[1..].iter().product();
    let v: Vec<f32> = norms.iter().flat_map(|&n| std::iter::repeat_n(n, rest)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The producing filters' L1 norms rank the channels; consumers (the next conv's input
/// columns) and BatchNorm scales do not; a group whose width does not change is not listed.
#[test]
fn magnitude_ranks_by_producing_filters_only() {
    let cfg = vgg();
    let net = Network::<Vgg>::new(cfg.clone(), 0, &Device::Cpu).unwrap();
    let net = with_tensor(&net, "features.conv0.weight", rows_of(&[1.0, 4.0, 2.0, 3.0], &[4, 1, 3, 3]));
    // A consumer and a BatchNorm that favour the opposite channels.
    let consumer: Vec<f32> = (0..6 * 4 * 9).map(|i| if (i / 9) % 4 < 2 { 100.0 } else { 0.0 }).collect();
    let consumer = Tensor::from_vec(consumer, (6, 4, 3, 3), &Device::Cpu).unwrap();
    let net = with_tensor(&net, "features.conv1.weight", consumer);
    let gamma = Tensor::new(&[1000f32, 0.0, 1000.0, 0.0], &Device::Cpu).unwrap();
    let net = with_tensor(&net, "features.norm0.weight", gamma);
    let target = cfg.with_widths([("conv0".to_string(), 2)].into()).unwrap();
    let kept = magnitude_kept(&net, &target).unwrap();
    assert_eq!(kept.len(), 1, "the unchanged group is not listed: {kept:?}");
    assert_eq!(kept["conv0"], [1, 3]);
    let same = cfg.with_widths([("conv0".to_string(), 4), ("conv1".to_string(), 6)].into()).unwrap();
    assert!(magnitude_kept(&net, &same).unwrap().is_empty());
    // A target wider than the network is refused.
    let small = Network::<Vgg>::new(target.clone(), 0, &Device::Cpu).unwrap();
    assert!(magnitude_kept(&small, &cfg).is_err());
}

/// A residual stage produced by several convolutions ranks channels by the sum of their
/// filters' norms (option-B CIFAR ResNet: both blocks' conv2 and the stage-2 shortcut); a fixed
/// group may not shrink.
#[test]
fn a_group_of_several_producers_sums_their_norms() {
    let cfg = ResNetCifarConfig::new(14, 10).unwrap().with_shortcut(Shortcut::B);
    let net = Network::<ResNetCifar>::new(cfg.clone(), 3, &Device::Cpu).unwrap();
    let target = cfg.with_widths([("stage2".to_string(), 5)].into()).unwrap();
    let kept = magnitude_kept(&net, &target).unwrap();
    let t = net.tensors().unwrap();
    let group = cfg.groups().into_iter().find(|g| g.name == "stage2").unwrap();
    let producers: Vec<&String> = group
        .members
        .iter()
        .filter(|m| m.role == Role::Produce && t.get(&m.tensor).is_some_and(|x| x.rank() == 4))
        .map(|m| &m.tensor)
        .collect();
    assert!(producers.len() >= 3, "{producers:?}");
    let mut score = vec![0f32; 32];
    for p in producers {
        for (c, v) in filter_l1(&t[p]).unwrap().into_iter().enumerate() {
            score[c] += v;
        }
    }
    assert_eq!(kept["stage2"], top_k(&score, 5).unwrap());
    let a = ResNetCifarConfig::new(8, 10).unwrap();
    let anet = Network::<ResNetCifar>::new(a.clone(), 0, &Device::Cpu).unwrap();
    // Option-A stages are fixed: config checks aside, the criterion itself refuses them.
    let shrunk = Network::<ResNetCifar>::new(
        a.clone().with_shortcut(Shortcut::B).with_widths([("stage1".to_string(), 8)].into()).unwrap(),
        0,
        &Device::Cpu,
    )
    .unwrap();
    assert!(magnitude_kept(&anet, &shrunk.config.with_shortcut(Shortcut::A)).is_err());
    // A declared network lists its convs; its fixed output group, absent from its widths, is
    // skipped by the criterion.
    let s = Stack::new([1, 8, 8]).conv("a", 4).norm("a_bn").output("fc", 3).bias().build().unwrap();
    let convs = s.prunable_convs();
    assert_eq!((convs.len(), convs[0].conv.as_str(), convs[0].group.as_str()), (1, "a", "a"));
}

/// `k == len` keeps everything; `k` out of range is an error.
#[test]
fn top_k_edges() {
    assert_eq!(top_k(&[1.0, 2.0], 2).unwrap(), [0, 1]);
    assert!(top_k(&[1.0, 2.0], 3).is_err() && top_k(&[1.0], 0).is_err());
}

/// The uniform search reaches structures only a one-more channel gives, in either group.
#[test]
fn uniform_one_more_channel_in_each_group() {
    let full: Widths = [("a".to_string(), 16), ("b".to_string(), 32)].into();
    let mut f = |w: &Widths| -> compress_prune::Result<u64> { Ok((w["a"] * 1000 + w["b"]) as u64) };
    for (target, a, b) in [(8016, 8, 16), (9016, 9, 16), (8018, 8, 18), (12024, 12, 24)] {
        let m = uniform_at_flops(&full, target, &mut f).unwrap();
        assert_eq!((m.widths["a"], m.widths["b"], m.flops), (a, b, target), "target {target}");
        // Every width stays within one channel of the common ratio.
        for (g, &w) in &m.widths {
            let exact = full[g] as f64 * (1.0 - m.rate);
            assert!(w as f64 >= exact.floor() && (w as f64) <= exact.floor() + 1.0, "{g}: {w} at {}", m.rate);
        }
    }
    // Five groups: no one-more search, only the common ratio.
    let five: Widths = (0..5).map(|i| (format!("g{i}"), 10)).collect();
    let mut sum = |w: &Widths| -> compress_prune::Result<u64> { Ok(w.values().sum::<usize>() as u64) };
    let m = uniform_at_flops(&five, 31, &mut sum).unwrap();
    assert!(m.widths.values().all(|&w| w == m.widths["g0"]), "{:?}", m.widths);
}

/// The counted cost equals the analytic MACs and params (and counts the element-wise work the
/// analytic form leaves out); reductions in percent.
#[test]
fn measured_cost_and_reductions() {
    let cfg = vgg();
    let c = measured_cost::<Vgg>(&cfg).unwrap();
    let a = cfg.cost();
    assert_eq!((c.macs, c.params), (a.macs, a.params));
    assert!(c.macs > 0 && c.params > 0 && c.elementwise > 0, "{c:?}");
    let base = Cost { macs: 90, elementwise: 10, params: 50 };
    let pruned = Cost { macs: 20, elementwise: 5, params: 10 };
    let r = Reduction { base, pruned };
    assert!((r.flops_percent() - 75.0).abs() < 1e-12 && (r.params_percent() - 80.0).abs() < 1e-12);
}

/// The parser at its limits: a sum of exactly `layers` rates is accepted, one more is refused
/// with the right count; empty lists, zero repeats and many sequential groups parse.
#[test]
fn rate_lists_at_their_limits() {
    assert_eq!(parse_cprate_at_most("[0.1]*2+[0.2]*2", 4).unwrap(), [0.1, 0.1, 0.2, 0.2]);
    let e = parse_cprate_at_most("[0.1]+[0.2]*4", 4).unwrap_err().to_string();
    assert!(e.contains("expands to 5 rates"), "{e}");
    let e = parse_cprate_at_most("[0.1]*3+[0.2]*2", 4).unwrap_err().to_string();
    assert!(e.contains("expands to 5 rates"), "{e}");
    assert_eq!(parse_cprate("[]*3+[0.5]").unwrap(), [0.5]);
    assert_eq!(parse_cprate("[ ]+[0.5]").unwrap(), [0.5]);
    assert_eq!(parse_cprate("[0.1]*0+[0.2]").unwrap(), [0.2]);
    let many = vec!["([0.3])"; compress_prune::rates::MAX_DEPTH + 5].join("+");
    assert_eq!(parse_cprate(&many).unwrap().len(), compress_prune::rates::MAX_DEPTH + 5);
    let e = parse_cprate("]").unwrap_err().to_string();
    assert!(e.contains("expected '[', '(' or a number"), "{e}");
}

/// A group produced by a linear layer (VGG's hidden classifier) ranks by its rows; a declared
/// network's fixed output group, absent from its widths, is skipped; a wider target names the
/// group.
#[test]
fn linear_producers_declared_networks_and_wider_targets() {
    let cfg = VggConfig::new(&[4, 0], 10).unwrap().input(1, 4).unwrap();
    let net = Network::<Vgg>::new(cfg.clone(), 0, &Device::Cpu).unwrap();
    let rows: Vec<f32> = (0..512).map(|i| ((i * 37) % 512) as f32).collect();
    let w1 = net.tensors().unwrap()["classifier.linear1.weight"].dims().to_vec();
    let net = with_tensor(&net, "classifier.linear1.weight", rows_of(&rows, &w1));
    let kept = magnitude_kept(&net, &cfg.with_widths([("hidden".to_string(), 3)].into()).unwrap()).unwrap();
    assert_eq!(kept["hidden"], top_k(&rows, 3).unwrap());
    assert_ne!(kept["hidden"], [0, 1, 2]);

    #[derive(Debug)]
    struct Declared(compress_nn::layers::ConvBn, compress_nn::layers::Linear);
    impl compress_nn::Architecture for Declared {
        type Config = compress_nn::stack::StackConfig;
        fn build(cfg: &Self::Config, vb: candle_nn::VarBuilder) -> candle_core::Result<Self> {
            use compress_nn::layers::{Activation, ConvBn, ConvSpec, Linear};
            let a = cfg.width("a")?;
            Ok(Self(
                ConvBn::new(1, a, ConvSpec::same(3), Activation::Relu, vb.pp("a"), vb.pp("a_bn"))?,
                Linear::new(a, 3, true, vb.pp("fc"))?,
            ))
        }
    }
    impl candle_core::ModuleT for Declared {
        fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
            let h = compress_nn::layers::global_avg_pool(&self.0.forward_t(x, train)?)?;
            candle_core::Module::forward(&self.1, &h)
        }
    }
    let s = Stack::new([1, 8, 8]).conv("a", 4).norm("a_bn").output("fc", 3).bias().build().unwrap();
    let dnet = Network::<Declared>::new(s.clone(), 0, &Device::Cpu).unwrap();
    let kept = magnitude_kept(&dnet, &s.with_widths([("a".to_string(), 2)].into()).unwrap()).unwrap();
    assert_eq!(kept.keys().collect::<Vec<_>>(), ["a"]);
    let narrow =
        Network::<Declared>::new(s.with_widths([("a".to_string(), 2)].into()).unwrap(), 0, &Device::Cpu).unwrap();
    let e = magnitude_kept(&narrow, &s).unwrap_err().to_string();
    assert!(e.contains("cannot go from 2 to 4"), "{e}");
}
