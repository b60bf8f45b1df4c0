//! `cargo xtask reproduce ddtb`: the spec's section 9 experiment on photos-12 (x2, W2A2).
//!
//! EDSR-mini (4 blocks x 32, x2) is trained in full precision (the shared `edsr-mini-photos`
//! baseline, cached), then quantized to W2A2 from the same start by four arms on each seed:
//! (a) PAMS, (a') PAMS activations with DDTB's p1/p99 weights, (b) DDTB, (c) DDTB without gates.
//! Each arm's learning rate is chosen on two held-out training images; each run is scored by
//! PSNR-Y / SSIM-Y (2 px shaved) image by image on the SR evaluation set (photos-12's 5 test
//! images and the 18 of sr-heldout).

use crate::config::{Arm, DdtbConfig, PAPER_TABLE};
use crate::error::{DdtbError, Result};
use crate::models::SrArch;
use crate::trainer::{self, Outcome, engine_config};
use candle_core::{Device, Tensor};
use compress_data::SrPairs;
use compress_data::embedded::{self, SrEval};
use compress_nn::zoo::EdsrConfig;
use compress_train::baselines;
use compress_train::harness::BoxError;
use compress_train::metrics::mean;
use compress_train::super_resolution::{SrScore, bicubic_score, per_image_table, wins};
use compress_train::{Info, Outcome as RunOutcome, Report, ReportRow, Reproduction, Rule, RunContext};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    /// Weight (and gate) learning rates each arm chooses from on the validation images (issue
    /// 26); the bounds' rate keeps its ratio `bound_lr / lr` to it.
    pub lr_grid: Vec<f64>,
    /// The last this many photos-12 training images (by name) score the rates; the rate-choice
    /// runs train on the others.
    pub validation: usize,
    /// The seed of the rate-choice runs (one no reported seed uses).
    pub selection_seed: u64,
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
            lr_grid: vec![5e-5, 1e-4, 2e-4],
            validation: 2,
            selection_seed: 100,
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
            lr_grid: vec![1e-4, 2e-4],
            validation: 1,
            ..Self::mini()
        }
    }

    /// The run configuration of `arm` on `seed` at weight rate `lr` (bounds at `lr` times
    /// `bound_lr / lr`).
    pub fn config_at(&self, arm: Arm, seed: u64, lr: f64) -> Result<DdtbConfig> {
        let mut c = self.config(arm, seed)?;
        c.recipe.lr = lr;
        c.recipe.bound_lr = lr * self.bound_lr / self.lr;
        Ok(c)
    }

    /// The run configuration of `arm` on `seed` at the spec's rates.
    pub fn config(&self, arm: Arm, seed: u64) -> Result<DdtbConfig> {
        let arch = SrArch::Edsr(EdsrConfig::new(2, 4, 32, 1.0)?);
        let mut c = DdtbConfig::paper(arch, arm, 2);
        c.recipe.seed = seed;
        c.recipe.iterations = self.iterations;
        c.recipe.stage1_iterations = (self.stage1_fraction * self.iterations as f64).round() as u64;
        // The official 60 epochs (the first is calibration) shortened to the run's length.
        c.recipe.epoch_iterations = self.iterations.div_ceil(59).max(1);
        c.recipe.calibration_batches = self.calibration_batches;
        c.recipe.lr = self.lr;
        c.recipe.bound_lr = self.bound_lr;
        c.recipe.batch = self.batch;
        c.recipe.lr_patch = self.lr_patch;
        c.recipe.rounds = self.rounds;
        c.method.weights_in_calibration = false;
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
    /// Weight learning rate.
    pub lr: f64,
    /// What the run produced.
    pub outcome: Outcome,
    /// Mean seconds per training step.
    pub seconds_per_step: f64,
}

/// The full-precision EDSR-mini the quantized arms start from: the cached `edsr-mini-photos`
/// baseline under `ctx`'s run folder, trained (on every core) if missing.
pub fn fp_start(s: &MiniSettings, ctx: &RunContext) -> Result<PathBuf> {
    let name = "edsr-mini-photos";
    let profile = if s.smoke { baselines::Profile::Smoke } else { baselines::Profile::Full };
    let runs = ctx.root();
    Ok(match baselines::cached(name, profile, &runs)? {
        Some(p) => p,
        None => baselines::train(name, profile, None, &runs, false, ctx.is_quiet())?.weights,
    })
}

/// Trains `arm` on `seed` at weight rate `lr` from the FP weights on `train`, scoring `eval`
/// (the run `<tag><arm>-lr<lr>-seed<seed>` of `ctx`).
fn run_arm(
    s: &MiniSettings,
    (arm, lr, seed): (Arm, f64, u64),
    fp: &HashMap<String, Tensor>,
    (train, eval): (&SrPairs, &SrPairs),
    tag: &str,
    ctx: &RunContext,
) -> Result<ArmResult> {
    let cfg = s.config_at(arm, seed, lr)?;
    let (mut run, resuming) = ctx.arm(&format!("{tag}{}-lr{lr}-seed{seed}", arm.key()), &engine_config(&cfg.recipe))?;
    let (outcome, _) = trainer::train(&cfg, fp, train, eval, &mut run, resuming, ctx.device())?;
    let seconds_per_step = mean(outcome.history.iter().filter_map(|h| h["seconds_per_step"].as_f64()));
    Ok(ArmResult { arm, seed, lr, outcome, seconds_per_step })
}

/// The rates chosen on the validation images, and what each arm scored there.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Choice {
    /// Each arm's weight rate, in the settings' arm order.
    pub lrs: Vec<(Arm, f64)>,
    /// `(rate, validation PSNR-Y (dB) of each arm)`.
    pub table: Vec<(f64, Vec<f64>)>,
}

impl Choice {
    /// The rate chosen for `arm`.
    pub fn lr(&self, arm: Arm) -> Result<f64> {
        self.lrs
            .iter()
            .find(|c| c.0 == arm)
            .map(|c| c.1)
            .ok_or_else(|| DdtbError::Config(format!("no rate for {}", arm.key())))
    }
}

/// Each arm's weight rate: every rate of the grid trains every arm (seed `selection_seed`) on all
/// but the last `validation` training images, and the first with the best mean PSNR-Y on those
/// images wins.
pub fn choose(s: &MiniSettings, fp: &HashMap<String, Tensor>, train: &SrPairs, ctx: &RunContext) -> Result<Choice> {
    let n = train.pairs.len();
    if s.lr_grid.is_empty() || s.validation == 0 || s.validation >= n {
        return Err(DdtbError::Config(format!(
            "rate choice needs a rate and 1..{n} validation images (grid {:?}, {} images)",
            s.lr_grid, s.validation
        )));
    }
    let fit = SrPairs { pairs: train.pairs[..n - s.validation].to_vec(), scale: train.scale };
    let val = SrPairs { pairs: train.pairs[n - s.validation..].to_vec(), scale: train.scale };
    let jobs: Vec<(f64, Arm)> = s.lr_grid.iter().flat_map(|&lr| s.arms.iter().map(move |&a| (lr, a))).collect();
    let done = ctx.side_by_side(&jobs, s.parallel_runs, |&(lr, arm), c| {
        run_arm(s, (arm, lr, s.selection_seed), fp, (&fit, &val), "select-", c).map(|r| r.outcome.score.psnr)
    })?;
    let table = compress_train::choice::table(&s.lr_grid, &done);
    let mut lrs = Vec::new();
    for (&arm, lr) in s.arms.iter().zip(compress_train::choice::first_best_columns(&table)) {
        if lr.is_nan() {
            return Err(DdtbError::Config(format!("{} has no finite validation score: {table:?}", arm.key())));
        }
        lrs.push((arm, lr));
    }
    Ok(Choice { lrs, table })
}

/// Each arm's rate as [`choose`] finds it, recorded once per configuration in `ctx` (`choice`):
/// the choice depends on the settings and the FP start, never on the reported seeds, so a second
/// seed set (and the diagnosis) reuses it. Returns it, its run folder, and whether it was reused.
pub fn chosen(
    s: &MiniSettings,
    (fp, fp_path): (&HashMap<String, Tensor>, &Path),
    train: &SrPairs,
    ctx: &RunContext,
) -> Result<(Choice, PathBuf, bool)> {
    #[derive(serde::Serialize)]
    struct ChoiceKey<'a> {
        settings: MiniSettings,
        fp_start: &'a Path,
    }
    let key = ChoiceKey { settings: MiniSettings { seeds: vec![], ..s.clone() }, fp_start: fp_path };
    ctx.memo("choice", &key, "choice.json", || choose(s, fp, train, ctx))
}

/// What the mini and its diagnosis start from: the FP start (its file and weights), the
/// training images, the evaluation set.
#[derive(Debug)]
pub struct Start {
    /// The FP start's file.
    pub fp_path: PathBuf,
    /// Its weights.
    pub fp: HashMap<String, Tensor>,
    /// photos-12's training images.
    pub train: SrPairs,
    /// The 23 evaluation images (2 at smoke scale).
    pub eval: SrEval,
}

impl Start {
    /// Loads (training the FP start if it is not cached) for `s` in `ctx`.
    pub fn load(s: &MiniSettings, ctx: &RunContext) -> Result<Self> {
        let fp_path = fp_start(s, ctx)?;
        let fp = compress_nn::weights::read(&fp_path, &Device::Cpu)?;
        let train = embedded::photos_12("train", 2)?;
        Ok(Self { fp_path, fp, train, eval: SrEval::load(2, s.smoke.then_some(1))? })
    }
}

/// Runs the mini (or smoke) experiment in `ctx`.
pub fn mini(s: &MiniSettings, ctx: &RunContext) -> Result<RunOutcome> {
    let s = &MiniSettings { seeds: ctx.seeds_or(&s.seeds), ..s.clone() };
    let device = ctx.device();
    let Start { fp_path, fp, train, eval } = Start::load(s, ctx)?;
    let (choice, choice_dir, reused) = chosen(s, (&fp, &fp_path), &train, ctx)?;
    if !ctx.is_quiet() {
        let lrs: Vec<String> = choice.lrs.iter().map(|(a, lr)| format!("{} {lr:e}", a.key())).collect();
        println!("rates chosen on {} validation images: {}", s.validation, lrs.join(", "));
    }
    let jobs: Vec<(u64, Arm)> = s.seeds.iter().flat_map(|&seed| s.arms.iter().map(move |&arm| (seed, arm))).collect();
    let one = |&(seed, arm): &(u64, Arm), sub: &RunContext| -> Result<ArmResult> {
        let r = run_arm(s, (arm, choice.lr(arm)?, seed), &fp, (&train, &eval.pairs), "", sub)?;
        if !ctx.is_quiet() {
            println!(
                "{} seed {seed}: PSNR-Y {:.3} dB, SSIM-Y {:.4} ({:.3} s/step on {} thread(s))",
                arm.key(),
                r.outcome.score.psnr,
                r.outcome.score.ssim,
                r.seconds_per_step,
                sub.thread_count()
            );
        }
        Ok(r)
    };
    let results = ctx.side_by_side(&jobs, s.parallel_runs, one)?;
    let teacher = trainer::teacher(&s.config(Arm::Ddtb, 0)?.arch, &fp, device)?;
    let fp_score = trainer::evaluate(teacher.as_ref(), &eval.pairs, 1.0, device)?;
    let bicubic = bicubic_score(&eval.pairs)?;
    let run = ctx.run("", s, 0)?;
    let per_arm: Vec<(Arm, SrScore)> = s.arms.iter().filter_map(|&a| Some((a, seed_mean(&results, a)?))).collect();
    run.write_json(
        "scores.json",
        &serde_json::json!({
            "choice": choice,
            "bicubic": bicubic,
            "fp": fp_score,
            "runs": results.iter().map(|r| serde_json::json!({"arm": r.arm, "seed": r.seed, "lr": r.lr, "score": r.outcome.score})).collect::<Vec<_>>(),
        }),
    )?;
    let scores = Scores { bicubic: &bicubic, fp: &fp_score, per_arm: &per_arm, eval: &eval };
    let reused = reused.then(|| choice_dir.display().to_string());
    let report = report(s, ctx, &results, &scores, (&choice, reused), &fp_path);
    run.write_report(&report)?;
    Ok(RunOutcome::new(run.dir(), report, vec![]))
}

/// An arm's per-image PSNR / SSIM averaged over its seeds (None without a run).
fn seed_mean(results: &[ArmResult], arm: Arm) -> Option<SrScore> {
    SrScore::mean_over(&results.iter().filter(|r| r.arm == arm).map(|r| &r.outcome.score).collect::<Vec<_>>())
}

/// The evaluation's scores the report reads: bicubic, the FP start, each arm's seed mean.
struct Scores<'a> {
    bicubic: &'a SrScore,
    fp: &'a SrScore,
    per_arm: &'a [(Arm, SrScore)],
    eval: &'a SrEval,
}

impl Scores<'_> {
    fn arm(&self, arm: Arm) -> Option<&SrScore> {
        self.per_arm.iter().find(|a| a.0 == arm).map(|a| &a.1)
    }

    /// `"k of n"`: the images on which `a` beats `b` (seed means).
    fn wins(&self, a: Option<&SrScore>, b: Option<&SrScore>) -> String {
        match (a, b) {
            (Some(a), Some(b)) => format!("{} of {}", wins(a, b, 0.0), a.images.len()),
            _ => "-".into(),
        }
    }
}

/// An arm's PSNR on each seed (mean over the images `first..first + count`), in seed order.
fn psnr_seeds(results: &[ArmResult], arm: Arm, (first, count): (usize, usize)) -> Vec<f64> {
    let mut v: Vec<(u64, f64)> =
        results.iter().filter(|r| r.arm == arm).map(|r| (r.seed, r.outcome.score.range(first, count).psnr)).collect();
    v.sort_by_key(|x| x.0);
    v.into_iter().map(|x| x.1).collect()
}

fn report(
    s: &MiniSettings,
    ctx: &RunContext,
    results: &[ArmResult],
    sc: &Scores,
    (choice, reused): (&Choice, Option<String>),
    fp_path: &Path,
) -> Report {
    let seeds = s.seeds.len();
    let mut rows = Vec::new();
    for (subset, first, count) in sc.eval.subsets() {
        let ps = |a| psnr_seeds(results, a, (first, count));
        let part = |x: Option<&SrScore>| x.map(|x| x.range(first, count));
        let (pams, pams_w, ddtb, no_gates) = (
            part(sc.arm(Arm::Pams)),
            part(sc.arm(Arm::PamsDdtbWeights)),
            part(sc.arm(Arm::Ddtb)),
            part(sc.arm(Arm::DdtbNoGates)),
        );
        let (fp, bicubic) = (sc.fp.range(first, count), sc.bicubic.range(first, count));
        let what = format!("PSNR-Y x2 (dB), {subset} ({count} images), {seeds} seed(s), mean (min-max)");
        let ordered = matches!(&ddtb, Some(d) if fp.psnr > d.psnr && d.psnr > bicubic.psnr);
        let mut part_rows = vec![
            ReportRow::claim_seeds(
                format!("{what}: (a) PAMS vs (b) DDTB"),
                &ps(Arm::Pams),
                &ps(Arm::Ddtb),
                format!(
                    "DDTB >= PAMS + 0.03 dB (every seed above every seed; ahead on {} images)",
                    sc.wins(ddtb.as_ref(), pams.as_ref())
                ),
                Rule::AtLeast(0.03),
            ),
            ReportRow::claim_seeds(
                format!("{what}: (a') PAMS activations with DDTB's weights vs (b) DDTB"),
                &ps(Arm::PamsDdtbWeights),
                &ps(Arm::Ddtb),
                format!(
                    "DDTB >= PAMS-activations-with-DDTB-weights + 0.1 dB (every seed above every seed; ahead on {} images)",
                    sc.wins(ddtb.as_ref(), pams_w.as_ref())
                ),
                Rule::AtLeast(0.1),
            ),
            ReportRow::claim(
                format!("{what}: FP vs (b) DDTB (bicubic {:.3})", bicubic.psnr),
                Some(fp.psnr),
                ddtb.as_ref().map(|d| d.psnr),
                format!(
                    "FP > DDTB > bicubic (DDTB above bicubic on {} images, FP above DDTB on {})",
                    sc.wins(ddtb.as_ref(), Some(&bicubic)),
                    sc.wins(Some(&fp), ddtb.as_ref())
                ),
                Rule::Holds(ordered),
            ),
            ReportRow::info_seeds(
                format!("{what}: (c) DDTB without gates vs (b) DDTB"),
                &ps(Arm::DdtbNoGates),
                &ps(Arm::Ddtb),
                format!(
                    "gates help (reported, not required; ahead on {} images)",
                    sc.wins(ddtb.as_ref(), no_gates.as_ref())
                ),
            ),
            ReportRow::info_seeds(
                format!("{what}: (a) PAMS vs (a') PAMS with p1/p99 weights"),
                &ps(Arm::Pams),
                &ps(Arm::PamsDdtbWeights),
                "cost of the percentile weight quantizer",
            ),
        ];
        if subset != "all" {
            // The subsets are information: the claims are judged on the whole set.
            let row = |a: Arm, what_a: &str| {
                ReportRow::info_seeds(
                    format!("{what}: {what_a} vs (b) DDTB"),
                    &ps(a),
                    &ps(Arm::Ddtb),
                    "subset (reported)",
                )
            };
            part_rows = vec![
                row(Arm::Pams, "(a) PAMS"),
                row(Arm::PamsDdtbWeights, "(a') PAMS activations with DDTB's weights"),
                ReportRow::info_seeds(
                    format!("{what}: bicubic vs (b) DDTB (FP {:.3})", fp.psnr),
                    &[bicubic.psnr],
                    &ps(Arm::Ddtb),
                    format!(
                        "subset (reported; DDTB above bicubic on {} images)",
                        sc.wins(ddtb.as_ref(), Some(&bicubic))
                    ),
                ),
                row(Arm::DdtbNoGates, "(c) DDTB without gates"),
            ];
        }
        rows.extend(part_rows);
    }
    let paper = PAPER_TABLE.iter().find(|r| r.model == "edsr" && r.scale == 2 && r.bits == 2);
    if let Some(r) = paper {
        rows.push(
            ReportRow::info(
                "paper: EDSR-baseline x2 W2A2 DDTB, Set14 PSNR (dB)",
                None,
                None,
                "the paper's setting (DIV2K, 60k iterations; not comparable with these images)",
            )
            .against_paper(Some(r.results[1].0), None),
        );
    }
    let arm_names: Vec<&str> = s.arms.iter().map(|a| a.key()).collect();
    let chosen: Vec<f64> = choice.lrs.iter().map(|c| c.1).collect();
    let mut extra = format!(
        "\nFull-precision start: `{}`. Weight (and gate) rates chosen on photos-12's last {} training images \
         (trained on the others, seed {}; PSNR-Y dB there{}): {}. Bounds at {:.0}x the weights' rate (the spec's \
         {:.1e} = the official 1e-2 at 0-255 x {:.1} at weights {:.0e}); {} iterations per run, stage 1 the first \
         {:.0} %, {} calibration batches (weights in full precision), batch {}, LR patch {}.\n\n{}\n",
        fp_path.display(),
        s.validation,
        s.selection_seed,
        reused.map(|d| format!("; recorded in `{d}`, reused")).unwrap_or_default(),
        compress_train::choice::chosen(&arm_names, &chosen),
        s.bound_lr / s.lr,
        s.bound_lr,
        s.bound_lr / OFFICIAL_BOUND_LR_UNIT_RANGE,
        s.lr,
        s.iterations,
        s.stage1_fraction * 100.0,
        s.calibration_batches,
        s.batch,
        s.lr_patch,
        compress_train::choice::rate_table("lr", &arm_names, &choice.table)
    );
    extra +=
        "| arm | seed | lr | PSNR-Y | SSIM-Y | s/step | dynamic sites |\n| --- | --- | --- | --- | --- | --- | --- |\n";
    for r in results {
        let dynamic = if r.arm.gated() { r.outcome.calibration.dynamic.join(", ") } else { "-".into() };
        extra += &format!(
            "| {} | {} | {:e} | {:.3} | {:.4} | {:.3} | {} |\n",
            r.arm.key(),
            r.seed,
            r.lr,
            r.outcome.score.psnr,
            r.outcome.score.ssim,
            r.seconds_per_step,
            dynamic
        );
    }
    let mut columns = vec!["bicubic", "FP"];
    let mut tables: Vec<&SrScore> = vec![sc.bicubic, sc.fp];
    for (a, score) in sc.per_arm {
        columns.push(a.key());
        tables.push(score);
    }
    let gain = sc.arm(Arm::Ddtb).map(|d| d.minus(sc.bicubic));
    if let Some(g) = &gain {
        columns.push("ddtb - bicubic");
        tables.push(g);
    }
    extra += &format!(
        "\nPer image, PSNR-Y x2 (dB), each arm the mean of its seeds; the first {} images are photos-12's test \
         images, the rest sr-heldout:\n\n{}",
        sc.eval.photos_12_test,
        per_image_table(&columns, &tables)
    );
    ctx.report(format!("DDTB {}: EDSR-mini x2 W2A2, photos-12 test + sr-heldout", ctx.profile()), &s.seeds)
        .rows(rows)
        .decimals(3)
        .notes(extra)
}

/// `cargo xtask reproduce ddtb`: 2-4 bit quantization of super-resolution networks.
const INFO: Info = Info {
    name: "ddtb",
    about: "2-4 bit quantization of super-resolution networks",
    profiles: &[
        ("smoke", "every arm for 6 iterations on one seed, a tiny FP start (what tests run)"),
        ("mini", "section 9: EDSR-mini x2 W2A2, photos-12 train, 23-image eval, 4 arms x seeds 0-1 x 3,000 iterations"),
        (
            "diagnose",
            "why W2A2 DDTB falls below bicubic on some images: clipping per image and site; longer calibration,              DIV2K-like patches, varied training images (FP start too), per image",
        ),
        (
            "paper",
            "table 5: every configuration built and counted; trained where DIV2K, the benchmarks and the teachers are present",
        ),
    ],
};

/// `cargo xtask reproduce ddtb`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DdtbReproduction;

impl DdtbReproduction {
    fn settings(profile: &str) -> MiniSettings {
        if profile == "smoke" { MiniSettings::smoke() } else { MiniSettings::mini() }
    }
}

impl Reproduction for DdtbReproduction {
    fn info(&self) -> &'static Info {
        &INFO
    }

    fn side_by_side(&self, profile: &str) -> bool {
        profile != "paper"
    }

    fn prepare(&self, profile: &str, ctx: &RunContext) -> std::result::Result<(), BoxError> {
        if profile != "paper" {
            fp_start(&Self::settings(profile), ctx)?;
        }
        Ok(())
    }

    fn run(&self, profile: &str, ctx: &RunContext) -> std::result::Result<RunOutcome, BoxError> {
        Ok(match profile {
            "paper" => paper(ctx)?,
            "diagnose" => crate::diagnose::diagnose(&MiniSettings::mini(), ctx)?,
            _ => mini(&Self::settings(profile), ctx)?,
        })
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
        dynamic: (cfg.method.dynamic_ratio * act_quants as f64).floor() as usize,
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
fn paper(ctx: &RunContext) -> Result<RunOutcome> {
    let device = ctx.device();
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
    #[derive(serde::Serialize)]
    struct PaperRuns {
        rows: Vec<DdtbConfig>,
    }
    let configs = PaperRuns { rows: PAPER_TABLE.iter().map(|r| r.config()).collect::<Result<Vec<_>>>()? };
    let run = ctx.run("", &configs, 1)?;
    for r in &PAPER_TABLE {
        let cfg = r.config()?;
        let p = placement(&cfg)?;
        let label = format!("{} x{} W{b}A{b}", r.model, r.scale, b = r.bits);
        let mut scores: Vec<Option<f64>> = vec![None; 4];
        if missing.is_empty() {
            let fp = load_teacher(&cfg, r.model, r.scale, device)?;
            let train = SrPairs::load_dir(&image_dir("div2k", "DIV2K_train_HR"), r.scale)?;
            let set14 = SrPairs::load_dir(&image_dir("set14", "Set14_HR"), r.scale)?;
            let name = format!("{}-x{}-w{}", r.model, r.scale, r.bits);
            let (mut arm_run, resuming) = ctx.arm(&name, &engine_config(&cfg.recipe))?;
            let (_, model) = trainer::train(&cfg, &fp, &train, &set14, &mut arm_run, resuming, device)?;
            for (k, (bname, sub)) in benches.iter().enumerate() {
                let pairs = SrPairs::load_dir(&image_dir(bname, sub), r.scale)?;
                scores[k] = Some(trainer::evaluate(model.as_ref(), &pairs, cfg.arch.setting().rgb_range, device)?.psnr);
            }
        }
        for (k, bench) in crate::config::BENCHMARKS.iter().enumerate() {
            let setting = format!(
                "{label}, {bench} PSNR-Y (dB); {} quantized convs, {} activation quantizers, {} dynamic",
                p.quantized_convs, p.act_quants, p.dynamic
            );
            rows.push(
                ReportRow::info(setting, None, scores[k], "the paper's table 5")
                    .against_paper(Some(r.results[k].0), None),
            );
        }
    }
    let report = ctx.report("DDTB paper profile: table 5", &[1]).rows(rows);
    run.write_report(&report)?;
    Ok(RunOutcome::new(run.dir(), report, missing))
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
