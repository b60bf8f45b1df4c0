//! `cargo xtask bench onexn`: the 1xN kernel against candle's dense convolution and an
//! unstructured CSR kernel, on the 1x1 convs of ResNet-50 and MobileNetV2 (batch 1 and 8,
//! p in {0.25, 0.5, 0.75, 0.9}, N in {4, 8, 16}), then MobileNetV2 at 224 x 224, batch 1, with
//! every pointwise conv packed, against the dense model. All timings are medians in one process
//! on the same threads.

use crate::Result;
use candle_core::{Device, Module, Tensor};
use compress_core::sparse::{BlockOrder, Csr, PackedConv2d, block_mask, csr_conv1x1_nchw, simd_level, weight_mask};
use compress_core::timing::median_seconds;
use compress_nn::Network;
use compress_nn::zoo::{MobileNetV2, MobileNetV2Config};
use std::collections::BTreeMap;
use std::io::Write;

/// `(name, C_in, C_out, side)` of the benched 1x1 convs.
const LAYERS: [(&str, usize, usize, usize); 10] = [
    ("R50 64->256", 64, 256, 56),
    ("R50 128->512", 128, 512, 28),
    ("R50 256->1024", 256, 1024, 14),
    ("R50 512->2048", 512, 2048, 7),
    ("MV2 expand 24->144", 24, 144, 56),
    ("MV2 expand 64->384", 64, 384, 14),
    ("MV2 expand 160->960", 160, 960, 7),
    ("MV2 project 144->24", 144, 24, 56),
    ("MV2 project 576->96", 576, 96, 14),
    ("MV2 head 320->1280", 320, 1280, 7),
];

fn ms(seconds: f64, f: impl FnMut() -> candle_core::Result<()>) -> Result<f64> {
    Ok(1e3 * median_seconds(2, 5, seconds, f)?)
}

fn layers(out: &mut dyn Write, seconds: f64, quick: bool) -> Result<()> {
    let dev = Device::Cpu;
    writeln!(
        out,
        "1x1 convs, NCHW, {} threads, SIMD {}; dense = candle 0.11 conv2d; CSR = unstructured, same p; \
         1xN = PackedConv2d (candle op); ideal = 1 / (1 - p)",
        candle_core::utils::get_num_threads(),
        simd_level()
    )?;
    writeln!(out, "| layer | batch | p | N | dense ms | CSR ms | 1xN ms | speedup | ideal | efficiency | vs CSR |")?;
    writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")?;
    let (rates, ns, batches): (&[f64], &[usize], &[usize]) =
        if quick { (&[0.5, 0.75], &[8], &[8]) } else { (&[0.25, 0.5, 0.75, 0.9], &[4, 8, 16], &[1, 8]) };
    for &(name, c_in, c_out, side) in &LAYERS {
        let w = Tensor::randn(0f32, 1.0, (c_out, c_in, 1, 1), &dev)?;
        for &batch in batches {
            let x = Tensor::randn(0f32, 1.0, (batch, c_in, side, side), &dev)?;
            let xv: Vec<f32> = x.flatten_all()?.to_vec1()?;
            let dense = ms(seconds, || x.conv2d(&w, 0, 1, 1, 1).map(|_| ()))?;
            for &p in rates {
                let csr = Csr::from_dense(&(&w * weight_mask(&w, p)?)?)?;
                let csr_ms = ms(seconds, || {
                    csr_conv1x1_nchw(&csr, &xv, side * side).map(|_| ()).map_err(candle_core::Error::wrap)
                })?;
                for &n in ns {
                    if c_out % n != 0 {
                        writeln!(
                            out,
                            "| {name} @{side} | {batch} | {p} | {n} | {dense:.3} | {csr_ms:.3} | not packed: N does not divide {c_out} | | | | |"
                        )?;
                        continue;
                    }
                    let wm = (&w * block_mask(&w, n, p, BlockOrder::Strict)?)?;
                    let layer = PackedConv2d::from_dense(&wm, None, n, 1, 0)?;
                    let t = ms(seconds, || layer.forward(&x).map(|_| ()))?;
                    let (speedup, ideal) = (dense / t, 1.0 / (1.0 - p));
                    writeln!(
                        out,
                        "| {name} @{side} | {batch} | {p} | {n} | {dense:.3} | {csr_ms:.3} | {t:.3} | {speedup:.2}x | {ideal:.2}x | {:.2} | {:.2}x |",
                        speedup / ideal,
                        csr_ms / t
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// The 1xN kernel on `device` against candle's dense convolution on the same device (cuBLAS /
/// cuDNN on a GPU), on the first `layers` of the ResNet-50 / MobileNetV2 1x1 convs at each of
/// `batches`, p 0.5 / 0.75, N 4 / 8 / 16, next to the ideal `1 / (1 - p)`: the GPU twin of the CPU
/// table (`cargo xtask gpu-check` runs it on `cuda:0`). Every timed call ends with a device
/// synchronisation.
pub fn device_layers(
    out: &mut dyn Write,
    device: &Device,
    seconds: f64,
    layers: usize,
    batches: &[usize],
) -> Result<()> {
    writeln!(
        out,
        "1x1 convs, NCHW, on {device:?}; dense = candle conv2d on the device; 1xN = PackedConv2d; ideal = 1 / (1 - p)"
    )?;
    writeln!(out, "| layer | batch | p | N | dense ms | 1xN ms | speedup | ideal | efficiency |")?;
    writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")?;
    let timed = |f: &mut dyn FnMut() -> candle_core::Result<Tensor>| -> Result<f64> {
        ms(seconds, || {
            f()?;
            device.synchronize()
        })
    };
    for &(name, c_in, c_out, side) in LAYERS.iter().take(layers) {
        let w = Tensor::randn(0f32, 1.0, (c_out, c_in, 1, 1), &Device::Cpu)?;
        let wd = w.to_device(device)?;
        for &batch in batches {
            let x = Tensor::randn(0f32, 1.0, (batch, c_in, side, side), &Device::Cpu)?.to_device(device)?;
            let dense = timed(&mut || x.conv2d(&wd, 0, 1, 1, 1))?;
            for p in [0.5, 0.75] {
                for n in [4usize, 8, 16] {
                    if c_out % n != 0 {
                        continue;
                    }
                    let wm = (&w * block_mask(&w, n, p, BlockOrder::Strict)?)?;
                    let layer = PackedConv2d::from_dense(&wm, None, n, 1, 0)?;
                    let t = timed(&mut || layer.forward(&x))?;
                    let (speedup, ideal) = (dense / t, 1.0 / (1.0 - p));
                    writeln!(
                        out,
                        "| {name} @{side} | {batch} | {p} | {n} | {dense:.4} | {t:.4} | {speedup:.2}x | {ideal:.2}x | {:.2} |",
                        speedup / ideal
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// MobileNetV2 at 224, batch 1: dense against every pointwise conv rearranged and packed.
fn mobilenet_v2(out: &mut dyn Write, seconds: f64) -> Result<()> {
    let dev = Device::Cpu;
    let net = Network::<MobileNetV2>::new(MobileNetV2Config::new(1.0, 1000)?, 0, &dev)?;
    let x = Tensor::randn(0f32, 1.0, (1, 3, 224, 224), &dev)?;
    let dense = ms(seconds, || net.forward_t(&x, false).map(|_| ()).map_err(candle_core::Error::wrap))?;
    let targets = crate::mobilenet_v2_targets(&net)?;
    let t = net.tensors()?;
    writeln!(out)?;
    writeln!(
        out,
        "MobileNetV2 1.0 at 224x224, batch 1, eval; all {} pointwise convs packed (expansions and the final 1x1 rearranged), depthwise and stem dense",
        targets.len()
    )?;
    writeln!(out, "| model | p | N | packed convs | latency ms | speedup |")?;
    writeln!(out, "| --- | --- | --- | --- | --- | --- |")?;
    writeln!(out, "| dense | 0 | - | 0 | {dense:.2} | 1.00x |")?;
    for p in [0.5, 0.75] {
        for n in [4usize, 8, 16] {
            // Layers whose outputs N does not divide stay dense (the strict layout refuses them).
            let targets: Vec<crate::Target> =
                targets.iter().filter(|tg| t[&format!("{}.weight", tg.layer)].dims()[0] % n == 0).cloned().collect();
            let (mut masks, mut perms) = (BTreeMap::new(), BTreeMap::new());
            for (i, tg) in targets.iter().enumerate() {
                let pattern = crate::Pattern::Block(crate::OneByN::l1(n, tg.rearrange_group.is_some()));
                let lm = crate::layer_mask(&t[&format!("{}.weight", tg.layer)], pattern, p, i)?;
                if let (Some(g), Some(pi)) = (&tg.rearrange_group, lm.perm) {
                    perms.insert(g.clone(), pi);
                }
                masks.insert(tg.layer.clone(), lm.mask);
            }
            let (re, re_masks) = crate::rearrange(&net, &masks, &perms)?;
            let (map, _) = crate::pack(&re, &re_masks, &targets, n)?;
            let deployed = re.with_replacements(&map)?;
            let lat = ms(seconds, || candle_core::ModuleT::forward_t(&deployed, &x, false).map(|_| ()))?;
            writeln!(out, "| 1x{n} packed | {p} | {n} | {} | {lat:.2} | {:.2}x |", targets.len(), dense / lat)?;
        }
    }
    Ok(())
}

/// Runs the bench, writing its tables to `out` as it goes (`quick`: batch 8, p 0.5 / 0.75,
/// N = 8 only).
pub fn run(out: &mut dyn Write, seconds: f64, quick: bool) -> Result<()> {
    layers(out, seconds, quick)?;
    mobilenet_v2(out, seconds.max(0.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_table_has_a_row_per_rate_and_block_height() {
        let mut out = Vec::new();
        device_layers(&mut out, &Device::Cpu, 0.0, 1, &[1]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| R50 64->256 @56 | 1 |")).collect();
        assert_eq!(rows.len(), 2 * 3, "{text}");
        assert!(rows.iter().all(|r| r.contains("x |")), "{text}");
    }
}
