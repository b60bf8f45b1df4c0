//! `cargo xtask zoo`: every zoo model's cost at its published setting, computed from the config
//! and by a counting forward pass, next to the published figure and its convention.

use anyhow::Result;
use candle_core::Device;
use compress_core::cost::Cost;
use compress_nn::zoo::*;
use compress_nn::{AnalyticCost, Architecture, Network};

struct Row {
    model: &'static str,
    setting: &'static str,
    analytic: Cost,
    counted: Option<Cost>,
    published: &'static str,
}

fn row<A: Architecture>(
    model: &'static str,
    setting: &'static str,
    cfg: A::Config,
    published: &'static str,
    count: bool,
) -> Result<Row>
where
    A::Config: AnalyticCost,
{
    let counted = if count { Some(Network::<A>::new(cfg.clone(), 0, &Device::Cpu)?.counted_cost()?) } else { None };
    Ok(Row { model, setting, analytic: cfg.cost(), counted, published })
}

fn m(x: u64) -> String {
    if x >= 1_000_000_000 { format!("{:.2} G", x as f64 / 1e9) } else { format!("{:.2} M", x as f64 / 1e6) }
}

pub fn cost_table() -> Result<()> {
    let rows = vec![
        row::<ResNetCifar>(
            "ResNet-20 (A)",
            "3x32x32, 10",
            ResNetCifarConfig::new(20, 10)?,
            "40.6 M MACs / 0.27 M",
            true,
        )?,
        row::<ResNetCifar>(
            "ResNet-56 (A)",
            "3x32x32, 10",
            ResNetCifarConfig::new(56, 10)?,
            "125.5 M MACs / 0.85 M",
            true,
        )?,
        row::<ResNetCifar>(
            "ResNet-110 (A)",
            "3x32x32, 10",
            ResNetCifarConfig::new(110, 10)?,
            "252.9 M MACs / 1.73 M",
            true,
        )?,
        row::<Vgg>("VGG-16 (CIFAR)", "3x32x32, 10", VggConfig::vgg16(10)?, "313.7 M MACs / 14.98 M", true)?,
        row::<Vgg>(
            "VGG-19 (CIFAR)",
            "3x32x32, 10",
            VggConfig::vgg19(10)?,
            "398.5 M MACs / 20.04 M without the 512 hidden FC (+0.26 M with it)",
            true,
        )?,
        row::<ResNet>("ResNet-18", "3x224x224, 1000", ResNetConfig::resnet18(1000)?, "1.82 G MACs / 11.69 M", true)?,
        row::<ResNet>("ResNet-34", "3x224x224, 1000", ResNetConfig::resnet34(1000)?, "3.67 G MACs / 21.80 M", true)?,
        row::<ResNet>(
            "ResNet-50",
            "3x224x224, 1000",
            ResNetConfig::resnet50(1000)?,
            "4.09-4.11 G MACs / 25.56 M",
            true,
        )?,
        row::<MobileNetV1>(
            "MobileNetV1 1.0",
            "3x224x224, 1000",
            MobileNetV1Config::new(1.0, 1000)?,
            "569 M MACs / 4.2 M",
            true,
        )?,
        row::<MobileNetV2>(
            "MobileNetV2 1.0",
            "3x224x224, 1000",
            MobileNetV2Config::new(1.0, 1000)?,
            "300 M MACs / 3.4-3.5 M",
            true,
        )?,
        row::<RegNet>(
            "RegNetX-600MF",
            "3x224x224, 1000",
            RegNetConfig::x600mf(1000)?,
            "0.60 G MACs / 6.20 M (pytorchcv 6,196,040)",
            true,
        )?,
        row::<Vit>("DeiT-S", "3x224x224, 1000", VitConfig::deit_small(1000)?, "4.6 G MACs / 22 M", true)?,
        row::<Vit>("DeiT-T", "3x224x224, 1000", VitConfig::deit_tiny(1000)?, "1.3 G MACs / 5.7 M", true)?,
        row::<Edsr>("EDSR baseline x2", "LR 3x48x48", EdsrConfig::baseline(2)?, "1.37 M params", true)?,
        row::<Edsr>("EDSR baseline x4", "LR 3x48x48", EdsrConfig::baseline(4)?, "1.52 M params", true)?,
        row::<Edsr>("EDSR x2", "LR 3x48x48", EdsrConfig::full(2)?, "40.7 M params", false)?,
        row::<Edsr>("EDSR x4", "LR 3x48x48", EdsrConfig::full(4)?, "43.1 M params", false)?,
        row::<SrResNet>("SRResNet x4", "LR 3x48x48", SrResNetConfig::paper(4)?, "1.5 M params", true)?,
        row::<Rdn>("RDN (B) x2", "LR 3x48x48", RdnConfig::config_b(2)?, "22 M params", false)?,
    ];
    println!("MACs: multiply-accumulates per sample (FLOPs = 2 x MACs); params exclude BN running statistics.");
    println!(
        "| model | input, classes | MACs (config) | params (config) | counted forward pass | published (MACs / params) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in rows {
        let counted = match r.counted {
            // The config's closed form counts MACs and parameters; the counting pass also counts
            // element-wise work (bias, norm and residual adds), which the published figures omit.
            Some(c) if (c.macs, c.params) == (r.analytic.macs, r.analytic.params) => "equal".to_string(),
            Some(c) => format!("DIFFERS: {} / {}", m(c.macs), m(c.params)),
            None => "not run (large)".to_string(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.model,
            r.setting,
            m(r.analytic.macs),
            m(r.analytic.params),
            counted,
            r.published
        );
    }
    Ok(())
}
