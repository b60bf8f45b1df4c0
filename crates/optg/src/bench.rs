//! `cargo xtask bench optg`: a sparse model must run faster than the dense one. The CSR kernel
//! ([`crate::deploy`]) against the dense layers on
//! - the pointwise convs and classifiers of ResNet-50 and MobileNetV1 (NCHW, at their
//!   resolutions) and the section-9 MLP `784-300-100-10`,
//! - at unstructured sparsity `p` in {0.9, 0.95, 0.98, 0.99} (random weights, per-layer
//!   magnitude masks), batch 1 and 64,
//!
//! with the speedup next to the ideal `1 / (1 - p)`. Dense = the toolkit's convolution (im2col +
//! GEMM on gemm's AVX kernels, what the zoo runs) and candle's matmul for linear layers. All
//! timings are medians in one process on the same threads.

use crate::Result;
use crate::deploy::{CsrConv1x1, CsrLinear};
use candle_core::{Device, Module, Tensor};
use compress_core::ops::{Conv2dGeometry, conv2d};
use compress_core::sparse::{simd_level, weight_mask};
use compress_core::timing::median_seconds;
use std::io::Write;

/// A benched layer: name, `C_in`, `C_out`, side (0: a linear layer).
pub type Layer = (&'static str, usize, usize, usize);

/// ResNet-50's 1x1 convs of each stage and its classifier; MobileNetV1's pointwise convs and
/// classifier; the mini's MLP.
pub const LAYERS: [Layer; 15] = [
    ("R50 1x1 64->256", 64, 256, 56),
    ("R50 1x1 128->512", 128, 512, 28),
    ("R50 1x1 256->1024", 256, 1024, 14),
    ("R50 1x1 512->2048", 512, 2048, 7),
    ("R50 fc 2048->1000", 2048, 1000, 0),
    ("MBV1 pw 32->64", 32, 64, 112),
    ("MBV1 pw 128->256", 128, 256, 28),
    ("MBV1 pw 256->512", 256, 512, 14),
    ("MBV1 pw 512->512", 512, 512, 14),
    ("MBV1 pw 1024->1024", 1024, 1024, 7),
    ("MBV1 fc 1024->1000", 1024, 1000, 0),
    ("MLP fc0 784->300", 784, 300, 0),
    ("MLP fc1 300->100", 300, 100, 0),
    ("MLP fc2 100->10", 100, 10, 0),
    ("MLP whole 784-300-100-10", 784, 10, 0),
];

fn ms(seconds: f64, f: impl FnMut() -> candle_core::Result<()>) -> Result<f64> {
    Ok(1e3 * median_seconds(2, 5, seconds, f)?)
}

fn masked(w: &Tensor, p: f64) -> Result<Tensor> {
    Ok((w * weight_mask(w, p)?)?)
}

/// Median milliseconds of an MLP's forward pass (`(weight [C_out, C_in], bias)` per layer, ReLU
/// between) at `batch`, dense (candle's linear) and on the CSR kernel, alternated over three
/// rounds with the best median of each kept (the machine is shared).
pub fn mlp_forward_ms(layers: &[(Tensor, Tensor)], batch: usize, seconds: f64) -> Result<(f64, f64)> {
    let fin = layers.first().map_or(0, |(w, _)| w.dims().get(1).copied().unwrap_or(0));
    let x = Tensor::randn(0f32, 1.0, (batch, fin), &Device::Cpu)?;
    let dense: Vec<candle_nn::Linear> =
        layers.iter().map(|(w, b)| candle_nn::Linear::new(w.clone(), Some(b.clone()))).collect();
    let sparse: Vec<CsrLinear> =
        layers.iter().map(|(w, b)| CsrLinear::from_dense(w, Some(b))).collect::<compress_core::sparse::Result<_>>()?;
    let run = |m: &[&dyn Module]| -> candle_core::Result<()> {
        let mut h = x.clone();
        for (i, l) in m.iter().enumerate() {
            h = l.forward(&h)?;
            if i + 1 < m.len() {
                h = h.relu()?;
            }
        }
        Ok(())
    };
    let d: Vec<&dyn Module> = dense.iter().map(|l| l as &dyn Module).collect();
    let c: Vec<&dyn Module> = sparse.iter().map(|l| l as &dyn Module).collect();
    let mut times = (f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        times.0 = times.0.min(ms(seconds, || run(&d))?);
        times.1 = times.1.min(ms(seconds, || run(&c))?);
    }
    Ok(times)
}

/// The section-9 MLP with every layer at sparsity `p` (random weights, magnitude masks).
fn mlp(batch: usize, p: f64, seconds: f64) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    let layers = [(784, 300), (300, 100), (100, 10)]
        .iter()
        .map(|&(fin, fout)| {
            let w = masked(&Tensor::randn(0f32, (2.0 / fin as f32).sqrt(), (fout, fin), &dev)?, p)?;
            Ok((w, Tensor::zeros(fout, candle_core::DType::F32, &dev)?))
        })
        .collect::<Result<Vec<_>>>()?;
    mlp_forward_ms(&layers, batch, seconds)
}

/// One layer, dense and CSR, at sparsity `p`.
fn layer(&(_, c_in, c_out, side): &Layer, batch: usize, p: f64, seconds: f64) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    if side == 0 {
        let w = masked(&Tensor::randn(0f32, 1.0, (c_out, c_in), &dev)?, p)?;
        let x = Tensor::randn(0f32, 1.0, (batch, c_in), &dev)?;
        let dense = candle_nn::Linear::new(w.clone(), None);
        let sparse = CsrLinear::from_dense(&w, None)?;
        return Ok((ms(seconds, || dense.forward(&x).map(|_| ()))?, ms(seconds, || sparse.forward(&x).map(|_| ()))?));
    }
    let w = masked(&Tensor::randn(0f32, 1.0, (c_out, c_in, 1, 1), &dev)?, p)?;
    let x = Tensor::randn(0f32, 1.0, (batch, c_in, side, side), &dev)?;
    let sparse = CsrConv1x1::from_dense(&w)?;
    let geo = Conv2dGeometry::new(1, 0, 1);

    Ok((ms(seconds, || conv2d(&x, &w, geo).map(|_| ()))?, ms(seconds, || sparse.forward(&x).map(|_| ()))?))
}

/// Runs the bench, writing its table to `out` as it goes (`quick`: p 0.95 and batch 1 only).
pub fn run(out: &mut dyn Write, seconds: f64, quick: bool) -> Result<()> {
    writeln!(
        out,
        "OptG deployment: unstructured CSR vs dense, {} threads, SIMD {}; dense = the toolkit's conv2d (1x1) / \
         candle matmul (linear); ideal = 1 / (1 - p)",
        candle_core::utils::get_num_threads(),
        simd_level()
    )?;
    writeln!(out, "| layer | batch | p | dense ms | CSR ms | speedup | ideal | efficiency |")?;
    writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- |")?;
    let (rates, batches): (&[f64], &[usize]) =
        if quick { (&[0.95], &[1]) } else { (&[0.9, 0.95, 0.98, 0.99], &[1, 64]) };
    for l in &LAYERS {
        for &batch in batches {
            for &p in rates {
                let (d, s) =
                    if l.0.starts_with("MLP whole") { mlp(batch, p, seconds)? } else { layer(l, batch, p, seconds)? };
                let side = if l.3 > 0 { format!(" @{}", l.3) } else { String::new() };
                let (speedup, ideal) = (d / s, 1.0 / (1.0 - p));
                writeln!(
                    out,
                    "| {}{side} | {batch} | {p} | {d:.4} | {s:.4} | {speedup:.2}x | {ideal:.0}x | {:.2} |",
                    l.0,
                    speedup / ideal
                )?;
            }
        }
    }
    Ok(())
}
