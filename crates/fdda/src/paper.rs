//! `cargo xtask reproduce fdda --profile paper`: the paper's ImageNet table (spec sections 3-5).
//!
//! What runs without ImageNet is checked on every row's network (the zoo's, randomly
//! initialised): its BatchNorm count `L` against the spec's (it sets the deep-layer range `s =
//! floor((L + 1) / 2) - 2` of C-BNS / D-BNS), and the student's F8L8 sites (the first conv and
//! the classifier at 8 bits, the activation quantizers after the first layer and before the pool
//! at 8 bits, everything else at k). The table's accuracies need ImageNet (1,000 calibration
//! images and the 50,000 validation images), the pretrained teachers (pytorchcv `resnet18`,
//! `mobilenet_w1`, `regnetx006`, BRECQ's `mobilenetv2`, converted to safetensors), and a GPU (400 x 200
//! generator steps plus 70,000 student steps per row). The profile lists them as missing.

use crate::bits::{BitPolicy, student_quantizers};
use crate::error::Result;
use crate::losses::deep_start;
use candle_core::{DType, Device, Tensor};
use compress_core::quant::RangeRule;
use compress_nn::fake_quant::with_sites;
use compress_nn::zoo::{
    MobileNetV1, MobileNetV1Config, MobileNetV2, MobileNetV2Config, RegNet, RegNetConfig, ResNet, ResNetConfig,
};
use compress_nn::{Architecture, Network};
use compress_train::{Outcome, ReportRow, Rule, RunContext};

/// A teacher of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum PaperModel {
    /// pytorchcv `resnet18`.
    ResNet18,
    /// pytorchcv `mobilenet_w1`.
    MobileNetV1,
    /// BRECQ's `mobilenetv2` (torchvision's layout: the first block does not expand).
    MobileNetV2,
    /// pytorchcv `regnetx006` (the code's `regnetx_600m`).
    RegNetX600MF,
}

/// One row of the table (spec 5) with the spec's BatchNorm count (spec 4).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PaperRow {
    /// Name.
    pub name: &'static str,
    /// The teacher.
    pub model: PaperModel,
    /// `L`, the teacher's BatchNorm layers.
    pub bn_layers: usize,
    /// Top-1 (%): W4A4 F4L4, W4A4 F8L8, W5A5 F5L5, W5A5 F8L8.
    pub reported: [f64; 4],
}

/// The table's settings, in its column order.
pub const SETTINGS: [(&str, BitPolicy); 4] = [
    ("W4A4 F4L4", BitPolicy::Uniform { w: 4, a: 4 }),
    ("W4A4 F8L8", BitPolicy::FirstLast8 { w: 4, a: 4 }),
    ("W5A5 F5L5", BitPolicy::Uniform { w: 5, a: 5 }),
    ("W5A5 F8L8", BitPolicy::FirstLast8 { w: 5, a: 5 }),
];

/// The table.
pub fn paper_rows() -> Vec<PaperRow> {
    let row = |name, model, bn_layers, reported| PaperRow { name, model, bn_layers, reported };
    vec![
        row("ResNet-18", PaperModel::ResNet18, 20, [68.884, 69.758, 70.558, 70.864]),
        row("MobileNetV1", PaperModel::MobileNetV1, 27, [63.748, 65.760, 70.258, 71.764]),
        row("MobileNetV2", PaperModel::MobileNetV2, 52, [68.382, 69.322, 71.63, 71.99]),
        row("RegNetX-600MF", PaperModel::RegNetX600MF, 53, [68.960, 70.326, 73.620, 73.996]),
    ]
}

/// What a row's student is made of, counted on one forward pass.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sites {
    /// BatchNorm layers of the teacher.
    pub bn_layers: usize,
    /// Quantized weight tensors and activation quantizers.
    pub weights: usize,
    /// Activation quantizers.
    pub activations: usize,
    /// The weights at 8 bits (layer prefixes) under `policy`.
    pub eight_bit_weights: Vec<String>,
    /// Activation quantizers at 8 bits (call-order indices) under `policy`.
    pub eight_bit_activations: Vec<usize>,
}

/// The student sites of `net` under `policy`.
pub fn sites<A: Architecture>(net: &Network<A>, policy: BitPolicy, side: usize) -> Result<Sites> {
    let x = Tensor::zeros((1, 3, side, side), DType::F32, net.device())?;
    let (y, probe) = compress_nn::probe::probe(|| net.forward_t(&x, false));
    y?;
    let q = student_quantizers(net, policy, RangeRule::Plain)?;
    let (y, s) = with_sites(&q, || net.forward_t(&x, false));
    y?;
    Ok(Sites {
        bn_layers: probe.bn.len(),
        weights: s.weights,
        activations: s.activations,
        eight_bit_weights: s.weight_bits.iter().filter(|(_, b)| *b == 8).map(|(p, _)| p.clone()).collect(),
        eight_bit_activations: s.activation_bits.iter().enumerate().filter(|(_, b)| **b == 8).map(|(i, _)| i).collect(),
    })
}

/// The row's student sites on the zoo's network at `side` px.
pub fn row_sites(row: &PaperRow, policy: BitPolicy, side: usize) -> Result<Sites> {
    let cpu = Device::Cpu;
    Ok(match row.model {
        PaperModel::ResNet18 => sites(&Network::<ResNet>::new(ResNetConfig::resnet18(1000)?, 0, &cpu)?, policy, side)?,
        PaperModel::MobileNetV1 => {
            sites(&Network::<MobileNetV1>::new(MobileNetV1Config::new(1.0, 1000)?, 0, &cpu)?, policy, side)?
        }
        PaperModel::MobileNetV2 => {
            sites(&Network::<MobileNetV2>::new(MobileNetV2Config::new(1.0, 1000)?, 0, &cpu)?, policy, side)?
        }
        PaperModel::RegNetX600MF => {
            sites(&Network::<RegNet>::new(RegNetConfig::x600mf(1000)?, 0, &cpu)?, policy, side)?
        }
    })
}

/// The paper profile: the rows' structure checked, the accuracies listed as missing.
pub fn paper(ctx: &RunContext) -> Result<Outcome> {
    #[derive(serde::Serialize)]
    struct Config {
        rows: Vec<PaperRow>,
        side: usize,
    }
    let config = Config { rows: paper_rows(), side: 224 };
    let mut exp = ctx.run("", &config, 0)?;
    let rows_cfg = &config.rows;
    let mut rows = Vec::new();
    for r in rows_cfg {
        let s = row_sites(r, BitPolicy::FirstLast8 { w: 4, a: 4 }, config.side)?;
        rows.push(
            ReportRow::claim(
                format!("{}: BatchNorm layers L (deep range from s = {})", r.name, deep_start(s.bn_layers)),
                None,
                Some(s.bn_layers as f64),
                format!("L = {} as the spec (s = {})", r.bn_layers, deep_start(r.bn_layers)),
                Rule::Holds(s.bn_layers == r.bn_layers),
            )
            .counts(),
        );
        let ok =
            s.eight_bit_weights.len() == 2 && s.eight_bit_activations == [0, s.activations - 1] && s.activations > 2;
        rows.push(
            ReportRow::claim(
                format!(
                    "{}: W4A4 F8L8 sites at 8 bits of {} weights / {} activation quantizers ({})",
                    r.name,
                    s.weights,
                    s.activations,
                    s.eight_bit_weights.join(", ")
                ),
                None,
                Some((s.eight_bit_weights.len() + s.eight_bit_activations.len()) as f64),
                "first conv + classifier weights, the first and last activation quantizers",
                Rule::Holds(ok),
            )
            .counts(),
        );
        for ((setting, _), v) in SETTINGS.iter().zip(r.reported) {
            rows.push(
                ReportRow::claim(
                    format!("{} {setting}: ImageNet top-1 (%)", r.name),
                    None,
                    None,
                    "the paper's number (needs ImageNet, the teacher, a GPU)",
                    Rule::PaperWithin(1.0),
                )
                .against_paper(Some(v), Some(Rule::PaperWithin(1.0))),
            );
        }
        exp.log(&serde_json::json!({"row": r.name, "f8l8": s}))?;
    }
    let missing = vec![
        "ImageNet: 1,000 training images (one per class) for the centres and calibration, the 50,000 validation \
         images for the table"
            .to_string(),
        "the pretrained teachers: pytorchcv resnet18 / mobilenet_w1 / regnetx006 (tools/convert_pytorchcv.py) and \
         BRECQ's mobilenetv2 checkpoint, converted to safetensors"
            .to_string(),
        "a GPU: 400 x 200 generator steps (about 33.6 s each at 224 px on this CPU, `cargo xtask bench synth`) \
         plus 70,000 student steps per row"
            .to_string(),
    ];
    let report = ctx
        .report("FDDA paper: the ImageNet table (structure checked; training missing)", &[0])
        .rows(rows)
        .notes("\nStudents counted on the zoo's networks at 224 px, randomly initialised.\n");
    exp.write_report(&report)?;
    Ok(Outcome::new(exp.dir(), report, missing))
}
