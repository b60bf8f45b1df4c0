//! The paper's settings (section 3 and 5 of the spec): the official `--cprate` strings, the zoo
//! configs they prune, and the published compact sizes and accuracies.

use crate::error::Result;
use compress_nn::zoo::{ResNetCifarConfig, ResNetConfig, VggConfig};
use compress_prune::{expand_resnet_cifar, expand_resnet50, parse_cprate};

/// The official rate string of VGG-16 on CIFAR-10.
pub const VGG16_CIFAR10: &str = "[0.5]*2+[0.4]*2+[0.35]*3+[0.85]*6";
/// ResNet-56 on CIFAR-10: 27 `conv1` rates, then the 3 stage rates.
pub const RESNET56_CIFAR10: &str = "[0.7]*2+[0.5]*3+[0.3]*2+[0.4]+[0.8]+ [0.7]*2+[0.8]*4+[0.4]+[0.2]*2+[0.7]+[0.3]+\
                                    [0.8]+[0.4]*2+[0.7]+[0.3]+[0.4]+[0.8]+ [0.0]*3";
/// ResNet-110 on CIFAR-10: 54 `conv1` rates, then the 3 stage rates.
pub const RESNET110_CIFAR10: &str = "[0.2]+[0.0]+[0.2]+[0.3]+[0.7]*2+[0.1]+[0.3]*2+[0.4]+[0.7]*2+[0.5]+[0.1]+[0.3]+\
    [0.0]+[0.6]+[0.0]+[0.2]+[0.5]+[0.0]+[0.7]*2+[0.5]+[0.7]*2+[0.4]*2+[0.0]+[0.3]+[0.1]+[0.5]+[0.1]*3+[0.7]+ \
    [0.1]*2+[0.3]*5+[0.5]+[0.7]+[0.2]+[0.4]+[0.7]*5+[0.5]+[0.1]+ [0.6]+[0.2]+[0.5]";
/// ResNet-50 on ImageNet, runs A-F: `(name, schedule, cprate)`.
pub const RESNET50_RUNS: [(&str, Schedule, &str); 6] = [
    ("A", Schedule::Step, "[0.0]+[0.8]*10+[0.7]*6+[0.6]*10+[0.4]*6+[0.3]*4"),
    ("B", Schedule::Step, "[0.0]+[0.6]*10+[0.5]*6+[0.5]*10+[0.4]*6+[0.2]*4"),
    ("C", Schedule::Step, "[0.0]+[0.35]*10+[0.3]*6+[0.4]*10+[0.3]*6+[0.1]*4"),
    ("D", Schedule::Cos, "[0.0]+([0.5]*10+[0.5]*6)*2+[0.25]*3+[0.0]"),
    ("E", Schedule::Cos, "[0.0]+([0.7]*7+[0.45]*9)*2+[0.24]*3+[0.0]"),
    ("F", Schedule::Cos, "[0.0]+([0.43]*7+[0.73]*9)*2+[0.45]*3+[0.0]"),
];

/// The official learning-rate schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Schedule {
    /// CIFAR: 300 epochs, lr 0.1, x0.1 at epochs 150 and 225. ImageNet "step": 90 epochs,
    /// `0.1 * 0.1^(floor(e/30) + [e >= 80])`, 5 warm-up epochs.
    Step,
    /// ImageNet "cos": 180 epochs, lr 0.01, momentum 0.99, cosine after 5 warm-up epochs.
    Cos,
}

/// One row of the paper's table: the model, its rates, and what the paper reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PaperSetting {
    /// Row name (`C10 VGG-16`, `IN ResNet-50 A`).
    pub name: String,
    /// The model.
    pub model: PaperModel,
    /// Per-layer rates (expanded, in `LayerwiseRates` order).
    pub layer_rates: Vec<f64>,
    /// Schedule.
    pub schedule: Schedule,
    /// Published FLOPs of the compact model (the papers' counter: see `Cost::pruning_flops`).
    pub flops: f64,
    /// Published parameters of the compact model.
    pub params: f64,
    /// Published FLOPs and parameter reductions (%), two decimals.
    pub reductions: (f64, f64),
    /// Published top-1 (%).
    pub top1: f64,
}

/// The zoo config of a paper row.
#[derive(Debug, Clone, serde::Serialize)]
pub enum PaperModel {
    /// VGG-16 with a single linear classifier.
    Vgg(VggConfig),
    /// CIFAR ResNet-56/110 (option A).
    ResNetCifar(ResNetCifarConfig),
    /// ImageNet ResNet-50.
    ResNet(ResNetConfig),
}

/// Every row of the paper's table that this toolkit's zoo covers (GoogLeNet and MobileNetV2 are
/// out of scope of the spec).
pub fn paper_settings() -> Result<Vec<PaperSetting>> {
    let vgg = VggConfig::vgg16(10)?.single_linear();
    let mut rows = vec![
        PaperSetting {
            name: "C10 VGG-16".into(),
            model: PaperModel::Vgg(vgg),
            layer_rates: parse_cprate(VGG16_CIFAR10)?,
            schedule: Schedule::Step,
            flops: 72.77e6,
            params: 1.06e6,
            reductions: (76.83, 92.80),
            top1: 93.47,
        },
        PaperSetting {
            name: "C10 ResNet-56".into(),
            model: PaperModel::ResNetCifar(ResNetCifarConfig::new(56, 10)?),
            layer_rates: expand_resnet_cifar(&parse_cprate(RESNET56_CIFAR10)?, 9)?,
            schedule: Schedule::Step,
            flops: 55.84e6,
            params: 0.38e6,
            reductions: (55.88, 54.95),
            top1: 93.26,
        },
        PaperSetting {
            name: "C10 ResNet-110".into(),
            model: PaperModel::ResNetCifar(ResNetCifarConfig::new(110, 10)?),
            layer_rates: expand_resnet_cifar(&parse_cprate(RESNET110_CIFAR10)?, 18)?,
            schedule: Schedule::Step,
            flops: 85.30e6,
            params: 0.56e6,
            reductions: (66.55, 67.86),
            top1: 93.80,
        },
    ];
    let published = [
        (0.96e9, 7.40e6, (76.70, 71.03), 71.54),
        (1.49e9, 10.58e6, (63.75, 58.60), 74.21),
        (2.25e9, 15.16e6, (45.30, 40.67), 75.18),
        (1.52e9, 11.05e6, (62.96, 56.77), 75.60),
        (1.38e9, 11.81e6, (66.41, 53.77), 74.85),
        (1.02e9, 6.56e6, (75.11, 74.33), 73.81),
    ];
    for ((name, schedule, rates), (flops, params, reductions, top1)) in RESNET50_RUNS.iter().zip(published) {
        rows.push(PaperSetting {
            name: format!("IN ResNet-50 {name}"),
            model: PaperModel::ResNet(ResNetConfig::resnet50(1000)?),
            layer_rates: expand_resnet50(&parse_cprate(rates)?)?,
            schedule: *schedule,
            flops,
            params,
            reductions,
            top1,
        });
    }
    Ok(rows)
}
