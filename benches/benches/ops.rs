//! Convolution (forward + backward) and ReLU6 (forward + backward) on ResNet-20 / MobileNetV2
//! layer shapes at batch 128: the toolkit's op and candle's, same inputs, same run.

use candle_core::{Device, Tensor, Var};
use compress_core::ops::{Conv2dGeometry, clamp_activation, conv2d, use_candle_ops};
use criterion::{Criterion, criterion_group, criterion_main};

fn input(shape: &[usize]) -> Var {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| ((i * 7919 % 2003) as f32 / 2003.0 - 0.5) * 4.0).collect();
    Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).expect("input")).expect("var")
}

fn conv(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv3x3 fwd+bwd, batch 128");
    g.sample_size(10);
    for (ch, side) in [(16usize, 32usize), (32, 16), (64, 8)] {
        let x = input(&[128, ch, side, side]);
        let w = input(&[ch, ch, 3, 3]);
        let geo = Conv2dGeometry::new(1, 1, 1);
        for (name, candle) in [("ours", false), ("candle", true)] {
            g.bench_function(format!("{name} {ch}x{side}x{side}"), |b| {
                use_candle_ops(candle);
                b.iter(|| {
                    let y = conv2d(x.as_tensor(), w.as_tensor(), geo).expect("conv");
                    y.sum_all().expect("sum").backward().expect("backward")
                });
                use_candle_ops(false);
            });
        }
    }
    g.finish();
}

fn relu6(c: &mut Criterion) {
    let mut g = c.benchmark_group("relu6 fwd+bwd, 128x96x14x14");
    g.sample_size(20);
    let x = input(&[128, 96, 14, 14]);
    g.bench_function("ours", |b| {
        b.iter(|| {
            let y = clamp_activation(x.as_tensor(), 0.0, 6.0).expect("clamp");
            y.sum_all().expect("sum").backward().expect("backward")
        })
    });
    g.bench_function("candle clamp", |b| {
        b.iter(|| {
            let y = x.as_tensor().clamp(0f32, 6f32).expect("clamp");
            y.sum_all().expect("sum").backward().expect("backward")
        })
    });
    g.finish();
}

/// 1x1 convolutions of ResNet-50 at batch 8, NCHW: candle's dense conv2d, the toolkit's dense
/// GEMM path, and the packed 1xN kernel at p = 0.5 / 0.75 and N = 4 / 8 / 16 (ideal speed-up
/// over dense: 1 / (1 - p)).
fn onexn(c: &mut Criterion) {
    use compress_core::sparse::{BlockOrder, Bsr1xN, block_mask, conv1x1_nchw};
    for (cin, cout, side) in [(64usize, 256usize, 56usize), (256, 1024, 14), (512, 2048, 7)] {
        let mut g = c.benchmark_group(format!("1x1 conv {cin}->{cout} at {side}x{side}, batch 8"));
        g.sample_size(10);
        let x = input(&[8, cin, side, side]);
        let xv: Vec<f32> = x.as_tensor().flatten_all().expect("x").to_vec1().expect("x");
        let w = input(&[cout, cin, 1, 1]);
        let geo = Conv2dGeometry::new(1, 0, 1);
        g.bench_function("dense candle", |b| b.iter(|| x.as_tensor().conv2d(w.as_tensor(), 0, 1, 1, 1).expect("conv")));
        g.bench_function("dense ours", |b| b.iter(|| conv2d(x.as_tensor(), w.as_tensor(), geo).expect("conv")));
        for rate in [0.5, 0.75] {
            for n in [4usize, 8, 16] {
                let mask = block_mask(w.as_tensor(), n, rate, BlockOrder::Strict).expect("mask");
                let packed = Bsr1xN::from_dense(&(w.as_tensor() * mask).expect("wm"), n).expect("pack");
                g.bench_function(format!("1x{n} p={rate}"), |b| {
                    b.iter(|| conv1x1_nchw(&packed, &xv, side * side, None).expect("sparse"))
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, conv, relu6, onexn);
criterion_main!(benches);
