//! safetensors I/O with errors that name the tensor; pretrained loading through hf-hub's cache.

use candle_core::{DType, Device, Tensor};
use compress_nn::zoo::{MobileNetV2, MobileNetV2Config, ResNetCifar, ResNetCifarConfig};
use compress_nn::{ArchConfig, Network, NnError};
use std::collections::HashMap;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).expect("d").abs().expect("abs").max_all().expect("m").to_scalar::<f32>().expect("s")
}

fn cfg() -> ResNetCifarConfig {
    ResNetCifarConfig::new(8, 10).expect("cfg").input(1, 12)
}

#[test]
fn save_load_roundtrip_is_exact_and_atomic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.safetensors");
    let net = Network::<ResNetCifar>::new(cfg(), 3, &Device::Cpu).expect("net");
    net.save(&path).expect("save");
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1, "a temporary was left beside the weights");
    let back = Network::<ResNetCifar>::load(cfg(), &path, &Device::Cpu).expect("load");
    let x = Tensor::ones((2, 1, 12, 12), DType::F32, &Device::Cpu).expect("x");
    assert_eq!(max_abs_diff(&net.forward_t(&x, false).expect("a"), &back.forward_t(&x, false).expect("b")), 0.0);
}

fn write(tensors: &HashMap<String, Tensor>, dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("bad.safetensors");
    candle_core::safetensors::save(tensors, &p).expect("save");
    p
}

#[test]
fn missing_misshapen_and_mistyped_tensors_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = Network::<ResNetCifar>::new(cfg(), 3, &Device::Cpu).expect("net");
    let good = net.tensors().expect("t");

    let mut t = good.clone();
    t.remove("layer2.0.conv1.weight");
    let e = Network::<ResNetCifar>::load(cfg(), &write(&t, dir.path()), &Device::Cpu).expect_err("missing");
    assert!(matches!(&e, NnError::MissingTensor { name, .. } if name == "layer2.0.conv1.weight"), "{e}");

    let mut t = good.clone();
    t.insert("fc.weight".into(), Tensor::zeros((10, 63), DType::F32, &Device::Cpu).expect("z"));
    let e = Network::<ResNetCifar>::load(cfg(), &write(&t, dir.path()), &Device::Cpu).expect_err("shape");
    assert!(e.to_string().contains("fc.weight") && e.to_string().contains("[10, 63]"), "{e}");

    let mut t = good.clone();
    t.insert("bn1.bias".into(), good["bn1.bias"].to_dtype(DType::F16).expect("f16"));
    let e = Network::<ResNetCifar>::load(cfg(), &write(&t, dir.path()), &Device::Cpu).expect_err("dtype");
    assert!(matches!(&e, NnError::DtypeMismatch { name, .. } if name == "bn1.bias"), "{e}");

    let p = dir.path().join("trunc.safetensors");
    let bytes = std::fs::read(write(&good, dir.path())).expect("r");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("w");
    let e = Network::<ResNetCifar>::load(cfg(), &p, &Device::Cpu).expect_err("truncated");
    assert!(e.to_string().contains("trunc.safetensors"), "{e}");
}

#[test]
fn pretrained_weights_load_through_hf_hub_cache_with_timm_names() {
    // A small MobileNetV2 saved under timm's names, placed in hf-hub's cache layout:
    // <cache>/models--timm--mobilenetv2_100.ra_in1k/{refs/main, snapshots/<commit>/model.safetensors}.
    let config = MobileNetV2Config::new(0.25, 1000).expect("cfg").input(3, 32);
    let src = Network::<MobileNetV2>::new(config.clone(), 9, &Device::Cpu).expect("net");
    let timm: HashMap<String, Tensor> = src
        .tensors()
        .expect("t")
        .into_iter()
        .map(|(k, v)| (compress_nn::pretrained::mobilenetv2_timm_name(&k), v))
        .collect();
    assert!(timm.contains_key("blocks.6.0.conv_pwl.weight") && timm.contains_key("conv_head.weight"));
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("models--timm--mobilenetv2_100.ra_in1k");
    std::fs::create_dir_all(repo.join("refs")).expect("mkdir");
    std::fs::write(repo.join("refs/main"), "abc123").expect("ref");
    std::fs::create_dir_all(repo.join("snapshots/abc123")).expect("mkdir");
    candle_core::safetensors::save(&timm, repo.join("snapshots/abc123/model.safetensors")).expect("save");

    let p = compress_nn::pretrained::find("mobilenetv2").expect("known");
    // An endpoint where nothing listens: only the cache can answer.
    let net = compress_nn::pretrained::load::<MobileNetV2>(
        &p,
        config.clone(),
        Some(dir.path()),
        Some("http://127.0.0.1:1"),
        &Device::Cpu,
    )
    .expect("from cache");
    let x = Tensor::ones((1, 3, 32, 32), DType::F32, &Device::Cpu).expect("x");
    assert_eq!(max_abs_diff(&src.forward_t(&x, false).expect("a"), &net.forward_t(&x, false).expect("b")), 0.0);
    assert_eq!(net.config.widths(), config.widths());

    // Not in the cache and no network: a clear error naming the repository.
    let p = compress_nn::pretrained::find("resnet50").expect("known");
    let e = compress_nn::pretrained::load::<compress_nn::zoo::ResNet>(
        &p,
        compress_nn::zoo::ResNetConfig::resnet50(1000).expect("cfg"),
        Some(dir.path()),
        Some("http://127.0.0.1:1"),
        &Device::Cpu,
    )
    .expect_err("offline");
    assert!(e.to_string().contains("timm/resnet50.tv_in1k"), "{e}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Arbitrary bytes, and a valid file with one byte changed, read as an error or as tensors:
    /// never a panic.
    #[test]
    fn arbitrary_and_mutated_safetensors_never_panic(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        at in 0usize..100_000,
        to in proptest::prelude::any::<u8>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("w.safetensors");
        std::fs::write(&p, &bytes).expect("write");
        let _ = compress_nn::weights::read(&p, &Device::Cpu);
        let t = HashMap::from([
            ("a".to_string(), Tensor::arange(0f32, 12.0, &Device::Cpu).expect("t").reshape((3, 4)).expect("r")),
            ("b".to_string(), Tensor::new(&[1u32, 2, 3], &Device::Cpu).expect("t")),
        ]);
        compress_nn::weights::save_atomic(&t, &p).expect("save");
        let mut good = std::fs::read(&p).expect("read");
        let i = at % good.len();
        good[i] = to;
        std::fs::write(&p, &good).expect("write");
        let _ = compress_nn::weights::read(&p, &Device::Cpu);
    }
}
