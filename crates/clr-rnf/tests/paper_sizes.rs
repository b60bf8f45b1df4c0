//! The paper profile's deterministic checks: the unpruned networks' sizes as the official table
//! counts them, and CLR-RNF's plans on every row's network (random weights) well-formed.
#![allow(clippy::unwrap_used)] // helpers of tests, not library code

use clr_rnf::paper::{PaperModel, paper_rows, row_costs};
use clr_rnf::{ClrCandidates, ClrRnfSettings, prune};
use compress_nn::zoo::{ResNet, ResNetConfig};
use compress_nn::{ArchConfig, Network};

#[test]
fn unpruned_sizes_match_the_table_and_plans_shrink() {
    for row in paper_rows().unwrap().iter().filter(|r| !matches!(r.model, PaperModel::ResNet(_))) {
        let (base, pruned) = row_costs(row, 0).unwrap();
        let m = |x: u64| x as f64 / 1e6;
        assert!((m(base.params) - row.base.0).abs() <= 0.005 + 1e-9, "{}: {} params", row.name, base.params);
        // Within 0.01 %: the official counter's VGG-16 314.04 M is 314.031 M here (its classifier
        // or pooling counted a few thousand operations apart).
        let f = m(base.pruning_flops());
        assert!((f / row.base.1 - 1.0).abs() < 1e-4, "{}: {f} M FLOPs", row.name);
        assert!(pruned.pruning_flops() < base.pruning_flops() && pruned.params < base.params, "{}", row.name);
    }
}

/// ResNet-50 at rho 0.44: the stem, every conv3, every downsample and the stage's BatchNorms share
/// `int(C (1 - b_s))`, and the pruned network runs.
#[test]
fn resnet50_stage_widths_follow_the_stage_ratio() {
    let cfg = ResNetConfig::resnet50(1000).unwrap();
    let rows = paper_rows().unwrap();
    let row = rows.iter().find(|r| r.name == "ResNet-50 IN" && r.pr_target == 0.44).unwrap();
    let (base, _) = row_costs(row, 0).unwrap();
    assert!((base.params as f64 / 1e6 - 25.56).abs() < 0.005, "{}", base.params);
    let net = Network::<ResNet>::new(cfg.clone().input(3, 64), 0, &candle_core::Device::Cpu).unwrap();
    let p = prune(&net, &ClrRnfSettings::new(0.44, 0.4), 0).unwrap();
    let b1 = p.plan.ranking.layers.iter().find(|l| l.name == "stage1").unwrap().prune_ratio;
    let w = p.network.config.widths();
    assert_eq!(w["stem"], ((64.0 * (1.0 - b1)).floor() as usize).max(1));
    assert_eq!(w["stage1"], ((256.0 * (1.0 - b1)).floor() as usize).max(1));
    let t = p.network.tensors().unwrap();
    assert_eq!(t["layer1.0.downsample.0.weight"].dims()[0], w["stage1"]);
    assert_eq!(t["layer1.2.conv3.weight"].dims()[0], w["stage1"]);
    assert_eq!(t["conv1.weight"].dims()[0], w["stem"]);
    assert_eq!(cfg.candidates().unwrap().len(), 36);
    let x = candle_core::Tensor::ones((1, 3, 64, 64), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    assert_eq!(p.network.forward_t(&x, false).unwrap().dims(), [1, 1000]);
}
