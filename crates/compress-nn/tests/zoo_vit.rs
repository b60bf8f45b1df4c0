//! ViT / DeiT: published cost, masked == pruned over heads and MLP units, gradients reach every
//! parameter (LayerNorm and softmax included), position-embedding resampling.
mod common;

use compress_nn::zoo::*;
use compress_nn::{ArchConfig, Network};

#[test]
fn deit_small_matches_the_published_cost() {
    // DeiT-S: 4.6 G MACs ("4.6 GFLOPs" in the paper) and 22.05 M parameters at 224, 1000 classes.
    let c = common::cost_is_consistent::<Vit>(VitConfig::deit_small(1000).expect("cfg"));
    assert!((c.macs as f64 / 4.6e9 - 1.0).abs() < 0.01, "{c:?}");
    assert!((c.params as f64 / 22.05e6 - 1.0).abs() < 0.001, "{c:?}");
}

#[test]
fn vit_masked_equals_pruned_over_heads_and_mlp() {
    common::masked_equals_pruned::<Vit>(VitConfig::mnist_tiny().expect("cfg"), 3);
}

#[test]
fn vit_trains_a_step_with_gradients_everywhere() {
    common::trains_a_step::<Vit>(VitConfig::mnist_tiny().expect("cfg"), |y| y.ones_like().expect("t"));
}

#[test]
fn position_embeddings_resample_to_a_new_grid() {
    let cfg = VitConfig::mnist_tiny().expect("cfg");
    let net = Network::<Vit>::new(cfg.clone(), 0, &candle_core::Device::Cpu).expect("net");
    let (cfg2, t2) = resize_pos_embed(&cfg, &net.tensors().expect("t"), 35).expect("resize");
    assert_eq!(cfg2.tokens(), 26);
    let net2 = Network::<Vit>::from_tensors(cfg2.clone(), &t2, &candle_core::Device::Cpu).expect("net2");
    let y = net2.forward_t(&common::input(&cfg2, 2, 1), false).expect("fwd");
    assert_eq!(y.dims(), &[2, 10]);
    // Same grid: unchanged weights, same outputs.
    let (_, same) = resize_pos_embed(&cfg, &net.tensors().expect("t"), 28).expect("same");
    let a = net.tensors().expect("t")["pos_embed"].flatten_all().expect("f").to_vec1::<f32>().expect("v");
    let b = same["pos_embed"].flatten_all().expect("f").to_vec1::<f32>().expect("v");
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6));
    assert!(resize_pos_embed(&cfg, &net.tensors().expect("t"), 30).is_err());
    assert!(cfg.groups().iter().any(|g| g.name == "embed" && !g.prunable));
}
