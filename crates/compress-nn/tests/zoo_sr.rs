//! EDSR, SRResNet and RDN: published parameter counts, masked == pruned, a training step.
mod common;

use compress_nn::AnalyticCost;
use compress_nn::zoo::*;

fn close(got: u64, published: f64, tol: f64) -> bool {
    (got as f64 / published - 1.0).abs() < tol
}

#[test]
fn published_parameter_counts() {
    // EDSR paper / EDSR-PyTorch: baseline x2 1.37 M, x4 1.52 M; full x2 40.7 M, x4 43.1 M.
    let e = common::cost_is_consistent::<Edsr>(EdsrConfig::baseline(2).expect("cfg"));
    assert!(close(e.params, 1.37e6, 0.005), "{e:?}");
    let e = common::cost_is_consistent::<Edsr>(EdsrConfig::baseline(4).expect("cfg"));
    assert!(close(e.params, 1.518e6, 0.005), "{e:?}");
    let e = EdsrConfig::full(2).expect("cfg").cost();
    assert!(close(e.params, 40.7e6, 0.005), "{e:?}");
    let e = EdsrConfig::full(4).expect("cfg").cost();
    assert!(close(e.params, 43.1e6, 0.005), "{e:?}");
    // RDN (config B): about 22 M parameters at x2 (22.1 M in EDSR-PyTorch's count).
    let r = RdnConfig::config_b(2).expect("cfg").cost();
    assert!(close(r.params, 22.1e6, 0.01), "{r:?}");
    // SRResNet (16 x 64, x4): about 1.5 M parameters.
    let s = common::cost_is_consistent::<SrResNet>(SrResNetConfig::paper(4).expect("cfg"));
    assert!(close(s.params, 1.55e6, 0.02), "{s:?}");
}

#[test]
fn sr_masked_equals_pruned() {
    let small = |c: EdsrConfig| c.with_setting(12, 1.0);
    common::masked_equals_pruned::<Edsr>(small(EdsrConfig::new(2, 3, 16, 0.1).expect("cfg")), 1);
    common::masked_equals_pruned::<Edsr>(small(EdsrConfig::new(4, 2, 8, 1.0).expect("cfg")), 1);
    common::masked_equals_pruned::<Edsr>(small(EdsrConfig::new(3, 2, 8, 1.0).expect("cfg")), 1);
    common::masked_equals_pruned::<SrResNet>(SrResNetConfig::new(4, 2, 8).expect("cfg"), 1);
    common::masked_equals_pruned::<Rdn>(RdnConfig::new(2, 2, 3, 6, 8).expect("cfg"), 2);
    common::masked_equals_pruned::<Rdn>(RdnConfig::new(4, 2, 2, 4, 6).expect("cfg"), 1);
}

#[test]
fn sr_models_train_a_step_and_upscale() {
    let t = |y: &candle_core::Tensor| y.zeros_like().expect("t");
    let e = EdsrConfig::new(2, 4, 32, 1.0).expect("cfg").with_setting(16, 1.0);
    common::cost_is_consistent::<Edsr>(e.clone());
    common::trains_a_step::<Edsr>(e.clone(), t);
    let net = compress_nn::Network::<Edsr>::new(e, 0, &candle_core::Device::Cpu).expect("net");
    let y = net.forward_t(&common::input(&net.config, 1, 0), false).expect("fwd");
    assert_eq!(y.dims(), &[1, 3, 32, 32]);
    common::trains_a_step::<SrResNet>(SrResNetConfig::new(4, 2, 16).expect("cfg"), t);
    let r = RdnConfig::new(3, 2, 3, 8, 16).expect("cfg");
    common::cost_is_consistent::<Rdn>(r.clone());
    common::trains_a_step::<Rdn>(r, t);
    assert!(EdsrConfig::baseline(5).is_err());
}
