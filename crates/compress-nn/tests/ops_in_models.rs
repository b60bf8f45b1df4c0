//! Whole-network gradients with the toolkit's CPU kernels (convolution, fused BatchNorm + residual +
//! activation, clamp) equal those with stock candle
//! up to f64 rounding (1e-10 relative) through a deep network (on input sizes where candle's conv backward works: `h + 2p - k` divisible by the stride).
mod common;

use candle_core::Device;
use compress_nn::AnalyticCost;
use compress_nn::zoo::{MobileNetV2, MobileNetV2Config, ResNetCifar, ResNetCifarConfig};
use compress_nn::{Architecture, Network};

/// The gradient of `mean(y^2)` for every variable, in f64 (the network's variables and input
/// converted), with the toolkit's ops or with stock candle's.
fn grads<A: Architecture>(cfg: A::Config, candle: bool) -> Vec<(String, Vec<f64>)> {
    compress_core::ops::use_candle_ops(candle);
    let f32_net = Network::<A>::new(cfg.clone(), 4, &Device::Cpu).expect("net");
    let tensors: std::collections::HashMap<String, candle_core::Tensor> = f32_net
        .tensors()
        .expect("tensors")
        .into_iter()
        .map(|(k, t)| (k, t.to_dtype(candle_core::DType::F64).expect("f64")))
        .collect();
    let net = Network::<A>::from_tensors(cfg.clone(), &tensors, &Device::Cpu).expect("f64 net");
    let x = common::input(&cfg, 4, 2).to_dtype(candle_core::DType::F64).expect("f64");
    let y = net.forward_t(&x, true).expect("fwd");
    assert_eq!(y.dtype(), candle_core::DType::F64);
    let g = y.sqr().expect("s").mean_all().expect("m").backward().expect("b");
    compress_core::ops::use_candle_ops(false);
    let data = net.varmap.data().lock().expect("lock");
    let mut out: Vec<(String, Vec<f64>)> = data
        .iter()
        .filter_map(|(k, v)| {
            g.get(v.as_tensor()).map(|t| (k.clone(), t.flatten_all().expect("f").to_vec1::<f64>().expect("v")))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn compare<A: Architecture>(cfg: A::Config) {
    let (a, b) = (grads::<A>(cfg.clone(), false), grads::<A>(cfg, true));
    assert_eq!(a.len(), b.len());
    // Gradients that are mathematically zero (a shift before conv + train-mode BatchNorm) are
    // rounding noise in both: measure against a hundredth of the largest gradient in the network.
    // In f64 the two sets of kernels agree to 6e-13 of that scale (measured); the bound is 1e-10,
    // so an f32-sized slip (1e-7) or a wrong term fails.
    let global = b.iter().flat_map(|(_, y)| y.iter()).fold(0f64, |m, v| m.max(v.abs()));
    assert!(global > 0.0);
    let mut worst = 0f64;
    for ((n, x), (_, y)) in a.iter().zip(&b) {
        let scale = y.iter().fold(0f64, |m, v| m.max(v.abs())).max(global * 1e-2);
        let d = x.iter().zip(y).fold(0f64, |m, (p, q)| m.max((p - q).abs()));
        worst = worst.max(d / scale);
        assert!(d / scale < 1e-10, "{n}: relative gradient difference {}", d / scale);
    }
    eprintln!("largest relative gradient difference: {worst:.2e}");
}

#[test]
fn mobilenetv2_and_resnet_gradients_match_candles_convolution() {
    // 17 px: since the stem honours its stride 1, 33 px runs the first blocks at 33 x 33 and the
    // train-mode BatchNorms amplify f32 noise to 2.1e-2 on one depthwise weight there.
    compare::<MobileNetV2>(MobileNetV2Config::new(0.5, 10).expect("cfg").input(1, 17).small_input());
    compare::<ResNetCifar>(ResNetCifarConfig::new(8, 10).expect("cfg").input(1, 33));
    let _ = MobileNetV2Config::new(0.5, 10).expect("cfg").cost();
}
