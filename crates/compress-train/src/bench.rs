//! `cargo xtask bench train-step` and `bench conv`: one training step (forward, backward, SGD update) and one
//! inference forward of CIFAR ResNet-20 (batch 128) and MobileNetV2 (batch 64) on 3x32x32, with
//! the toolkit's kernels and with stock candle (its convolution, BatchNorm, clamp and composed
//! optimizer update), measured in the same process; one 3x3 conv layer, ours against candle's.
//! Tables are written to `out` as they are measured.

use crate::error::Result;
use crate::loss::cross_entropy;
use crate::optim::{Optimizer, OptimizerKind, all_params};
use candle_core::{DType, Device, Tensor};
use compress_nn::Network;
use compress_nn::zoo::{MobileNetV2, MobileNetV2Config, ResNetCifar, ResNetCifarConfig};
use std::io::Write;
use std::time::Instant;

struct Timing {
    fwd: f64,
    bwd: f64,
    upd: f64,
    /// Eval-mode forward (inference, no graph kept).
    eval: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The benched networks: CIFAR ResNet-20 (option B) and MobileNetV2 1.0 with the stride-1 stem
/// of CIFAR ports, both on 3 x 32 x 32 inputs and 10 classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    ResNet20,
    MobileNetV2,
}

impl Net {
    fn build(self, dev: &Device) -> Result<Box<dyn compress_nn::Model>> {
        Ok(match self {
            Net::ResNet20 => Box::new(Network::<ResNetCifar>::new(
                ResNetCifarConfig::new(20, 10)?.with_shortcut(compress_nn::zoo::Shortcut::B),
                0,
                dev,
            )?),
            Net::MobileNetV2 => Box::new(Network::<MobileNetV2>::new(
                MobileNetV2Config::new(1.0, 10)?.input(3, 32).small_input(),
                0,
                dev,
            )?),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Net::ResNet20 => "ResNet-20 (option B)",
            Net::MobileNetV2 => "MobileNetV2 1.0 (stride-1 stem)",
        }
    }
}

/// Per step: each op's milliseconds and calls, largest first, and the ops' total.
fn print_ops(out: &mut dyn Write, steps: usize) -> Result<()> {
    let mut ops = compress_core::ops::profile::take();
    ops.sort_by(|a, b| b.1.total_cmp(&a.1));
    let per = |v: f64| v * 1e3 / steps.max(1) as f64;
    writeln!(out, "| op (per step) | ms | calls |")?;
    writeln!(out, "| --- | --- | --- |")?;
    for (name, s, n) in &ops {
        writeln!(out, "| {name} | {:.1} | {} |", per(*s), n / steps.max(1))?;
    }
    writeln!(out, "| all ops | {:.1} | |", per(ops.iter().map(|o| o.1).sum()))?;
    Ok(())
}

fn measure(out: &mut dyn Write, net: Net, batch: usize, steps: usize, stock: bool, ops: bool) -> Result<Timing> {
    compress_core::ops::use_candle_ops(stock);
    let dev = Device::Cpu;
    let net = net.build(&dev)?;
    let mut opt = Optimizer::new(OptimizerKind::sgd(0.9, false), all_params(net.varmap(), 5e-4)?)?;
    let x = Tensor::randn(0f32, 1.0, (batch, 3, 32, 32), &dev)?;
    let y = Tensor::from_vec((0..batch as u32).map(|i| i % 10).collect::<Vec<_>>(), batch, &dev)?;
    let (mut f, mut b, mut u, mut e) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..steps + 2 {
        // Ops recorded over the timed steps only.
        compress_core::ops::profile::record_ops(ops && i >= 2);
        let t0 = Instant::now();
        let loss = cross_entropy(&net.forward_t(&x, true)?, &y, 0.0)?;
        loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let g = loss.backward()?;
        let t2 = Instant::now();
        opt.step(&g, 0.01)?;
        let t3 = Instant::now();
        if i >= 2 {
            f.push((t1 - t0).as_secs_f64());
            b.push((t2 - t1).as_secs_f64());
            u.push((t3 - t2).as_secs_f64());
        }
    }
    compress_core::ops::profile::record_ops(false);
    if ops {
        print_ops(out, steps)?;
    }
    for i in 0..steps + 2 {
        let t0 = Instant::now();
        net.forward_t(&x, false)?.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if i >= 2 {
            e.push(t0.elapsed().as_secs_f64());
        }
    }
    compress_core::ops::use_candle_ops(false);
    Ok(Timing { fwd: median(f), bwd: median(b), upd: median(u), eval: median(e) })
}

/// `bench conv`: one 3x3 conv layer at 128 x c x s x s, forward and backward, ours against
/// candle's convolution.
pub fn conv_layer(out: &mut dyn Write, steps: usize) -> Result<()> {
    let steps = steps.max(1);
    use candle_core::Var;
    let dev = Device::Cpu;
    writeln!(out, "| layer | conv | forward (ms) | backward (ms) |")?;
    writeln!(out, "| --- | --- | --- | --- |")?;
    for (c, s) in [(16usize, 32usize), (32, 16), (64, 8)] {
        for candle in [false, true] {
            compress_core::ops::use_candle_ops(candle);
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (128, c, s, s), &dev)?)?;
            let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (c, c, 3, 3), &dev)?)?;
            let geo = compress_core::ops::Conv2dGeometry::new(1, 1, 1);
            let (mut f, mut b) = (Vec::new(), Vec::new());
            for i in 0..steps + 1 {
                let t0 = Instant::now();
                let y = compress_core::ops::conv2d(x.as_tensor(), w.as_tensor(), geo)?;
                let t1 = Instant::now();
                let _g = y.sum_all()?.backward()?;
                let t2 = Instant::now();
                if i > 0 {
                    f.push((t1 - t0).as_secs_f64());
                    b.push((t2 - t1).as_secs_f64());
                }
            }
            let name = if candle { "candle" } else { "ours" };
            writeln!(out, "| 128x{c}x{s}x{s} | {name} | {:.1} | {:.1} |", median(f) * 1e3, median(b) * 1e3)?;
        }
    }
    compress_core::ops::use_candle_ops(false);
    Ok(())
}

/// `bench train-step`: ResNet-20 and MobileNetV2 training steps and inference forwards, ours
/// (and stock candle unless `ours_only`; each op's time per step with `ops`).
pub fn train_step(out: &mut dyn Write, steps: usize, ours_only: bool, ops: bool) -> Result<()> {
    let steps = steps.max(1);
    let threads = candle_core::utils::get_num_threads();
    for (net, batch) in [(Net::ResNet20, 128), (Net::MobileNetV2, 64)] {
        writeln!(
            out,
            "{} train step, batch {batch}, 3x32x32, {threads} threads, median of {steps} steps after 2 warm-ups",
            net.name()
        )?;
        writeln!(out, "| ops | step (ms) | forward | backward | SGD update | inference forward (ms) |")?;
        writeln!(out, "| --- | --- | --- | --- | --- | --- |")?;
        let mut total = Vec::new();
        let arms: &[(&str, bool)] = if ours_only {
            &[("compress-core", false)]
        } else {
            &[("compress-core", false), ("stock candle 0.11", true)]
        };
        for &(name, candle) in arms {
            let t = measure(out, net, batch, steps, candle, ops && !candle)?;
            let s = t.fwd + t.bwd + t.upd;
            total.push(s);
            writeln!(
                out,
                "| {name} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} |",
                s * 1e3,
                t.fwd * 1e3,
                t.bwd * 1e3,
                t.upd * 1e3,
                t.eval * 1e3
            )?;
        }
        if let [ours, candle] = total[..] {
            writeln!(out, "speed-up over stock candle: {:.2}x", candle / ours)?;
        }
        writeln!(out)?;
    }
    writeln!(out, "PyTorch reference: python3 benches/reference/resnet20_step.py (same step, same session)")?;
    Ok(())
}
