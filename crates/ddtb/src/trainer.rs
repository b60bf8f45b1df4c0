//! DDTB's quantization-aware training (spec 2.4-2.8): the full-precision teacher and the
//! quantized student start from the same weights; a calibration pass in full precision records
//! each activation quantizer's per-batch range and picks the dynamic layers; then stage 1 (static
//! bounds, gate logits regularised) and stage 2 (per-sample bounds) train with
//! `L = w_l1 |SR - HR| + w_at AT(F_s, F_t) (+ R_gate in stage 1)` under Adam with two learning
//! rates (bounds and the rest) and the official StepLR.

use crate::act_quant::Phase;
use crate::config::{DdtbConfig, DdtbSettings, SrRecipe};
use crate::error::{DdtbError, Result};
use crate::gate::DynamicGate;
use crate::intensity::{dynamic_intensity, select_dynamic};
use crate::models::{QuantSr, SrNet};
use crate::scheme::QuantScheme;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use compress_core::rng::SeededRng;
use compress_data::SrPairs;
use compress_train::engine::{Engine, TrainConfig, progress};
use compress_train::loss::{attention_transfer, l1};
use compress_train::optim::{OptimizerKind, ParamGroup, trainable};
use compress_train::record::Run;
use compress_train::schedule::{Decay, Schedule};
use compress_train::super_resolution::{SrScore, score};
use serde_json::json;
use std::collections::HashMap;

/// The full-precision teacher: the same network code, no quantizers, frozen tensors.
pub fn teacher(net: &dyn SrNet, fp: &HashMap<String, Tensor>, device: &Device) -> Result<Box<dyn QuantSr>> {
    let vb = VarBuilder::from_tensors(fp.clone(), DType::F32, device);
    net.build(&QuantScheme::full_precision(), vb)
}

/// The student: `scheme`'s quantizers over a copy of the full-precision weights. Every tensor
/// of `fp` must be a variable of the student (a mismatched checkpoint is an error); the
/// quantizers' own variables start as their initialisation says.
pub fn student(
    net: &dyn SrNet,
    scheme: &QuantScheme,
    fp: &HashMap<String, Tensor>,
    seed: u64,
    device: &Device,
) -> Result<(Box<dyn QuantSr>, VarMap)> {
    let vars = VarMap::new();
    scheme.validate()?;
    let model = net.build(scheme, compress_nn::init::seeded_builder(&vars, seed, DType::F32, device))?;
    let data = vars.data().lock().map_err(|_| DdtbError::Config("VarMap lock poisoned".into()))?;
    for (name, t) in fp {
        let v = data
            .get(name)
            .ok_or_else(|| DdtbError::Config(format!("the full-precision weights have {name}, the model does not")))?;
        if v.shape() != t.shape() {
            return Err(DdtbError::Config(format!("{name}: weights {:?}, model {:?}", t.shape(), v.shape())));
        }
        v.set(&t.to_device(device)?.to_dtype(DType::F32)?)?;
    }
    drop(data);
    Ok((model, vars))
}

/// What calibration found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Calibration {
    /// Names of the DDTB quantizers, in forward order.
    pub names: Vec<String>,
    /// Their dynamic intensity (`None`: never called, not counted in `K`).
    pub intensity: Vec<Option<f64>>,
    /// The selected (dynamic) quantizers.
    pub dynamic: Vec<String>,
}

/// Runs the recipe's calibration batches (full precision, eval mode, no gradients, pixels at
/// `rgb_range`) through `model`, recording each quantizer's range (spec 2.4), and selects the
/// `floor(r K)` most intense ones.
pub fn calibrate(
    model: &dyn QuantSr,
    ratio: f64,
    recipe: &SrRecipe,
    rgb_range: f32,
    train: &SrPairs,
    device: &Device,
) -> Result<Calibration> {
    let rng = SeededRng::new(recipe.seed);
    let rgb = f64::from(rgb_range);
    let batches = (0..recipe.calibration_batches).map(|t| -> Result<Tensor> {
        let b = train.patch_batch(&mut rng.stream("calibration", t as u64), recipe.batch, recipe.lr_patch, device)?;
        Ok((b.lr * rgb)?)
    });
    calibrate_on(model, ratio, batches)
}

/// [`calibrate`] on given LR batches (already at the model's pixel range).
pub fn calibrate_on(
    model: &dyn QuantSr,
    ratio: f64,
    batches: impl IntoIterator<Item = Result<Tensor>>,
) -> Result<Calibration> {
    model.set_phase(Phase::Calibrate)?;
    for b in batches {
        model.forward_t(&b?, false)?;
    }
    let mut names = Vec::new();
    let mut stats = Vec::new();
    for q in model.act_quants() {
        if let Some(s) = q.stats()? {
            names.push(q.name.clone());
            stats.push(s);
        }
    }
    let intensity = dynamic_intensity(&stats);
    let dynamic = select_dynamic(&intensity, ratio).into_iter().map(|i| names[i].clone()).collect();
    Ok(Calibration { names, intensity, dynamic })
}

/// Gives every selected quantizer a gate (variables `<site>.gate.*` in `vars`).
/// Gate weights are drawn from `seed`.
pub fn attach_gates(model: &dyn QuantSr, vars: &VarMap, m: &DdtbSettings, seed: u64, cal: &Calibration) -> Result<()> {
    let vb = compress_nn::init::seeded_builder(vars, seed, DType::F32, &device_of(vars)?);
    for q in model.act_quants() {
        if !cal.dynamic.contains(&q.name) {
            continue;
        }
        let c = q
            .ddtb()
            .and_then(|d| d.channels().ok().flatten())
            .ok_or_else(|| DdtbError::Config(format!("{}: no calibrated DDTB quantizer to gate", q.name)))?;
        q.attach_gate(DynamicGate::new(
            c,
            m.gate_hidden,
            m.train_gate_first_layer,
            vb.pp(format!("{}.gate", q.name)),
        )?)?;
    }
    Ok(())
}

fn device_of(vars: &VarMap) -> Result<Device> {
    let data = vars.data().lock().map_err(|_| DdtbError::Config("VarMap lock poisoned".into()))?;
    Ok(data.values().next().map(|v| v.device().clone()).unwrap_or(Device::Cpu))
}

/// Whether a variable is a quantizer bound (DDTB `lower`/`upper`, PAMS `alpha`).
pub fn is_bound(name: &str) -> bool {
    name.ends_with(".lower") || name.ends_with(".upper") || name.ends_with(".alpha")
}

/// The smallest PAMS `alpha`, and the smallest DDTB span `u - l`, a step may leave.
pub const MIN_BOUND: f32 = 1e-6;

/// Keeps every quantizer's bounds usable after an optimizer step: a PAMS `alpha` below
/// [`MIN_BOUND`] is raised to it, and DDTB bounds closer than [`MIN_BOUND`] (or crossed) are
/// reset to `MIN_BOUND` apart around their midpoint. Adam's step on a bound near zero can carry
/// it across (a PAMS run ended at `alpha = -2.1e-5` and the quantizer refused it, aborting the
/// whole reproduction); the official code runs on with a degenerate clamp. Returns the names
/// changed (runs log them), empty in every run that never reaches such a state.
pub fn keep_bounds_valid(vars: &VarMap) -> Result<Vec<String>> {
    let data = vars.data().lock().map_err(|_| DdtbError::Config("VarMap lock poisoned".into()))?;
    let value = |v: &candle_core::Var| -> Result<f32> { Ok(v.as_tensor().to_dtype(DType::F32)?.to_scalar::<f32>()?) };
    let set =
        |v: &candle_core::Var, x: f32| -> Result<()> { Ok(v.set(&Tensor::new(x, v.device())?.to_dtype(v.dtype())?)?) };
    let mut changed = Vec::new();
    for (name, var) in data.iter() {
        if name.ends_with(".alpha") && var.elem_count() == 1 {
            let a = value(var)?;
            if a.is_nan() || a < MIN_BOUND {
                set(var, MIN_BOUND)?;
                changed.push(name.clone());
            }
        } else if let Some(prefix) = name.strip_suffix(".lower")
            && let Some(upper) = data.get(&format!("{prefix}.upper"))
            && var.elem_count() == 1
            && upper.elem_count() == 1
        {
            let (l, u) = (value(var)?, value(upper)?);
            if (u - l).is_nan() || u - l < MIN_BOUND {
                let mid = if (l + u).is_finite() { 0.5 * (l + u) } else { 0.0 };
                set(var, mid - 0.5 * MIN_BOUND)?;
                set(upper, mid + 0.5 * MIN_BOUND)?;
                changed.push(prefix.to_string());
            }
        }
    }
    changed.sort();
    Ok(changed)
}

/// Two Adam groups: the bounds at `bound_lr`, everything else at `lr` (no weight decay).
pub fn param_groups(vars: &VarMap, recipe: &SrRecipe) -> Result<Vec<ParamGroup>> {
    let (bounds, rest): (Vec<_>, Vec<_>) = trainable(vars)?.into_iter().partition(|(n, _)| is_bound(n));
    Ok(vec![
        ParamGroup { name: "bounds".into(), vars: bounds, lr_scale: recipe.bound_lr / recipe.lr, weight_decay: 0.0 },
        ParamGroup { name: "weights".into(), vars: rest, lr_scale: 1.0, weight_decay: 0.0 },
    ])
}

/// `R_gate`: the mean over the gates that ran of `mean(z^2)` (pushes the factors toward 1).
pub fn gate_regulariser(model: &dyn QuantSr) -> Result<Option<Tensor>> {
    let mut terms = Vec::new();
    for q in model.act_quants() {
        if let Some(z) = q.ddtb().map(|d| d.last_logits()).transpose()?.flatten() {
            terms.push(z.sqr()?.mean_all()?);
        }
    }
    if terms.is_empty() {
        return Ok(None);
    }
    let n = terms.len() as f64;
    Ok(Some((Tensor::stack(&terms, 0)?.sum_all()? / n)?))
}

/// The model's mean PSNR-Y / SSIM-Y on `pairs`, one image at a time in eval mode with the
/// inference phase (dynamic sites gated).
pub fn evaluate(model: &dyn QuantSr, pairs: &SrPairs, rgb_range: f32, device: &Device) -> Result<SrScore> {
    model.set_phase(Phase::Dynamic)?;
    let rgb = f64::from(rgb_range);
    Ok(score(pairs, device, |lr| {
        let out = model.forward_t(&(lr * rgb)?, false).map_err(compress_train::error::method_err)?;
        Ok((out.sr / rgb)?)
    })?)
}

/// The loss of one training batch (spec 2.6): `w_l1 |SR - HR| + w_at AT(F_s, F_t)`, plus
/// `R_gate` in stage 1; the teacher runs in eval mode and its feature carries no gradient.
pub fn step_loss(
    recipe: &SrRecipe,
    teacher: &dyn QuantSr,
    model: &dyn QuantSr,
    lr: &Tensor,
    hr: &Tensor,
    stage1: bool,
) -> Result<Tensor> {
    let target = teacher.forward_t(lr, false)?.feature.detach();
    let out = model.forward_t(lr, true)?;
    let mut loss = (l1(&out.sr, hr)? * recipe.w_l1)?;
    loss = (loss + (attention_transfer(&out.feature, &target)? * recipe.w_at)?)?;
    if stage1 && let Some(r) = gate_regulariser(model)? {
        loss = (loss + r)?;
    }
    Ok(loss)
}

/// The training configuration the engine runs (rounds of evaluation, Adam, StepLR).
pub fn engine_config(recipe: &SrRecipe) -> TrainConfig {
    TrainConfig {
        epochs: recipe.rounds,
        batch_size: recipe.batch,
        accumulate: 1,
        optimizer: OptimizerKind::adam(),
        weight_decay: 0.0,
        no_decay_on_norm_and_bias: false,
        schedule: Schedule {
            base_lr: recipe.lr,
            decay: Decay::MultiStep { milestones: recipe.lr_milestones(), gamma: recipe.lr_gamma },
            warmup_steps: 0,
            warmup_start: 1.0,
        },
        label_smoothing: 0.0,
        seed: recipe.seed,
        checkpoint_every: 0,
        log_every: 50,
        stop_after_steps: None,
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Score on the test pairs after the last round.
    pub score: SrScore,
    /// One record per round.
    pub history: Vec<serde_json::Value>,
    /// Calibration and selection.
    pub calibration: Calibration,
    /// `(site, lower, upper)` of every DDTB quantizer (PAMS: `(-alpha, alpha)`) at the end.
    pub bounds: Vec<(String, f64, f64)>,
}

/// Trains `cfg`'s student from the full-precision weights `fp` on `train`, scoring `test` after
/// each round; returns the outcome and the trained student. With `resume`, continues from the
/// run's newest checkpoint (calibration is deterministic and repeated; bounds come from the
/// checkpoint).
pub fn train(
    cfg: &DdtbConfig,
    fp: &HashMap<String, Tensor>,
    train: &SrPairs,
    test: &SrPairs,
    run: &mut Run,
    resume: bool,
    device: &Device,
) -> Result<(Outcome, Box<dyn QuantSr>)> {
    cfg.validate()?;
    let job = Job {
        net: &cfg.arch,
        scheme: cfg.scheme(),
        settings: &cfg.method,
        gated: cfg.arm.gated(),
        recipe: &cfg.recipe,
        label: cfg.arm.key(),
    };
    job.run(fp, train, test, run, resume, device)
}

/// DDTB on any SR network (the paper's, or a user's [`SrNet`]): the student, built with DDTB's
/// quantizers over a copy of the full-precision weights `fp`, is calibrated, gated, and trained
/// by the recipe against the full-precision teacher on `train`'s patches, scored on `test` after
/// each round. Returns the outcome and the trained student.
#[allow(clippy::too_many_arguments)]
pub fn quantize(
    net: &dyn SrNet,
    settings: &DdtbSettings,
    recipe: &SrRecipe,
    fp: &HashMap<String, Tensor>,
    train: &SrPairs,
    test: &SrPairs,
    run: &mut Run,
    device: &Device,
) -> Result<(Outcome, Box<dyn QuantSr>)> {
    if !(0.0..=1.0).contains(&settings.dynamic_ratio) || settings.gate_hidden == 0 {
        return Err(DdtbError::Config("the dynamic ratio must be in [0, 1] and the gate at least 1 wide".into()));
    }
    let job = Job { net, scheme: settings.scheme(), settings, gated: true, recipe, label: "ddtb" };
    job.run(fp, train, test, run, false, device)
}

/// One quantization-aware training of a network: what is quantized and how, and the recipe.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// The network (its code and its pixel setting).
    pub net: &'a dyn SrNet,
    /// The student's quantizers (DDTB's, or a baseline's).
    pub scheme: QuantScheme,
    /// DDTB's settings (dynamic ratio, gate shape).
    pub settings: &'a DdtbSettings,
    /// Whether the dynamic layers get gates.
    pub gated: bool,
    /// The training recipe.
    pub recipe: &'a SrRecipe,
    /// Progress label.
    pub label: &'a str,
}

impl Job<'_> {
    /// Runs the training (see [`train`]).
    pub fn run(
        &self,
        fp: &HashMap<String, Tensor>,
        train: &SrPairs,
        test: &SrPairs,
        run: &mut Run,
        resume: bool,
        device: &Device,
    ) -> Result<(Outcome, Box<dyn QuantSr>)> {
        let (recipe, setting) = (self.recipe, self.net.setting());
        recipe.validate()?;
        if train.scale != setting.scale || test.scale != train.scale {
            return Err(DdtbError::Config(format!(
                "the data's scale is x{} (train) and x{} (test), the network's x{}",
                train.scale, test.scale, setting.scale
            )));
        }
        let teacher = teacher(self.net, fp, device)?;
        let (model, vars) = student(self.net, &self.scheme, fp, recipe.seed, device)?;
        let ratio = self.settings.dynamic_ratio;
        let calibration = calibrate(model.as_ref(), ratio, recipe, setting.rgb_range, train, device)?;
        if self.gated {
            attach_gates(model.as_ref(), &vars, self.settings, recipe.seed, &calibration)?;
        }
        self.fit(teacher.as_ref(), model, &vars, calibration, train, test, run, resume, device)
    }

    #[allow(clippy::too_many_arguments)]
    fn fit(
        &self,
        teacher: &dyn QuantSr,
        model: Box<dyn QuantSr>,
        vars: &VarMap,
        calibration: Calibration,
        train: &SrPairs,
        test: &SrPairs,
        run: &mut Run,
        resume: bool,
        device: &Device,
    ) -> Result<(Outcome, Box<dyn QuantSr>)> {
        let (recipe, setting) = (self.recipe, self.net.setting());
        let tc = engine_config(recipe);
        let mut e = Engine::with_groups(vars, param_groups(vars, recipe)?, &tc, run, resume, device)?;
        if e.state.step > 0 {
            for q in model.act_quants() {
                q.mark_initialised()?;
            }
        }
        let rgb = f64::from(setting.rgb_range);
        let per_round = recipe.iterations.div_ceil(recipe.rounds as u64) as usize;
        let rng = SeededRng::new(recipe.seed);
        while e.state.epoch < recipe.rounds {
            let round = e.state.epoch;
            let start = std::time::Instant::now();
            let steps = per_round.min((recipe.iterations as usize).saturating_sub(round * per_round));
            let pb =
                progress(run.quiet, steps as u64, &format!("{} round {}/{}", self.label, round + 1, recipe.rounds));
            pb.set_position(e.state.next_batch as u64);
            while e.state.next_batch < steps {
                let stage1 = e.state.step < recipe.stage1_iterations;
                model.set_phase(if stage1 { Phase::GateWarmup } else { Phase::Dynamic })?;
                let b = train.patch_batch(
                    &mut rng.stream("patches", e.state.step),
                    recipe.batch,
                    recipe.lr_patch,
                    device,
                )?;
                let loss = step_loss(recipe, teacher, model.as_ref(), &(b.lr * rgb)?, &(b.hr * rgb)?, stage1)?;
                e.state.loss_sum += f64::from(loss.to_scalar::<f32>()?);
                e.state.loss_count += 1;
                if e.micro_batch(&loss, run)? {
                    let fixed = keep_bounds_valid(vars)?;
                    if !fixed.is_empty() {
                        run.log(&json!({"step": e.state.step, "bounds_kept_valid": fixed}))?;
                    }
                }
                e.state.next_batch += 1;
                pb.inc(1);
                if tc.log_every > 0 && e.state.step.is_multiple_of(tc.log_every) {
                    run.log(&json!({"round": round, "step": e.state.step, "loss": e.epoch_loss(), "lr": e.lr()}))?;
                }
                e.after_step(run)?;
            }
            pb.finish_and_clear();
            let train_seconds = start.elapsed().as_secs_f64();
            let sc = evaluate(model.as_ref(), test, setting.rgb_range, device)?;
            let rec = json!({
                "epoch": round, "step": e.state.step, "loss": e.epoch_loss(), "psnr_y": sc.psnr, "ssim_y": sc.ssim,
                "lr": e.lr(), "seconds": train_seconds, "seconds_per_step": train_seconds / steps.max(1) as f64,
            });
            e.end_epoch(rec, run)?;
        }
        let score = evaluate(model.as_ref(), test, setting.rgb_range, device)?;
        let mut bounds = Vec::new();
        let data = vars.data().lock().map_err(|_| DdtbError::Config("VarMap lock poisoned".into()))?;
        let scalar = |k: &str| data.get(k).and_then(|v| v.as_tensor().to_scalar::<f32>().ok()).map(f64::from);
        for q in model.act_quants() {
            let (l, u, a) = (
                scalar(&format!("{}.lower", q.name)),
                scalar(&format!("{}.upper", q.name)),
                scalar(&format!("{}.alpha", q.name)),
            );
            match (l, u, a) {
                (Some(l), Some(u), _) => bounds.push((q.name.clone(), l, u)),
                (_, _, Some(a)) => bounds.push((q.name.clone(), -a, a)),
                _ => {}
            }
        }
        drop(data);
        Ok((Outcome { score, history: e.state.history.clone(), calibration, bounds }, model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossed_or_vanished_bounds_are_kept_usable() {
        let vars = VarMap::new();
        let dev = Device::Cpu;
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
        let scalar = |name: &str, v: f32| vb.get_with_hints((), name, candle_nn::Init::Const(f64::from(v))).unwrap();
        scalar("pams.alpha", -2.08e-5); // the value a PAMS run ended at
        scalar("ok.alpha", 0.7);
        scalar("ddtb.lower", 0.5);
        scalar("ddtb.upper", 0.4); // crossed
        scalar("fine.lower", -0.3);
        scalar("fine.upper", 1.2);
        assert_eq!(keep_bounds_valid(&vars).unwrap(), vec!["ddtb".to_string(), "pams.alpha".to_string()]);
        let get = |name: &str| vars.data().lock().unwrap()[name].as_tensor().to_scalar::<f32>().unwrap();
        assert_eq!(get("pams.alpha"), MIN_BOUND);
        assert_eq!(get("ok.alpha"), 0.7);
        let (l, u) = (get("ddtb.lower"), get("ddtb.upper"));
        assert!(u - l >= 0.99 * MIN_BOUND && ((l + u) / 2.0 - 0.45).abs() < 1e-6, "{l} {u}");
        assert_eq!((get("fine.lower"), get("fine.upper")), (-0.3, 1.2));
        // The quantizers accept what is left.
        let x = Tensor::new(&[-1f32, 0.3, 2.0], &dev).unwrap();
        compress_core::quant::symmetric_fake_quant(&x, &Tensor::new(get("pams.alpha"), &dev).unwrap(), 2).unwrap();
        let (lt, ut) = (Tensor::new(l, &dev).unwrap(), Tensor::new(u, &dev).unwrap());
        compress_core::quant::affine_fake_quant(&x, &lt, &ut, 2).unwrap();
        // A second pass changes nothing.
        assert!(keep_bounds_valid(&vars).unwrap().is_empty());
    }
}
