//! A DDTB (or baseline) quantization-aware training run: the arm, the schedule of spec 2.7 and
//! the hyperparameters of spec section 3, with the paper's table 5 as presets.

use crate::act_quant::BoundInit;
use crate::error::{DdtbError, Result};
use crate::models::SrArch;
use crate::scheme::{ActScheme, QuantScheme};
use compress_core::quant::WeightQuantizer;
use compress_nn::zoo::{EdsrConfig, RdnConfig, SrResNetConfig, SrSetting};

/// What is trained: DDTB or one of the baselines it is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Arm {
    /// (a) PAMS: symmetric trainable clip, symmetric max-abs weights.
    Pams,
    /// (a') PAMS activations with DDTB's weight quantizer (isolates the activation quantizer).
    PamsDdtbWeights,
    /// (b) DDTB: dual trainable bounds and dynamic gates.
    Ddtb,
    /// (c) DDTB without gates (static dual bounds everywhere).
    DdtbNoGates,
}

impl Arm {
    /// Short name for run folders and reports.
    pub fn key(self) -> &'static str {
        match self {
            Arm::Pams => "pams",
            Arm::PamsDdtbWeights => "pams-ddtb-weights",
            Arm::Ddtb => "ddtb",
            Arm::DdtbNoGates => "ddtb-no-gates",
        }
    }

    /// Whether dynamic layers get gates.
    pub fn gated(self) -> bool {
        self == Arm::Ddtb
    }
}

/// The per-architecture choices of spec section 3.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArchDefaults {
    /// Dynamic ratio `r`.
    pub dynamic_ratio: f64,
    /// Activation percentile `M` for 2-bit bound initialisation.
    pub act_percentile: f64,
    /// DDTB's weight quantizer.
    pub weight: WeightQuantizer,
}

impl ArchDefaults {
    /// EDSR 0.3 / 99 / p1-p99, RDN 0.5 / 95 / min-max, SRResNet 0.1 / 99 / p1-p99.
    /// EDSR's choices.
    pub fn edsr() -> Self {
        Self { dynamic_ratio: 0.3, act_percentile: 99.0, weight: WeightQuantizer::Percentile { lo: 1.0, hi: 99.0 } }
    }

    /// The choices for one of the paper's architectures.
    pub fn of(arch: &SrArch) -> Self {
        let p1p99 = WeightQuantizer::Percentile { lo: 1.0, hi: 99.0 };
        match arch {
            SrArch::Edsr(_) => Self { dynamic_ratio: 0.3, act_percentile: 99.0, weight: p1p99 },
            SrArch::Rdn(_) => Self { dynamic_ratio: 0.5, act_percentile: 95.0, weight: WeightQuantizer::MinMax },
            SrArch::SrResNet(_) => Self { dynamic_ratio: 0.1, act_percentile: 99.0, weight: p1p99 },
        }
    }
}

/// What DDTB itself needs to know (spec sections 2.1-2.5 and 3): the quantizers, the dynamic
/// layers and their gates. Apart from the training recipe ([`SrRecipe`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DdtbSettings {
    /// Bits of weights and activations.
    pub bits: u32,
    /// Fraction `r` of the called activation quantizers made dynamic.
    pub dynamic_ratio: f64,
    /// How bounds start.
    pub bound_init: BoundInit,
    /// DDTB's body-weight quantizer (PAMS uses symmetric max-abs).
    pub weight: WeightQuantizer,
    /// Weight quantizers on during calibration (official RDN quirk).
    pub weights_in_calibration: bool,
    /// Gate width (32).
    pub gate_hidden: usize,
    /// Let gradients reach the gate's first layer (the official code's A2 blocks them).
    pub train_gate_first_layer: bool,
}

impl DdtbSettings {
    /// The paper's settings at `bits` for a network like EDSR (dynamic ratio 0.3, 2-bit bounds
    /// from the 99th activation percentile, p1-p99 weights); [`ArchDefaults`] has RDN's and
    /// SRResNet's.
    pub fn paper(bits: u32) -> Self {
        Self::with_defaults(bits, &ArchDefaults::edsr())
    }

    /// The settings at `bits` with one architecture's choices.
    pub fn with_defaults(bits: u32, d: &ArchDefaults) -> Self {
        Self {
            bits,
            dynamic_ratio: d.dynamic_ratio,
            bound_init: BoundInit::PercentileIf2Bit { percentile: d.act_percentile },
            weight: d.weight,
            weights_in_calibration: matches!(d.weight, WeightQuantizer::MinMax),
            gate_hidden: 32,
            train_gate_first_layer: false,
        }
    }

    /// DDTB's quantization scheme: dual trainable bounds, the body-weight quantizer.
    pub fn scheme(&self) -> QuantScheme {
        QuantScheme {
            bits: self.bits,
            act: ActScheme::Ddtb(self.bound_init),
            weight: Some(self.weight),
            weights_in_calibration: self.weights_in_calibration,
        }
    }
}

/// The training recipe of spec 2.7: calibration, the two stages, Adam with two learning rates
/// and the official StepLR, the loss weights.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SrRecipe {
    /// Calibration batches (official: the whole first epoch, 1000).
    pub calibration_batches: usize,
    /// Training iterations after calibration (official: 59 epochs x 1000).
    pub iterations: u64,
    /// Iterations of stage 1 (gates computed, not applied; `R_gate` added). Official: 4 epochs.
    pub stage1_iterations: u64,
    /// Iterations per "epoch" of the StepLR schedule; the calibration epoch counts as the first.
    pub epoch_iterations: u64,
    /// StepLR period in epochs (10) and factor (0.5).
    pub lr_step_epochs: u64,
    /// StepLR factor.
    pub lr_gamma: f64,
    /// Learning rate of weights, biases, BatchNorm and gates (1e-4).
    pub lr: f64,
    /// Learning rate of the bounds (1e-2 at `rgb_range` 255).
    pub bound_lr: f64,
    /// Batch size (16).
    pub batch: usize,
    /// LR patch side.
    pub lr_patch: usize,
    /// Weight of the L1 term.
    pub w_l1: f64,
    /// Weight of the attention-transfer term (1000).
    pub w_at: f64,
    /// Evaluations on the test pairs (the iterations are split into this many rounds).
    pub rounds: usize,
    /// Seed: patches, gate initialisation.
    pub seed: u64,
}

impl SrRecipe {
    /// The official recipe with LR patches of `lr_patch` pixels.
    pub fn paper(lr_patch: usize) -> Self {
        Self {
            calibration_batches: 1000,
            iterations: 59_000,
            stage1_iterations: 4_000,
            epoch_iterations: 1000,
            lr_step_epochs: 10,
            lr_gamma: 0.5,
            lr: 1e-4,
            bound_lr: 1e-2,
            batch: 16,
            lr_patch,
            w_l1: 1.0,
            w_at: 1000.0,
            rounds: 59,
            seed: 1,
        }
    }

    /// Checks the recipe.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(DdtbError::Config(m.into()));
        if self.iterations == 0 || self.rounds == 0 || self.batch == 0 || self.lr_patch == 0 {
            return bad("iterations, rounds, batch and patch must be at least 1");
        }
        if self.stage1_iterations > self.iterations || self.epoch_iterations == 0 || self.lr_step_epochs == 0 {
            return bad("stage 1 longer than the run, or a zero-length epoch");
        }
        if !(self.lr > 0.0 && self.bound_lr > 0.0) {
            return bad("learning rates must be positive");
        }
        Ok(())
    }

    /// StepLR milestones in optimizer steps: `lr_e = lr_0 gamma^floor((e - 1) / 10)` with epoch
    /// 1 the calibration epoch, so the first halving comes after 9 training epochs.
    pub fn lr_milestones(&self) -> Vec<u64> {
        let period = self.lr_step_epochs * self.epoch_iterations;
        (1..).map(|k| k * period - self.epoch_iterations).take_while(|m| *m < self.iterations).collect()
    }
}

/// An experiment's run (written to its `config.toml`, flat): the network, the arm, DDTB's
/// settings and the recipe.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DdtbConfig {
    /// The network.
    pub arch: SrArch,
    /// DDTB or a baseline.
    pub arm: Arm,
    /// The method's settings (the baselines use their bits; PAMS its own quantizers).
    #[serde(flatten)]
    pub method: DdtbSettings,
    /// The training recipe.
    #[serde(flatten)]
    pub recipe: SrRecipe,
}

impl DdtbConfig {
    /// The official recipe (spec sections 2.7 and 3) for `arch` at `bits` (W = A = bits).
    pub fn paper(arch: SrArch, arm: Arm, bits: u32) -> Self {
        let d = ArchDefaults::of(&arch);
        let scale = arch.setting().scale;
        let lr_patch = match (&arch, scale) {
            (SrArch::Rdn(_), 4) => 24,
            (SrArch::Rdn(_), _) => 32,
            _ => 48,
        };
        Self { arch, arm, method: DdtbSettings::with_defaults(bits, &d), recipe: SrRecipe::paper(lr_patch) }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<()> {
        self.scheme().validate()?;
        self.recipe.validate()?;
        if !(0.0..=1.0).contains(&self.method.dynamic_ratio) {
            return Err(DdtbError::Config("the dynamic ratio must be in [0, 1]".into()));
        }
        if self.method.gate_hidden == 0 {
            return Err(DdtbError::Config("the gate needs at least one hidden unit".into()));
        }
        Ok(())
    }

    /// The student's quantization scheme for this arm.
    pub fn scheme(&self) -> QuantScheme {
        let m = &self.method;
        match self.arm {
            Arm::Pams => QuantScheme { act: ActScheme::Pams, weight: Some(WeightQuantizer::SymMaxAbs), ..m.scheme() },
            Arm::PamsDdtbWeights => QuantScheme { act: ActScheme::Pams, ..m.scheme() },
            Arm::Ddtb | Arm::DdtbNoGates => m.scheme(),
        }
    }

    /// StepLR milestones in optimizer steps ([`SrRecipe::lr_milestones`]).
    pub fn lr_milestones(&self) -> Vec<u64> {
        self.recipe.lr_milestones()
    }
}

/// One row of the paper's table 5.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaperRow {
    /// `edsr`, `rdn` or `srresnet`.
    pub model: &'static str,
    /// Scale.
    pub scale: usize,
    /// Bits.
    pub bits: u32,
    /// PSNR / SSIM on Set5, Set14, B100, Urban100.
    pub results: [(f64, f64); 4],
}

/// The benchmarks of table 5, in column order.
pub const BENCHMARKS: [&str; 4] = ["Set5", "Set14", "B100", "Urban100"];

/// Table 5 of the spec (the official README's released models).
pub const PAPER_TABLE: [PaperRow; 18] = [
    PaperRow {
        model: "edsr",
        scale: 4,
        bits: 2,
        results: [(30.97, 0.876), (27.87, 0.764), (27.09, 0.719), (24.82, 0.742)],
    },
    PaperRow {
        model: "edsr",
        scale: 4,
        bits: 3,
        results: [(31.52, 0.883), (28.18, 0.771), (27.30, 0.727), (25.33, 0.761)],
    },
    PaperRow {
        model: "edsr",
        scale: 4,
        bits: 4,
        results: [(31.85, 0.889), (28.39, 0.777), (27.44, 0.732), (25.69, 0.774)],
    },
    PaperRow {
        model: "edsr",
        scale: 2,
        bits: 2,
        results: [(37.25, 0.958), (32.87, 0.911), (31.67, 0.893), (30.34, 0.910)],
    },
    PaperRow {
        model: "edsr",
        scale: 2,
        bits: 3,
        results: [(37.51, 0.958), (33.17, 0.914), (31.89, 0.896), (31.01, 0.919)],
    },
    PaperRow {
        model: "edsr",
        scale: 2,
        bits: 4,
        results: [(37.72, 0.959), (33.35, 0.916), (32.01, 0.898), (31.39, 0.922)],
    },
    PaperRow {
        model: "rdn",
        scale: 4,
        bits: 2,
        results: [(30.57, 0.867), (27.56, 0.757), (26.91, 0.714), (24.50, 0.728)],
    },
    PaperRow {
        model: "rdn",
        scale: 4,
        bits: 3,
        results: [(31.49, 0.883), (28.17, 0.772), (27.30, 0.728), (25.35, 0.764)],
    },
    PaperRow {
        model: "rdn",
        scale: 4,
        bits: 4,
        results: [(31.97, 0.891), (28.49, 0.780), (27.49, 0.735), (25.90, 0.783)],
    },
    PaperRow {
        model: "rdn",
        scale: 2,
        bits: 2,
        results: [(36.76, 0.955), (32.54, 0.908), (31.44, 0.890), (29.77, 0.903)],
    },
    PaperRow {
        model: "rdn",
        scale: 2,
        bits: 3,
        results: [(37.61, 0.959), (33.26, 0.915), (31.91, 0.897), (31.10, 0.920)],
    },
    PaperRow {
        model: "rdn",
        scale: 2,
        bits: 4,
        results: [(37.88, 0.960), (33.51, 0.917), (32.12, 0.899), (31.76, 0.926)],
    },
    PaperRow {
        model: "srresnet",
        scale: 4,
        bits: 2,
        results: [(31.51, 0.887), (28.23, 0.773), (27.33, 0.728), (25.37, 0.762)],
    },
    PaperRow {
        model: "srresnet",
        scale: 4,
        bits: 3,
        results: [(31.85, 0.890), (28.39, 0.776), (27.44, 0.731), (25.64, 0.770)],
    },
    PaperRow {
        model: "srresnet",
        scale: 4,
        bits: 4,
        results: [(31.97, 0.892), (28.46, 0.778), (27.48, 0.733), (25.77, 0.776)],
    },
    PaperRow {
        model: "srresnet",
        scale: 2,
        bits: 2,
        results: [(37.46, 0.958), (33.02, 0.913), (31.78, 0.895), (30.57, 0.913)],
    },
    PaperRow {
        model: "srresnet",
        scale: 2,
        bits: 3,
        results: [(37.67, 0.959), (33.24, 0.915), (31.95, 0.897), (31.15, 0.919)],
    },
    PaperRow {
        model: "srresnet",
        scale: 2,
        bits: 4,
        results: [(37.78, 0.960), (33.32, 0.916), (32.03, 0.898), (31.40, 0.921)],
    },
];

impl PaperRow {
    /// The row's network at the paper's size, with `rgb_range` 255 (the official weights).
    pub fn arch(&self) -> Result<SrArch> {
        let lr = if self.model == "rdn" { if self.scale == 4 { 24 } else { 32 } } else { 48 };
        let set = |s: &mut SrSetting| {
            s.lr_size = lr;
            s.rgb_range = 255.0;
        };
        Ok(match self.model {
            "edsr" => SrArch::Edsr(EdsrConfig::baseline(self.scale)?.with_setting(lr, 255.0)),
            "rdn" => {
                let mut c = RdnConfig::config_b(self.scale)?;
                set(&mut c.setting);
                SrArch::Rdn(c)
            }
            "srresnet" => {
                let mut c = SrResNetConfig::paper(self.scale)?;
                set(&mut c.setting);
                SrArch::SrResNet(c)
            }
            m => return Err(DdtbError::Config(format!("unknown model {m}"))),
        })
    }

    /// The DDTB configuration of the row.
    pub fn config(&self) -> Result<DdtbConfig> {
        Ok(DdtbConfig::paper(self.arch()?, Arm::Ddtb, self.bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::step_lr;

    fn edsr(scale: usize) -> SrArch {
        SrArch::Edsr(EdsrConfig::baseline(scale).unwrap())
    }

    #[test]
    fn the_engine_schedule_is_the_official_step_lr() {
        let cfg = DdtbConfig::paper(edsr(4), Arm::Ddtb, 2);
        let schedule = crate::trainer::engine_config(&cfg.recipe).schedule;
        // Training epoch e (1-based, e >= 2; epoch 1 calibrates) covers steps (e - 2) .. (e - 1) x 1000.
        for e in 2..=60usize {
            for step in [(e as u64 - 2) * 1000, (e as u64 - 1) * 1000 - 1] {
                let want = step_lr(1e-4, e, 10);
                assert!(
                    (schedule.lr(step) - want).abs() < 1e-18,
                    "epoch {e} step {step}: {} vs {want}",
                    schedule.lr(step)
                );
            }
        }
        assert_eq!(cfg.lr_milestones(), vec![9_000, 19_000, 29_000, 39_000, 49_000]);
        assert_eq!(cfg.recipe.bound_lr / cfg.recipe.lr, 100.0);
    }

    #[test]
    fn impossible_configs_are_errors() {
        let ok = DdtbConfig::paper(edsr(2), Arm::Ddtb, 2);
        ok.validate().unwrap();
        let bad = [
            DdtbConfig { method: DdtbSettings { bits: 0, ..ok.method.clone() }, ..ok.clone() },
            DdtbConfig { method: DdtbSettings { bits: 9, ..ok.method.clone() }, ..ok.clone() },
            DdtbConfig { method: DdtbSettings { dynamic_ratio: 1.5, ..ok.method.clone() }, ..ok.clone() },
            DdtbConfig {
                recipe: SrRecipe { stage1_iterations: ok.recipe.iterations + 1, ..ok.recipe.clone() },
                ..ok.clone()
            },
            DdtbConfig { recipe: SrRecipe { iterations: 0, ..ok.recipe.clone() }, ..ok.clone() },
            DdtbConfig { recipe: SrRecipe { bound_lr: 0.0, ..ok.recipe.clone() }, ..ok.clone() },
            DdtbConfig {
                method: DdtbSettings {
                    weight: WeightQuantizer::Percentile { lo: 1.0, hi: 101.0 },
                    ..ok.method.clone()
                },
                ..ok.clone()
            },
            DdtbConfig { arm: Arm::Pams, method: DdtbSettings { bits: 1, ..ok.method.clone() }, ..ok.clone() },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn table5_rows_use_the_per_model_settings() {
        for r in &PAPER_TABLE {
            let c = r.config().unwrap();
            let (ratio, m) = match r.model {
                "edsr" => (0.3, 99.0),
                "rdn" => (0.5, 95.0),
                _ => (0.1, 99.0),
            };
            assert_eq!(c.method.dynamic_ratio, ratio);
            assert_eq!(c.method.bound_init, BoundInit::PercentileIf2Bit { percentile: m });
            assert_eq!(c.method.weight == WeightQuantizer::MinMax, r.model == "rdn");
            assert_eq!(c.arch.setting().scale, r.scale);
        }
    }
}
