//! `cargo xtask reproduce ddtb`: the spec's section 9 experiment on photos-12 (x2, W2A2).
//!
//! EDSR-mini (4 blocks x 32, x2) is trained in full precision (the shared `edsr-mini-photos`
//! baseline, cached), then quantized to W2A2 from the same start by four arms on each seed:
//! (a) PAMS, (a') PAMS activations with DDTB's p1/p99 weights, (b) DDTB, (c) DDTB without gates.
//! Each is scored by PSNR-Y / SSIM-Y (2 px shaved) on the 5 held-out images.

use crate::config::{Arm, DdtbConfig, PAPER_TABLE};
use crate::error::{DdtbError, Result};
use crate::models::SrArch;
use crate::trainer::{self, Outcome, engine_config};
use candle_core::{Device, Tensor};
use compress_data::{SrPairs, embedded};
use compress_nn::zoo::EdsrConfig;
use compress_train::metrics::mean;
use compress_train::super_resolution::bicubic_score;
use compress_train::{Report, ReportRow, Run, Verdict};
use compress_train::{baselines, parallel};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// How much to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Seconds: a few iterations of every arm on one seed (what tests run).
    Smoke,
    /// The spec's validated mini settings.
    Mini,
    /// The paper's table 5 configurations (needs DIV2K and the full-precision teachers).
    Paper,
}

/// The mini experiment's settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MiniSettings {
    /// Arms, in report order.
    pub arms: Vec<Arm>,
    /// Seeds (patches and gate initialisation; the FP start is shared).
    pub seeds: Vec<u64>,
    /// Quantized iterations per run.
    pub iterations: u64,
    /// Stage 1 as a fraction of the iterations (validated: 0.2).
    pub stage1_fraction: f64,
    /// Calibration batches.
    pub calibration_batches: usize,
    /// Learning rate of weights and gates.
    pub lr: f64,
    /// Learning rate of the bounds, in `[0, 1]` pixel units.
    pub bound_lr: f64,
    /// Batch size.
    pub batch: usize,
    /// LR patch side.
    pub lr_patch: usize,
    /// Evaluations per run.
    pub rounds: usize,
    /// Smoke: a tiny FP baseline and one test image.
    pub smoke: bool,
    /// Runs trained side by side on the CPU (each on `cores / parallel_runs` threads).
    pub parallel_runs: usize,
}

/// The official bounds learning rate (1e-2 at `rgb_range` 255) in `[0, 1]` pixel units.
pub const OFFICIAL_BOUND_LR_UNIT_RANGE: f64 = 1e-2 / 255.0;

impl MiniSettings {
    /// The validated settings of spec section 9.
    pub fn mini() -> Self {
        Self {
            arms: vec![Arm::Pams, Arm::PamsDdtbWeights, Arm::Ddtb, Arm::DdtbNoGates],
            seeds: vec![0, 1],
            iterations: 3000,
            stage1_fraction: 0.2,
            calibration_batches: 20,
            lr: 1e-4,
            bound_lr: 1e-3,
            batch: 8,
            lr_patch: 24,
            rounds: 3,
            smoke: false,
            parallel_runs: 2,
        }
    }

    /// Every arm for a few iterations on one seed.
    pub fn smoke() -> Self {
        Self {
            seeds: vec![0],
            iterations: 6,
            calibration_batches: 2,
            batch: 2,
            lr_patch: 16,
            rounds: 1,
            smoke: true,
            ..Self::mini()
        }
    }

    /// The run configuration of `arm` on `seed`.
    pub fn config(&self, arm: Arm, seed: u64) -> Result<DdtbConfig> {
        let arch = SrArch::Edsr(EdsrConfig::new(2, 4, 32, 1.0)?);
        let mut c = DdtbConfig::paper(arch, arm, 2);
        c.seed = seed;
        c.iterations = self.iterations;
        c.stage1_iterations = (self.stage1_fraction * self.iterations as f64).round() as u64;
        // The official 60 epochs (the first is calibration) shortened to the run's length.
        c.epoch_iterations = self.iterations.div_ceil(59).max(1);
        c.calibration_batches = self.calibration_batches;
        c.lr = self.lr;
        c.bound_lr = self.bound_lr;
        c.batch = self.batch;
        c.lr_patch = self.lr_patch;
        c.rounds = self.rounds;
        c.weights_in_calibration = false;
        Ok(c)
    }
}

/// One finished run.
#[derive(Debug, Clone)]
pub struct ArmResult {
    /// Arm.
    pub arm: Arm,
    /// Seed.
    pub seed: u64,
    /// What the run produced.
    pub outcome: Outcome,
    /// Mean seconds per training step.
    pub seconds_per_step: f64,
}

pub use compress_train::parallel::candle_single_threaded;

/// Trains (or finds cached) what `profile` starts from: the full-precision EDSR-mini.
pub fn prepare(profile: Profile, root: &Path, quiet: bool) -> Result<PathBuf> {
    match profile {
        Profile::Smoke => Ok(fp_weights(&MiniSettings::smoke(), &root.join("smoke"), quiet)?.1),
        Profile::Mini => Ok(fp_weights(&MiniSettings::mini(), root, quiet)?.1),
        Profile::Paper => Err(DdtbError::Config("the paper profile starts from downloaded teachers".into())),
    }
}

/// The full-precision EDSR-mini: the cached `edsr-mini-photos` baseline, trained if missing.
fn fp_weights(s: &MiniSettings, root: &Path, quiet: bool) -> Result<(HashMap<String, Tensor>, PathBuf)> {
    let name = "edsr-mini-photos";
    let (runs, profile) = if s.smoke {
        (root.to_path_buf(), baselines::Profile::Smoke)
    } else {
        (PathBuf::from(root), baselines::Profile::Full)
    };
    let path = match baselines::cached(name, &runs)? {
        Some(p) => p,
        None => baselines::train(name, profile, None, &runs, false, quiet)?.weights,
    };
    Ok((compress_nn::weights::read(&path, &Device::Cpu)?, path))
}

/// Runs the mini (or smoke) experiment under `root`.
pub fn mini(s: &MiniSettings, root: &Path, resume: bool, quiet: bool, device: &Device) -> Result<(PathBuf, Report)> {
    let (fp, fp_path) = fp_weights(s, root, quiet)?;
    let train = embedded::photos_12("train", 2)?;
    let test = embedded::photos_12("test", 2)?;
    let test = if s.smoke { SrPairs { pairs: test.pairs[..1].to_vec(), scale: 2 } } else { test };
    let dev_name = if device.is_cpu() { "cpu" } else { "cuda" };
    let profile = if s.smoke { "smoke" } else { "mini" };
    let jobs: Vec<(u64, Arm)> = s.seeds.iter().flat_map(|&seed| s.arms.iter().map(move |&arm| (seed, arm))).collect();
    // Runs side by side, each on its own rayon pool (compress_train::parallel).
    let workers = parallel::workers(s.parallel_runs, jobs.len(), device.is_cpu());
    let one = |&(seed, arm): &(u64, Arm), threads: usize| -> Result<ArmResult> {
        let cfg = s.config(arm, seed)?;
        let name = format!("ddtb/{profile}/{}-seed{seed}", arm.key());
        let bars_quiet = quiet || workers > 1;
        let (mut run, resuming) = Run::for_arm(root, &name, &engine_config(&cfg), resume, bars_quiet, dev_name)?;
        let (outcome, _) = trainer::train(&cfg, &fp, &train, &test, &mut run, resuming, device)?;
        let seconds_per_step = mean(outcome.history.iter().filter_map(|h| h["seconds_per_step"].as_f64()));
        if !quiet {
            println!(
                "{} seed {seed}: PSNR-Y {:.3} dB, SSIM-Y {:.4} ({:.3} s/step on {threads} thread(s))",
                arm.key(),
                outcome.score.psnr,
                outcome.score.ssim,
                seconds_per_step
            );
        }
        Ok(ArmResult { arm, seed, outcome, seconds_per_step })
    };
    let mut results = Vec::with_capacity(jobs.len());
    for (r, (seed, arm)) in parallel::side_by_side(&jobs, workers, one)?.into_iter().zip(&jobs) {
        match r {
            Some(r) => results.push(r?),
            None => {
                return Err(DdtbError::Config(format!(
                    "{} seed {seed} did not run (an earlier run failed)",
                    arm.key()
                )));
            }
        }
    }
    let teacher = trainer::teacher(&s.config(Arm::Ddtb, 0)?.arch, &fp, device)?;
    let fp_score = trainer::evaluate(teacher.as_ref(), &test, 1.0, device)?;
    let bicubic = bicubic_score(&test)?;
    let mut run = Run::create(root, &format!("ddtb/{profile}"), s, 0, dev_name)?;
    run.quiet = quiet;
    let (report, extra) = report(s, &results, fp_score.psnr, bicubic.psnr, &fp_path);
    run.write_report_with(&report, 3, &extra)?;
    Ok((run.dir().to_path_buf(), report))
}

fn psnr_of(results: &[ArmResult], arm: Arm) -> Option<f64> {
    let v: Vec<f64> = results.iter().filter(|r| r.arm == arm).map(|r| r.outcome.score.psnr).collect();
    (!v.is_empty()).then(|| mean(v))
}

fn report(s: &MiniSettings, results: &[ArmResult], fp: f64, bicubic: f64, fp_path: &Path) -> (Report, String) {
    let seeds = s.seeds.len();
    let p = |a| psnr_of(results, a);
    let row = |setting: String, base: Option<f64>, method: Option<f64>, claim: &str, margin: Option<f64>| {
        let verdict = match (base, method, margin) {
            (Some(b), Some(m), Some(x)) => {
                if m >= b + x {
                    Verdict::Holds
                } else {
                    Verdict::Fails
                }
            }
            _ => Verdict::Info,
        };
        ReportRow { setting, baseline: base, method, paper: None, claim: claim.into(), verdict }
    };
    let what = format!("PSNR-Y x2 (dB), photos-12 test, mean of {seeds} seed(s)");
    let ddtb = p(Arm::Ddtb);
    let ordered = matches!(ddtb, Some(d) if fp > d && d > bicubic);
    let mut rows = vec![
        row(format!("{what}: (a) PAMS vs (b) DDTB"), p(Arm::Pams), ddtb, "DDTB >= PAMS + 0.03 dB", Some(0.03)),
        row(
            format!("{what}: (a') PAMS activations with DDTB's weights vs (b) DDTB"),
            p(Arm::PamsDdtbWeights),
            ddtb,
            "DDTB >= PAMS-activations-with-DDTB-weights + 0.1 dB",
            Some(0.1),
        ),
        ReportRow {
            setting: format!("{what}: FP vs (b) DDTB (bicubic {bicubic:.3})"),
            baseline: Some(fp),
            method: ddtb,
            paper: None,
            claim: "FP > DDTB > bicubic".into(),
            verdict: if ordered { Verdict::Holds } else { Verdict::Fails },
        },
        row(
            format!("{what}: (c) DDTB without gates vs (b) DDTB"),
            p(Arm::DdtbNoGates),
            ddtb,
            "gates help (reported, not required)",
            None,
        ),
        row(
            format!("{what}: (a) PAMS vs (a') PAMS with p1/p99 weights"),
            p(Arm::Pams),
            p(Arm::PamsDdtbWeights),
            "cost of the percentile weight quantizer",
            None,
        ),
    ];
    let paper = PAPER_TABLE.iter().find(|r| r.model == "edsr" && r.scale == 2 && r.bits == 2);
    if let Some(r) = paper {
        rows.push(ReportRow {
            setting: "paper: EDSR-baseline x2 W2A2 DDTB, Set14 PSNR (dB)".into(),
            baseline: None,
            method: None,
            paper: Some(r.results[1].0),
            claim: "the paper's setting (DIV2K, 60k iterations; not comparable with photos-12)".into(),
            verdict: Verdict::Info,
        });
    }
    let mut extra = format!(
        "\nFull-precision start: `{}`. Bounds learning rate {:.1e} in [0, 1] pixel units = the official 1e-2 \
         (at 0-255) x {:.1}; weights {:.0e}; {} iterations per run, stage 1 the first {:.0} %, {} calibration \
         batches (weights in full precision), batch {}, LR patch {}.\n\n| arm | seed | PSNR-Y | SSIM-Y | s/step | \
         dynamic sites |\n| --- | --- | --- | --- | --- | --- |\n",
        fp_path.display(),
        s.bound_lr,
        s.bound_lr / OFFICIAL_BOUND_LR_UNIT_RANGE,
        s.lr,
        s.iterations,
        s.stage1_fraction * 100.0,
        s.calibration_batches,
        s.batch,
        s.lr_patch
    );
    for r in results {
        let dynamic = if r.arm.gated() { r.outcome.calibration.dynamic.join(", ") } else { "-".into() };
        extra += &format!(
            "| {} | {} | {:.3} | {:.4} | {:.3} | {} |\n",
            r.arm.key(),
            r.seed,
            r.outcome.score.psnr,
            r.outcome.score.ssim,
            r.seconds_per_step,
            dynamic
        );
    }
    let report = Report {
        title: "DDTB mini: EDSR-mini x2 W2A2 on photos-12".into(),
        command: if s.smoke {
            "cargo xtask reproduce ddtb --profile smoke".into()
        } else {
            "cargo xtask reproduce ddtb".into()
        },
        rows,
    };
    (report, extra)
}

/// Runs `profile` under `root`.
pub fn reproduce(
    profile: Profile,
    root: &Path,
    resume: bool,
    quiet: bool,
    device: &Device,
) -> Result<(PathBuf, Report)> {
    match profile {
        Profile::Smoke => mini(&MiniSettings::smoke(), &root.join("smoke"), resume, quiet, device),
        Profile::Mini => mini(&MiniSettings::mini(), root, resume, quiet, device),
        Profile::Paper => paper(root, resume, quiet, device),
    }
}

/// What a configuration builds to: quantized body convs, activation quantizers, and how many of
/// them become dynamic (`floor(r K)`; every built site is called).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Placement {
    /// Convs with quantized weights.
    pub quantized_convs: usize,
    /// Activation quantizers.
    pub act_quants: usize,
    /// Dynamic ones at the configuration's ratio.
    pub dynamic: usize,
}

/// Builds `cfg`'s student (zero weights, on the CPU: nothing runs) and counts its quantizers.
pub fn placement(cfg: &DdtbConfig) -> Result<Placement> {
    let vb = candle_nn::VarBuilder::zeros(candle_core::DType::F32, &Device::Cpu);
    let m = cfg.arch.build(&cfg.scheme(), vb)?;
    let act_quants = m.act_quants().len();
    Ok(Placement {
        quantized_convs: m.body_convs().iter().filter(|c| c.is_quantized()).count(),
        act_quants,
        dynamic: (cfg.dynamic_ratio * act_quants as f64).floor() as usize,
    })
}

/// Where the paper profile expects a row's full-precision teacher: zoo tensor names, pixel range
/// 255 (EDSR-PyTorch's checkpoints converted to safetensors, or DDTB's released FP models).
pub fn teacher_path(model: &str, scale: usize) -> PathBuf {
    PathBuf::from("weights").join("ddtb").join(format!("{model}_x{scale}.safetensors"))
}

/// The folder of a fetched dataset that holds its images (`<cache>/<name>/<sub>` if present).
fn image_dir(name: &str, sub: &str) -> PathBuf {
    let d = compress_data::fetch::default_dataset_dir(name);
    if d.join(sub).is_dir() { d.join(sub) } else { d }
}

/// The paper's table 5: every row is built and counted; with DIV2K, the four benchmarks and the
/// teachers in place, each row trains with the official recipe and is scored on the benchmarks.
fn paper(root: &Path, resume: bool, quiet: bool, device: &Device) -> Result<(PathBuf, Report)> {
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    let benches = [("set5", "Set5_HR"), ("set14", "Set14_HR"), ("b100", "BSD100_HR"), ("urban100", "Urban100_HR")];
    for (name, sub) in [("div2k", "DIV2K_train_HR")].iter().chain(benches.iter()) {
        if !image_dir(name, sub).is_dir() {
            missing.push(format!("dataset {name} (`cargo xtask fetch {name}`)"));
        }
    }
    for r in &PAPER_TABLE {
        let t = teacher_path(r.model, r.scale);
        if !t.is_file() && !missing.iter().any(|m| m.contains(&t.display().to_string())) {
            missing.push(format!("teacher {}", t.display()));
        }
    }
    let dev_name = if device.is_cpu() { "cpu" } else { "cuda" };
    #[derive(serde::Serialize)]
    struct PaperRuns {
        rows: Vec<DdtbConfig>,
    }
    let configs = PaperRuns { rows: PAPER_TABLE.iter().map(|r| r.config()).collect::<Result<Vec<_>>>()? };
    let mut run = Run::create(root, "ddtb/paper", &configs, 1, dev_name)?;
    run.quiet = quiet;
    for r in &PAPER_TABLE {
        let cfg = r.config()?;
        let p = placement(&cfg)?;
        let label = format!("{} x{} W{b}A{b}", r.model, r.scale, b = r.bits);
        let mut scores: Vec<Option<f64>> = vec![None; 4];
        if missing.is_empty() {
            let fp = load_teacher(&cfg, r.model, r.scale, device)?;
            let train = SrPairs::load_dir(&image_dir("div2k", "DIV2K_train_HR"), r.scale)?;
            let set14 = SrPairs::load_dir(&image_dir("set14", "Set14_HR"), r.scale)?;
            let name = format!("ddtb/paper/{}-x{}-w{}", r.model, r.scale, r.bits);
            let (mut arm_run, resuming) = Run::for_arm(root, &name, &engine_config(&cfg), resume, quiet, dev_name)?;
            let (_, model) = trainer::train(&cfg, &fp, &train, &set14, &mut arm_run, resuming, device)?;
            for (k, (bname, sub)) in benches.iter().enumerate() {
                let pairs = SrPairs::load_dir(&image_dir(bname, sub), r.scale)?;
                scores[k] = Some(trainer::evaluate(model.as_ref(), &pairs, cfg.arch.setting().rgb_range, device)?.psnr);
            }
        }
        for (k, bench) in crate::config::BENCHMARKS.iter().enumerate() {
            rows.push(ReportRow {
                setting: format!(
                    "{label}, {bench} PSNR-Y (dB); {} quantized convs, {} activation quantizers, {} dynamic",
                    p.quantized_convs, p.act_quants, p.dynamic
                ),
                baseline: None,
                method: scores[k],
                paper: Some(r.results[k].0),
                claim: "the paper's table 5".into(),
                verdict: Verdict::Info,
            });
        }
    }
    let report = Report {
        title: "DDTB paper profile: table 5".into(),
        command: "cargo xtask reproduce ddtb --profile paper".into(),
        rows,
    };
    run.write_report_with(&report, 2, "")?;
    if !missing.is_empty() {
        return Err(DdtbError::Config(format!(
            "every table-5 configuration was built and counted ({}), but training needs: {}",
            run.dir().join("report.md").display(),
            missing.join("; ")
        )));
    }
    Ok((run.dir().to_path_buf(), report))
}

/// Loads a row's teacher through the zoo's checked loader (names and shapes against the model).
fn load_teacher(cfg: &DdtbConfig, model: &str, scale: usize, device: &Device) -> Result<HashMap<String, Tensor>> {
    let vars = candle_nn::VarMap::new();
    let vb = compress_nn::init::seeded_builder(&vars, 0, candle_core::DType::F32, device);
    cfg.arch.build(&crate::scheme::QuantScheme::full_precision(), vb)?;
    let data = vars.data().lock().map_err(|_| DdtbError::Config("VarMap lock poisoned".into()))?;
    let reference = compress_nn::model_tensors(&data);
    drop(data);
    Ok(compress_nn::weights::load_mapped(&teacher_path(model, scale), &reference, |n| n.to_string(), device)?)
}
