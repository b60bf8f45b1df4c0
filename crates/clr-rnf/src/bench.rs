//! `cargo xtask bench clr-rnf`: the compact VGG-16 / ResNet-56 forward on the CPU against the
//! unpruned one, at batch 1 and 64, timed alternately in the same run, next to the FLOPs ratio.
//! The compact widths come from CLR-RNF at the paper's `rho` and `lambda` on randomly
//! initialised weights (CLR's widths follow the weights; the paper's own networks differ).

use crate::candidates::ClrCandidates;
use crate::error::Result;
use crate::method::{ClrRnfSettings, prune};
use candle_core::{DType, Device, Tensor};
use compress_core::timing::median_seconds;
use compress_nn::zoo::{ResNetCifar, ResNetCifarConfig, Vgg, VggConfig};
use compress_nn::{ArchConfig, Architecture, Network};
use compress_prune::measured_cost;
use std::io::Write;

fn model<A: Architecture>(
    out: &mut dyn Write,
    name: &str,
    cfg: A::Config,
    rho: f64,
    lambda: f64,
    seconds: f64,
) -> Result<()>
where
    A::Config: ClrCandidates,
{
    let dev = Device::Cpu;
    let full = Network::<A>::new(cfg.clone(), 0, &dev)?;
    let compact = prune(&full, &ClrRnfSettings::new(rho, lambda), 0)?.network;
    let (a, b) = (measured_cost::<A>(&cfg)?, measured_cost::<A>(&compact.config)?);
    let ratio = a.pruning_flops() as f64 / b.pruning_flops().max(1) as f64;
    let [c, h, w] = cfg.input_shape();
    for batch in [1usize, 64] {
        let x = Tensor::ones((batch, c, h, w), DType::F32, &dev)?;
        let (mut tf, mut tc) = (Vec::new(), Vec::new());
        // Alternate the two, three rounds each: the machine is shared and noisy.
        for _ in 0..3 {
            tf.push(median_seconds(1, 3, seconds, || full.forward_t(&x, false).map(|_| ()))?);
            tc.push(median_seconds(1, 3, seconds, || compact.forward_t(&x, false).map(|_| ()))?);
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2] * 1e3
        };
        let (f, k) = (med(&mut tf), med(&mut tc));
        writeln!(out, "| {name} rho {rho} | {batch} | {f:.2} | {k:.2} | {:.2}x | {ratio:.2}x |", f / k)?;
    }
    Ok(())
}

/// Runs the bench, writing a Markdown table to `out`.
pub fn run(out: &mut dyn Write, seconds: f64) -> Result<()> {
    writeln!(out, "| model | batch | unpruned (ms) | compact (ms) | speed-up | FLOPs ratio |")?;
    writeln!(out, "| --- | --- | --- | --- | --- | --- |")?;
    model::<Vgg>(out, "VGG-16", VggConfig::vgg16(10)?.single_linear(), 0.86, 0.5, seconds)?;
    model::<ResNetCifar>(out, "ResNet-56", ResNetCifarConfig::new(56, 10)?, 0.56, 10.0, seconds)
}
