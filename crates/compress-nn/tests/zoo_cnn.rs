//! VGG, ImageNet ResNets, MobileNets and RegNetX: published costs, masked == pruned, a training step.
mod common;

use compress_nn::zoo::*;

fn close(got: u64, published: f64, tol: f64) -> bool {
    (got as f64 / published - 1.0).abs() < tol
}

#[test]
fn published_costs() {
    // VGG-16 (CIFAR, HRank/DCFF tables): 313.73 M MACs, 14.98 M params.
    let v = common::cost_is_consistent::<Vgg>(VggConfig::vgg16(10).expect("cfg"));
    assert!(close(v.macs, 313.73e6, 0.005) && close(v.params, 14.98e6, 0.005), "{v:?}");
    // VGG-16 with one linear head (DCFF / CLR-RNF READMEs): 14.73 M params and 314.04 M "FLOPs",
    // which are MACs plus bias and BatchNorm element-wise operations (Cost::pruning_flops).
    let cfg = VggConfig::vgg16(10).expect("cfg").single_linear();
    let v = common::cost_is_consistent::<Vgg>(cfg.clone());
    assert!(close(v.macs, 313.2e6, 0.001) && close(v.params, 14.73e6, 0.001), "{v:?}");
    let counted = compress_nn::Network::<Vgg>::new(cfg, 0, &candle_core::Device::Cpu)
        .expect("net")
        .counted_cost()
        .expect("count");
    assert!(close(counted.pruning_flops(), 314.04e6, 0.0001), "{counted:?}");
    // ResNet-50 (torchvision, 224): 4.11 G MACs ("4.1 GFLOPs" in the papers), 25.56 M params.
    let r = common::cost_is_consistent::<ResNet>(ResNetConfig::resnet50(1000).expect("cfg"));
    assert!(close(r.macs, 4.11e9, 0.01) && close(r.params, 25.557e6, 0.001), "{r:?}");
    // ResNet-18: 1.82 G MACs, 11.69 M params.
    let r = common::cost_is_consistent::<ResNet>(ResNetConfig::resnet18(1000).expect("cfg"));
    assert!(close(r.macs, 1.82e9, 0.01) && close(r.params, 11.69e6, 0.001), "{r:?}");
    // MobileNetV2 1.0: 300 M MACs, 3.50 M params.
    let m = common::cost_is_consistent::<MobileNetV2>(MobileNetV2Config::new(1.0, 1000).expect("cfg"));
    assert!(close(m.macs, 300.8e6, 0.01) && close(m.params, 3.505e6, 0.001), "{m:?}");
    // The small-input variant (stride-1 stem) counts what it computes.
    common::cost_is_consistent::<MobileNetV2>(MobileNetV2Config::new(0.5, 10).expect("cfg").input(1, 28).small_input());
    // MobileNetV1 1.0: 569 M MACs, 4.2 M params (4.23 M).
    let m = common::cost_is_consistent::<MobileNetV1>(MobileNetV1Config::new(1.0, 1000).expect("cfg"));
    assert!(close(m.macs, 569e6, 0.01) && close(m.params, 4.23e6, 0.01), "{m:?}");
    // RegNetX-600MF (pycls / torchvision: 0.60 G MACs; pytorchcv: 6,196,040 params).
    let r = common::cost_is_consistent::<RegNet>(RegNetConfig::x600mf(1000).expect("cfg"));
    assert!(close(r.macs, 600.9e6, 0.001) && r.params == 6_196_040, "{r:?}");
}

#[test]
fn regnet_widths_follow_the_quantized_linear_rule() {
    use compress_nn::zoo::regnet::stage_plan;
    // Published stage widths / depths (pycls model zoo, torchvision): X-200MF, X-400MF,
    // X-600MF, X-800MF, X-1.6GF.
    let plan = |w0, wa, wm, d, g| stage_plan(w0, wa, wm, d, g).expect("plan");
    assert_eq!(plan(24.0, 36.44, 2.49, 13, 8), (vec![24, 56, 152, 368], vec![1, 1, 4, 7], vec![8; 4]));
    assert_eq!(plan(24.0, 24.48, 2.54, 22, 16), (vec![32, 64, 160, 384], vec![1, 2, 7, 12], vec![16; 4]));
    assert_eq!(plan(48.0, 36.97, 2.24, 16, 24), (vec![48, 96, 240, 528], vec![1, 3, 5, 7], vec![24; 4]));
    assert_eq!(plan(56.0, 35.73, 2.28, 16, 16), (vec![64, 128, 288, 672], vec![1, 3, 7, 5], vec![16; 4]));
    assert_eq!(plan(80.0, 34.01, 2.25, 18, 24), (vec![72, 168, 408, 912], vec![2, 4, 10, 2], vec![24; 4]));
    assert!(stage_plan(50.0, 36.97, 2.24, 16, 24).is_err(), "w_0 not a multiple of 8");
    assert!(stage_plan(48.0, 36.97, 1.0, 16, 24).is_err(), "w_m must exceed 1");
    assert!(RegNetConfig::new(&[48, 100], &[1, 2], &[24, 24], 10).is_err(), "100 is not a multiple of 24");
    let cfg = RegNetConfig::x600mf(10).expect("cfg");
    let mut w = compress_nn::ArchConfig::widths(&cfg).clone();
    w.insert("trunk_output.block2.block2-1.inner".into(), 50);
    assert!(compress_nn::ArchConfig::with_widths(&cfg, w).is_err(), "an inner width must fill its groups");
}

#[test]
fn regnet_masked_equals_pruned() {
    common::masked_equals_pruned::<RegNet>(RegNetConfig::x600mf(10).expect("cfg").input(3, 64), 2);
}

#[test]
fn vgg_masked_equals_pruned() {
    common::masked_equals_pruned::<Vgg>(VggConfig::vgg16(10).expect("cfg"), 1);
    common::masked_equals_pruned::<Vgg>(VggConfig::vgg19(10).expect("cfg"), 1);
    common::masked_equals_pruned::<Vgg>(VggConfig::vgg16(10).expect("cfg").single_linear(), 1);
}

#[test]
fn resnets_masked_equal_pruned() {
    common::masked_equals_pruned::<ResNet>(ResNetConfig::resnet18(10).expect("cfg").input(3, 64), 1);
    common::masked_equals_pruned::<ResNet>(ResNetConfig::resnet50(10).expect("cfg").input(3, 64), 1);
}

#[test]
fn mobilenets_masked_equal_pruned() {
    common::masked_equals_pruned::<MobileNetV1>(MobileNetV1Config::new(0.25, 10).expect("cfg").input(3, 64), 1);
    common::masked_equals_pruned::<MobileNetV2>(MobileNetV2Config::new(0.5, 10).expect("cfg").input(3, 64), 1);
}

#[test]
fn every_cnn_trains_a_step_on_mnist_shape() {
    let t = |y: &candle_core::Tensor| y.ones_like().expect("t");
    common::trains_a_step::<Vgg>(VggConfig::vgg16(10).expect("cfg").input(1, 32).expect("32"), t);
    common::trains_a_step::<ResNet>(ResNetConfig::resnet18(10).expect("cfg").input(1, 28), t);
    common::trains_a_step::<ResNet>(ResNetConfig::resnet34(10).expect("cfg").input(1, 28), t);
    common::trains_a_step::<ResNet>(ResNetConfig::resnet50(10).expect("cfg").input(1, 28), t);
    common::trains_a_step::<MobileNetV1>(MobileNetV1Config::new(0.25, 10).expect("cfg").input(1, 28), t);
    common::trains_a_step::<MobileNetV2>(MobileNetV2Config::new(0.5, 10).expect("cfg").input(1, 28), t);
    common::trains_a_step::<RegNet>(RegNetConfig::x600mf(10).expect("cfg").input(1, 28), t);
    assert!(VggConfig::vgg16(10).expect("cfg").input(1, 28).is_err(), "28 does not survive 5 pools");
}

/// Permuting every prunable group's channels leaves the function unchanged (1xN filter
/// rearrangement's deployment step), on MobileNetV2 (depthwise convs between producer and
/// consumer) and ResNet-50 (residual stages with projections).
fn permutation_is_invariant<A: compress_nn::Architecture>(cfg: A::Config) {
    use compress_nn::ArchConfig;
    let net = compress_nn::Network::<A>::new(cfg.clone(), 5, &candle_core::Device::Cpu).expect("net");
    let x = common::input(&cfg, 2, 3);
    net.forward_t(&x, true).expect("train-mode pass moves the statistics");
    let before = net.forward_t(&x, false).expect("fwd");
    assert!(net.permuted("none", &[]).is_err(), "unknown group");
    let mut current =
        compress_nn::Network::<A>::from_tensors(cfg.clone(), &net.tensors().expect("t"), &candle_core::Device::Cpu)
            .expect("copy");
    for (p, g) in (1..).zip(cfg.groups().into_iter().filter(|g| g.prunable)) {
        // A fixed pseudo-random permutation per group.
        let mut perm: Vec<usize> = (0..g.width).collect();
        perm.sort_by_key(|&i| (i * 7919 + p) % (g.width * 13 + 1));
        current = current.permuted(&g.name, &perm).expect("permute");
    }
    let (t0, t1) = (net.tensors().expect("t"), current.tensors().expect("t"));
    let moved = t0.iter().filter(|(k, v)| {
        let d = (*v - &t1[*k]).expect("d").abs().expect("a").sum_all().expect("s").to_scalar::<f32>().expect("v");
        d > 0.0
    });
    assert!(moved.count() > 10, "the permutations must move weights");
    let after = current.forward_t(&x, false).expect("fwd");
    let d = (before - after).expect("d").abs().expect("a").max_all().expect("m").to_scalar::<f32>().expect("s");
    assert!(d < 1e-4, "permuted network differs by {d}");
}

#[test]
fn channel_permutations_leave_the_function_unchanged() {
    permutation_is_invariant::<MobileNetV2>(MobileNetV2Config::new(0.5, 10).expect("cfg").input(3, 32));
    permutation_is_invariant::<ResNet>(ResNetConfig::resnet50(10).expect("cfg").input(3, 64));
    permutation_is_invariant::<RegNet>(RegNetConfig::x600mf(10).expect("cfg").input(3, 32));
    let net =
        compress_nn::Network::<ResNet>::new(ResNetConfig::resnet18(10).expect("cfg"), 0, &candle_core::Device::Cpu)
            .expect("net");
    assert!(net.permuted("stage1", &[0, 0]).is_err(), "not a permutation");
}

/// Half-precision inference: a network cast to bf16 / f16 keeps its structure and dtype and
/// agrees with the f32 network (logits within half precision's error, the same top-1), on every
/// device present.
#[test]
fn half_precision_inference_agrees_with_f32() {
    use candle_core::DType;
    for dev in compress_core::gpu::test_devices() {
        let cfg = ResNetConfig::resnet18(10).expect("cfg").input(3, 32);
        let net = compress_nn::Network::<ResNet>::new(cfg.clone(), 3, &dev).expect("net");
        let x = common::input(&cfg, 4, 9).to_device(&dev).expect("dev");
        net.forward_t(&x, true).expect("statistics move");
        let want = net.forward_t(&x, false).expect("f32");
        // candle's CPU matmul has no bf16 (its gemm does f16): bf16 runs on GPUs only.
        let dtypes: &[DType] = if dev.is_cpu() { &[DType::F16] } else { &[DType::BF16, DType::F16] };
        for &dtype in dtypes {
            let half = net.to_dtype(dtype).expect("cast");
            assert!(half.tensors().expect("t").values().all(|t| t.dtype() == dtype));
            let got = half.forward_t(&x.to_dtype(dtype).expect("x"), false).expect("half forward");
            assert_eq!(got.dtype(), dtype);
            let got = got.to_dtype(DType::F32).expect("f32");
            let d = (&got - &want).expect("d").abs().expect("a").max_all().expect("m").to_scalar::<f32>().expect("s");
            let scale = want.abs().expect("a").max_all().expect("m").to_scalar::<f32>().expect("s");
            assert!(d <= 0.05 * scale.max(1e-3), "{dev:?} {dtype:?}: {d} of {scale}");
            let top = |t: &candle_core::Tensor| t.argmax(1).expect("argmax").to_vec1::<u32>().expect("v");
            assert_eq!(top(&got), top(&want), "{dev:?} {dtype:?}");
        }
        let back = net.to_dtype(DType::F16).expect("f16").to_dtype(DType::F32).expect("f32");
        assert!(back.tensors().expect("t").values().all(|t| t.dtype() == DType::F32));
    }
}
