//! The supernet, its BatchNorm recalibration and deployment as wholes.
#![allow(clippy::unwrap_used)] // helpers of tests, not library code

use candle_core::{DType, Device, Tensor};
use compress_data::batch::Batcher;
use pss_net::{SlimMobileNetV1, SubnetConfig, Supernet, extract, recalibrate};

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap()
}

/// A recalibrated subnet, extracted as a narrow zoo network, gives the supernet's logits at its
/// config; recalibration writes the exact average of the batches' statistics (section 8:
/// momentum 1 / (t + 1) over means 1, 2, 6 gives 3, their average) into the leading entries
/// and leaves the rest of the shared buffers alone.
#[test]
fn a_recalibrated_subnet_deploys_to_the_same_logits() {
    let (train, test) = compress_data::embedded::mnist_5k_digits(Some(300), Some(64)).unwrap();
    let sup = Supernet::new(SlimMobileNetV1::tiny(), 0, &Device::Cpu).unwrap();
    let cfg = SubnetConfig::new(20, &[0.6, 0.8, 0.55, 1.0, 0.75]);
    assert_eq!(sup.arch.space.channels(&cfg), [12, 24, 36, 64, 96]);
    let stem_rm = |sup: &Supernet| sup.net.tensors().unwrap()["stem.bn.running_mean"].to_vec1::<f32>().unwrap();
    let before = stem_rm(&sup);
    assert_eq!(recalibrate(&sup, &cfg, &train, 3, 50, 7).unwrap(), 1 + 2 * 4, "stem + 4 blocks x (dw, pw)");
    // By hand: the stem BatchNorm's input means of the same three batches.
    let b = Batcher::new(50, true, 7, Device::Cpu).unwrap().drop_last(true);
    let mut sum = vec![0f32; 12];
    for batch in b.epoch(&train, 0, 0).unwrap().take(3) {
        let (out, p) = compress_nn::probe::probe(|| sup.forward(&batch.unwrap().images, &cfg, true));
        out.unwrap();
        for (s, m) in sum.iter_mut().zip(p.bn[0].mean.to_vec1::<f32>().unwrap()) {
            *s += m / 3.0;
        }
    }
    let after = stem_rm(&sup);
    assert!(after[..12].iter().zip(&sum).all(|(a, b)| (a - b).abs() < 1e-5), "{after:?} vs {sum:?}");
    assert_ne!(after[..12], before[..12]);
    assert_eq!(after[12..], before[12..], "channels outside the subnet keep their statistics");
    let x =
        Batcher::new(64, false, 0, Device::Cpu).unwrap().epoch(&test, 0, 0).unwrap().next().unwrap().unwrap().images;
    let deployed = extract(&sup, &cfg).unwrap();
    assert_eq!(deployed.net.tensors().unwrap()["blocks.3.pw.conv.weight"].dims(), [96, 64, 1, 1]);
    let want = sup.forward(&x, &cfg, false).unwrap();
    assert_eq!(max_diff(&deployed.forward(&x).unwrap(), &want), 0.0);
    assert_eq!(want.dtype(), DType::F32);
}

/// `select` deploys, for a budget, the costliest bucket's best subnet that fits, recalibrated;
/// saved and reloaded it computes the same logits.
#[test]
fn select_deploys_the_costliest_subnet_within_a_budget() {
    use pss_net::{Budget, PssSchedule, PssSettings, PssState, select};
    let (train, test) = compress_data::embedded::mnist_5k_digits(Some(200), Some(64)).unwrap();
    let sup = Supernet::new(SlimMobileNetV1::tiny(), 1, &Device::Cpu).unwrap();
    let s = PssSettings {
        schedule: PssSchedule::official(1),
        capacity: 3,
        lambda: 0.9,
        buckets: (55.0, 660.0, 55.0),
        n_map: 5_000,
        min_count: 10,
        unit: 1e3,
        random_only: false,
    };
    let state = PssState::new(&sup, &s, 1).unwrap();
    // Fill the pools by hand: two scored subnets per bucket.
    let cost = |c: &SubnetConfig| sup.macs(c) as f64 / 1e3;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    for b in state.sampler.buckets() {
        for score in [-2.0, -1.0] {
            let c = state.sampler.sample(b, &cost, &mut rng).unwrap();
            state.pools.borrow_mut().get_mut(&((b * 1000.0).round() as i64)).unwrap().observe(&c, score);
        }
    }
    let d = select(&sup, &state, Budget::Macs(300_000), &train, 2, 50, 0).unwrap();
    let got = sup.macs(&d.config);
    assert!(got <= 300_000, "{got}");
    let fitting: Vec<u64> = state
        .best()
        .iter()
        .filter_map(|(_, e)| e.as_ref())
        .map(|(c, _)| sup.macs(c))
        .filter(|&m| m <= 300_000)
        .collect();
    assert_eq!(got, *fitting.iter().max().unwrap(), "the costliest fitting bucket's best");
    assert!(select(&sup, &state, Budget::Macs(1_000), &train, 2, 50, 0).is_err(), "nothing fits");
    let x =
        Batcher::new(64, false, 0, Device::Cpu).unwrap().epoch(&test, 0, 0).unwrap().next().unwrap().unwrap().images;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("subnet.safetensors");
    d.net.save(&path).unwrap();
    let back =
        compress_nn::Network::<compress_nn::zoo::MobileNetV1>::load(d.net.config.clone(), &path, &Device::Cpu).unwrap();
    let again = pss_net::Deployed { net: back, config: d.config.clone() };
    assert_eq!(max_diff(&again.forward(&x).unwrap(), &sup.forward(&x, &d.config, false).unwrap()), 0.0);
}

/// The slimmable MobileNetV2 (the zoo's, through its stage, expansion and head groups): a
/// subnet equals its extracted narrow network, and the MACs the layers count equal the spec's
/// formula less the global pool (the spec counts `H^2 C` for it; the layers count convs and the
/// classifier).
#[test]
fn the_slimmable_mobilenet_v2_is_its_narrow_network_and_costs_the_formula() {
    use pss_net::SlimMobileNetV2;
    let arch = SlimMobileNetV2::imagenet();
    let sup = Supernet::new(arch.clone(), 0, &Device::Cpu).unwrap();
    let cfg = SubnetConfig::new(128, &[0.8, 0.9, 0.75, 1.0, 0.85, 0.8, 0.95, 0.77, 1.0]);
    let w = sup.widths(&cfg);
    let c = arch.space.channels(&cfg);
    assert_eq!(c[..3], [24, 16, 24]);
    // Block 2 opens stage 1 on stage 0's 16 channels, block 4 stage 2 on stage 1's 24.
    assert_eq!(
        (w["stem"], w["stage1"], w["features.2.expand"], w["features.4.expand"], w["head"]),
        (24, 24, 96, 144, 1280)
    );
    // Counted at r = 128: the formula's MACs less the pool over the final 4 x 4 x 1280.
    let side = 4;
    assert_eq!(sup.counted_macs(&cfg).unwrap(), arch.macs(&cfg) - (side * side * 1280) as u64);
    let x = Tensor::randn(0f32, 1.0, (2, 3, 160, 160), &Device::Cpu).unwrap();
    let d = extract(&sup, &cfg).unwrap();
    assert_eq!(max_diff(&d.forward(&x).unwrap(), &sup.forward(&x, &cfg, false).unwrap()), 0.0);
    assert_eq!(d.net.tensors().unwrap()["features.2.conv.0.0.weight"].dims(), [96, 16, 1, 1]);
}
