//! Section 8 invariants that join the pieces: the conditional sampler on the mini's space and
//! FLOPs, the in-place distillation loss.
#![allow(clippy::unwrap_used)] // helpers of tests, not library code

use candle_core::{Device, Tensor};
use pss_net::{Bucketizer, ConditionalSampler, SlimMobileNetV1};
use rand::SeedableRng;

/// The mini's map (spec 9): Delta = 55 kMACs, 20,000 draws, buckets strictly inside (55, 660)
/// with at least 50 samples: 110..550 (9 buckets; 605 is too rare and dropped), as the
/// reference run found; every conditional draw lands in its bucket.
#[test]
fn the_conditional_sampler_keeps_to_its_bucket() {
    let net = SlimMobileNetV1::tiny();
    let cost = |c: &pss_net::SubnetConfig| net.macs(c) as f64 / 1e3;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let s =
        ConditionalSampler::build(&net.space, &cost, Bucketizer::new(55.0, 55.0), 20_000, (55.0, 660.0), 50, &mut rng)
            .unwrap();
    let want: Vec<f64> = (2..=10).map(|i| 55.0 * i as f64).collect();
    assert_eq!(s.buckets(), want, "dropped: {:?}", s.dropped);
    assert!(s.dropped.get(&605_000).is_some_and(|&n| n < 50), "{:?}", s.dropped);
    for &b in &want {
        for _ in 0..50 {
            let c = s.sample(b, &cost, &mut rng).unwrap();
            assert_eq!(s.bucketizer().bucket(cost(&c)), b, "{c:?}");
        }
    }
    assert!(s.sample(605.0, &cost, &mut rng).is_err(), "no pool for a dropped bucket");
}

/// In-place distillation is `KL(softmax(z_T) || softmax(z_a))`, batch mean, temperature 1:
/// compress-train's distillation loss at T = 1 (section 8: 0.111085).
#[test]
fn in_place_distillation_is_the_batchmean_kl_of_section_8() {
    let t = Tensor::new(&[[2f32, 0.0, 0.0], [0.0, 1.0, 0.0]], &Device::Cpu).unwrap();
    let s = Tensor::new(&[[1f32, 0.0, 0.0], [0.0, 0.0, 0.0]], &Device::Cpu).unwrap();
    let kl = compress_train::loss::distillation(&s, &t, 1.0).unwrap().to_scalar::<f32>().unwrap();
    assert!((kl - 0.111085).abs() < 1e-6, "{kl}");
}
