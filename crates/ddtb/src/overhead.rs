//! The cost of fake quantization in training (issue: keep a DDTB step under 2x the
//! full-precision step): one Adam step of the full-precision network on L1 against one step of
//! a quantized arm (teacher forward, quantized student forward and backward, distillation loss,
//! Adam over both groups), on the same batch, same threads, medians in one process.

use crate::act_quant::Phase;
use crate::config::{Arm, DdtbConfig};
use crate::error::{DdtbError, Result};
use crate::scheme::QuantScheme;
use crate::trainer::{attach_gates, calibrate, param_groups, step_loss, student, teacher};
use candle_core::{Device, Tensor};
use compress_core::rng::SeededRng;
use compress_core::timing::median_seconds;
use compress_data::SrPairs;
use compress_train::loss::l1;
use compress_train::optim::{Optimizer, OptimizerKind, all_params};
use std::collections::HashMap;

/// Median seconds of one training step.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct StepTimes {
    /// Full-precision network, L1, Adam.
    pub fp: f64,
    /// The quantized arm in stage 2 (gates applied where it has them).
    pub quantized: f64,
}

impl StepTimes {
    /// `quantized / fp`.
    pub fn ratio(&self) -> f64 {
        self.quantized / self.fp
    }
}

/// Times `cfg`'s arm against the full-precision step on batches of `train`, starting from `fp`.
pub fn step_times(cfg: &DdtbConfig, fp: &HashMap<String, Tensor>, train: &SrPairs, seconds: f64) -> Result<StepTimes> {
    let device = Device::Cpu;
    let rgb = f64::from(cfg.arch.setting().rgb_range);
    let rng = SeededRng::new(cfg.recipe.seed);
    let b = train.patch_batch(&mut rng.stream("bench", 0), cfg.recipe.batch, cfg.recipe.lr_patch, &device)?;
    let (lr, hr) = ((b.lr * rgb)?, (b.hr * rgb)?);

    let (fp_model, fp_vars) = student(&cfg.arch, &QuantScheme::full_precision(), fp, cfg.recipe.seed, &device)?;
    let mut fp_opt = Optimizer::new(OptimizerKind::adam(), all_params(&fp_vars, 0.0)?)?;
    let fp_step = || -> candle_core::Result<()> {
        let out = fp_model.forward_t(&lr, true).map_err(to_candle)?;
        let g = l1(&out.sr, &hr).map_err(candle_core::Error::wrap)?.backward()?;
        fp_opt.step(&g, cfg.recipe.lr).map_err(candle_core::Error::wrap)
    };
    let fp_s = median_seconds(2, 5, seconds, fp_step)?;

    let t = teacher(&cfg.arch, fp, &device)?;
    let (model, vars) = student(&cfg.arch, &cfg.scheme(), fp, cfg.recipe.seed, &device)?;
    let cal =
        calibrate(model.as_ref(), cfg.method.dynamic_ratio, &cfg.recipe, cfg.arch.setting().rgb_range, train, &device)?;
    if cfg.arm.gated() {
        attach_gates(model.as_ref(), &vars, &cfg.method, cfg.recipe.seed, &cal)?;
    }
    model.set_phase(Phase::Dynamic)?;
    let mut opt = Optimizer::new(OptimizerKind::adam(), param_groups(&vars, &cfg.recipe)?)?;
    let q_step = || -> candle_core::Result<()> {
        let loss = step_loss(&cfg.recipe, t.as_ref(), model.as_ref(), &lr, &hr, false).map_err(to_candle)?;
        opt.step(&loss.backward()?, cfg.recipe.lr).map_err(candle_core::Error::wrap)
    };
    let q_s = median_seconds(2, 5, seconds, q_step)?;
    Ok(StepTimes { fp: fp_s, quantized: q_s })
}

fn to_candle(e: DdtbError) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

/// The arms of the mini experiment, timed (`cargo xtask bench ddtb`).
pub fn arms() -> [Arm; 4] {
    [Arm::Pams, Arm::PamsDdtbWeights, Arm::Ddtb, Arm::DdtbNoGates]
}

/// `cargo xtask bench ddtb`: the step cost of every mini arm against the full-precision step,
/// from the mini's full-precision start under `runs` (trained if missing), as a Markdown table.
pub fn bench(runs: &std::path::Path, seconds: f64) -> Result<String> {
    let s = crate::reproduce::MiniSettings::mini();
    let ctx = compress_train::RunContext::new(runs, Device::Cpu).quiet(true);
    let fp = compress_nn::weights::read(&crate::reproduce::fp_start(&s, &ctx)?, &Device::Cpu)?;
    let train = compress_data::embedded::photos_12("train", 2)?;
    let mut out = format!(
        "EDSR-mini x2 W2A2 train step, batch {} x {} px, {} candle thread(s); FP = full precision, L1, Adam\n\
         | arm | FP step (ms) | quantized step (ms) | ratio |\n| --- | --- | --- | --- |\n",
        s.batch,
        s.lr_patch,
        candle_core::utils::get_num_threads()
    );
    for arm in arms() {
        let t = step_times(&s.config(arm, 0)?, &fp, &train, seconds)?;
        out += &format!("| {} | {:.1} | {:.1} | {:.2} |\n", arm.key(), t.fp * 1e3, t.quantized * 1e3, t.ratio());
    }
    Ok(out)
}
