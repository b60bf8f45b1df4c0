//! pytorchcv's checkpoints: the zoo's models in pytorchcv's layout have pytorchcv's parameter
//! counts (published in its model table), its names map one to one, and a file written in those
//! names (with `num_batches_tracked` and a 1x1-conv classifier) loads into the same network.
#![allow(clippy::unwrap_used)]

use candle_core::{Device, Tensor};
use compress_nn::pytorchcv::{Family, load};
use compress_nn::zoo::{
    MobileNetV1, MobileNetV1Config, MobileNetV2, MobileNetV2Config, RegNet, RegNetConfig, ResNet, ResNetCifar,
    ResNetCifarConfig, ResNetConfig, Shortcut,
};
use compress_nn::{Architecture, Network, NnError};
use std::collections::{HashMap, HashSet};

fn resnet20(classes: usize) -> ResNetCifarConfig {
    ResNetCifarConfig::new(20, classes).unwrap().with_shortcut(Shortcut::B)
}

#[test]
fn parameter_counts_equal_pytorchcv() {
    let d = Device::Cpu;
    // pytorchcv's model table: resnet20_cifar10 272,474; resnet20_cifar100 278,324; resnet18
    // 11,689,512; mobilenet_w1 4,231,976; mobilenetv2_w1 3,504,960; regnetx006 6,196,040.
    assert_eq!(Network::<ResNetCifar>::new(resnet20(10), 0, &d).unwrap().count_params().unwrap(), 272_474);
    assert_eq!(Network::<ResNetCifar>::new(resnet20(100), 0, &d).unwrap().count_params().unwrap(), 278_324);
    let r18 = Network::<ResNet>::new(ResNetConfig::resnet18(1000).unwrap(), 0, &d).unwrap();
    assert_eq!(r18.count_params().unwrap(), 11_689_512);
    let v1 = Network::<MobileNetV1>::new(MobileNetV1Config::new(1.0, 1000).unwrap(), 0, &d).unwrap();
    assert_eq!(v1.count_params().unwrap(), 4_231_976);
    let v2 = MobileNetV2Config::new(1.0, 1000).unwrap();
    assert_eq!(Network::<MobileNetV2>::new(v2.clone(), 0, &d).unwrap().count_params().unwrap(), 3_504_872);
    assert_eq!(Network::<MobileNetV2>::new(v2.pytorchcv(), 0, &d).unwrap().count_params().unwrap(), 3_504_960);
    let x600 = Network::<RegNet>::new(RegNetConfig::x600mf(1000).unwrap(), 0, &d).unwrap();
    assert_eq!(x600.count_params().unwrap(), 6_196_040);
}

#[test]
fn names_follow_pytorchcv_layout() {
    let cases = [
        (Family::ResNetCifar, "conv1.weight", "features.init_block.conv.weight"),
        (Family::ResNetCifar, "bn1.running_var", "features.init_block.bn.running_var"),
        (Family::ResNetCifar, "layer1.0.conv1.weight", "features.stage1.unit1.body.conv1.conv.weight"),
        (Family::ResNetCifar, "layer3.2.bn2.bias", "features.stage3.unit3.body.conv2.bn.bias"),
        (Family::ResNetCifar, "layer2.0.shortcut.0.weight", "features.stage2.unit1.identity_conv.conv.weight"),
        (
            Family::ResNetCifar,
            "layer2.0.shortcut.1.running_mean",
            "features.stage2.unit1.identity_conv.bn.running_mean",
        ),
        (Family::ResNetCifar, "fc.bias", "output.bias"),
        (Family::ResNet, "conv1.weight", "features.init_block.conv.conv.weight"),
        (Family::ResNet, "bn1.weight", "features.init_block.conv.bn.weight"),
        (Family::ResNet, "layer4.1.conv2.weight", "features.stage4.unit2.body.conv2.conv.weight"),
        (Family::ResNet, "layer3.0.downsample.1.weight", "features.stage3.unit1.identity_conv.bn.weight"),
        (Family::ResNet, "fc.weight", "output.weight"),
        (Family::MobileNetV1, "stem.conv.weight", "features.init_block.conv.weight"),
        (Family::MobileNetV1, "blocks.0.dw.conv.weight", "features.stage1.unit1.dw_conv.conv.weight"),
        (Family::MobileNetV1, "blocks.2.pw.bn.bias", "features.stage2.unit2.pw_conv.bn.bias"),
        (Family::MobileNetV1, "blocks.10.dw.bn.running_mean", "features.stage4.unit6.dw_conv.bn.running_mean"),
        (Family::MobileNetV1, "blocks.12.pw.conv.weight", "features.stage5.unit2.pw_conv.conv.weight"),
        (Family::MobileNetV1, "fc.weight", "output.weight"),
        (Family::MobileNetV2, "features.0.0.weight", "features.init_block.conv.weight"),
        (Family::MobileNetV2, "features.1.conv.0.0.weight", "features.stage1.unit1.conv1.conv.weight"),
        (Family::MobileNetV2, "features.1.conv.3.bias", "features.stage1.unit1.conv3.bn.bias"),
        (Family::MobileNetV2, "features.4.conv.1.0.weight", "features.stage3.unit1.conv2.conv.weight"),
        (Family::MobileNetV2, "features.11.conv.2.weight", "features.stage4.unit5.conv3.conv.weight"),
        (Family::MobileNetV2, "features.17.conv.1.1.weight", "features.stage5.unit4.conv2.bn.weight"),
        (Family::MobileNetV2, "features.18.1.running_var", "features.final_block.bn.running_var"),
        (Family::MobileNetV2, "classifier.1.weight", "output.weight"),
        (Family::RegNet, "stem.0.weight", "features.init_block.conv.weight"),
        (Family::RegNet, "stem.1.running_mean", "features.init_block.bn.running_mean"),
        (Family::RegNet, "trunk_output.block1.block1-0.f.a.0.weight", "features.stage1.unit1.body.conv1.conv.weight"),
        (Family::RegNet, "trunk_output.block2.block2-2.f.b.1.bias", "features.stage2.unit3.body.conv2.bn.bias"),
        (Family::RegNet, "trunk_output.block4.block4-6.f.c.0.weight", "features.stage4.unit7.body.conv3.conv.weight"),
        (Family::RegNet, "trunk_output.block3.block3-0.proj.1.weight", "features.stage3.unit1.identity_conv.bn.weight"),
        (Family::RegNet, "fc.bias", "output.bias"),
    ];
    for (family, ours, theirs) in cases {
        assert_eq!(family.name(ours), theirs, "{family:?} {ours}");
    }
}

/// Every zoo tensor maps to a distinct pytorchcv name under `features.` / `output.`.
fn assert_bijective<A: Architecture>(family: Family, cfg: A::Config) {
    let net = Network::<A>::new(cfg, 0, &Device::Cpu).unwrap();
    let names: Vec<String> = net.tensors().unwrap().keys().map(|k| family.name(k)).collect();
    let distinct: HashSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "{family:?}");
    for n in &names {
        assert!(n.starts_with("features.") || n.starts_with("output."), "{family:?}: {n} unmapped");
    }
}

#[test]
fn every_tensor_maps_one_to_one() {
    assert_bijective::<ResNetCifar>(Family::ResNetCifar, resnet20(10));
    assert_bijective::<ResNet>(Family::ResNet, ResNetConfig::resnet18(10).unwrap().input(3, 32));
    assert_bijective::<MobileNetV1>(Family::MobileNetV1, MobileNetV1Config::new(0.25, 10).unwrap().input(3, 32));
    assert_bijective::<MobileNetV2>(
        Family::MobileNetV2,
        MobileNetV2Config::new(0.25, 10).unwrap().input(3, 32).pytorchcv(),
    );
    assert_bijective::<RegNet>(Family::RegNet, RegNetConfig::x600mf(10).unwrap().input(3, 32));
}

/// Writes `net`'s tensors in pytorchcv's names (plus `num_batches_tracked`, and the classifier
/// as a 1x1 conv when `conv_head`), loads them back, and compares the outputs.
fn roundtrip<A: Architecture>(family: Family, cfg: A::Config, conv_head: bool) {
    let d = Device::Cpu;
    let net = Network::<A>::new(cfg.clone(), 7, &d).unwrap();
    let mut file = HashMap::new();
    for (k, t) in net.tensors().unwrap() {
        let theirs = family.name(&k);
        let t = match (conv_head && theirs == "output.weight", t.dims()) {
            (true, &[o, i]) => t.reshape((o, i, 1, 1)).unwrap(),
            _ => t,
        };
        if let Some(p) = theirs.strip_suffix(".running_mean") {
            file.insert(format!("{p}.num_batches_tracked"), Tensor::new(&[5i64], &d).unwrap());
        }
        file.insert(theirs, t);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    candle_core::safetensors::save(&file, &path).unwrap();
    let back = load::<A>(family, &path, cfg.clone(), &d).unwrap();
    let [c, h, w] = compress_nn::ArchConfig::input_shape(&cfg);
    let x = Tensor::randn(0f32, 1.0, (2, c, h, w), &d).unwrap();
    let (a, b) = (net.forward_t(&x, false).unwrap(), back.forward_t(&x, false).unwrap());
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(diff, 0.0, "{family:?}");

    // The zoo's own names load too.
    let own = dir.path().join("own.safetensors");
    net.save(&own).unwrap();
    load::<A>(family, &own, cfg.clone(), &d).unwrap();

    // A missing tensor is named in both namings.
    file.remove("output.weight");
    candle_core::safetensors::save(&file, &path).unwrap();
    let Err(e) = load::<A>(family, &path, cfg, &d) else { panic!("{family:?}: loaded without output.weight") };
    assert!(e.to_string().contains("output.weight") && e.to_string().contains("ours:"), "{e}");
}

#[test]
fn files_in_pytorchcv_names_load_into_the_zoo() {
    roundtrip::<ResNetCifar>(Family::ResNetCifar, resnet20(10).input(3, 16), false);
    roundtrip::<ResNet>(Family::ResNet, ResNetConfig::resnet18(10).unwrap().input(3, 32), false);
    roundtrip::<MobileNetV1>(Family::MobileNetV1, MobileNetV1Config::new(0.25, 10).unwrap().input(3, 32), false);
    roundtrip::<MobileNetV2>(
        Family::MobileNetV2,
        MobileNetV2Config::new(0.25, 10).unwrap().input(3, 32).pytorchcv(),
        true,
    );
    roundtrip::<RegNet>(Family::RegNet, RegNetConfig::x600mf(10).unwrap().input(3, 32), false);
}

#[test]
fn a_missing_file_says_how_to_make_it() {
    let e = load::<ResNetCifar>(
        Family::ResNetCifar,
        std::path::Path::new("nope/w.safetensors"),
        resnet20(10),
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(&e, NnError::File { .. }) && e.to_string().contains("convert_pytorchcv"), "{e}");
}
