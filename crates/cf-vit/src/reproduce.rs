//! `cargo xtask reproduce cf-vit`: section 9's CPU experiment on the embedded MNIST (mini, with
//! the validated settings; smoke, a tiny end-to-end check) and the paper's settings (paper).

use crate::budget::{BudgetPoint, StageRecords, budget_curve, eta_grid, mean_curve};
use crate::build;
use crate::config::CfVitConfig;
use crate::error::{CfVitError, Result};
use crate::model::CfVit;
use crate::paper::{PAPER_ROWS, PaperRecipe};
use crate::regions::Selection;
use crate::trainer::{CfObjective, TrainSettings, stage_records};
use candle_core::Device;
use compress_data::batch::{Dataset, ImageDataset};
use compress_data::embedded;
use compress_nn::network::Network;
use compress_nn::zoo::{Vit, VitConfig};
use compress_train::choice;
use compress_train::classify::{self, fit_objective};
use compress_train::harness::BoxError;
use compress_train::metrics::mean;
use compress_train::{Info, NoHooks, Outcome, Report, ReportRow, Reproduction, Rule, RunContext};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;

/// Settings of the mini (and smoke) experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiniSettings {
    /// Training recipe of both models.
    pub train: TrainSettings,
    /// Seeds; each trains a CF-ViT and a baseline.
    pub seeds: Vec<u64>,
    /// Training digits used (None: all 4,000).
    pub train_limit: Option<usize>,
    /// Test digits used (None: all 1,000).
    pub test_limit: Option<usize>,
    /// Runs trained side by side on the CPU.
    pub parallel_runs: usize,
    /// Whether this is the smoke profile (run folder name).
    pub smoke: bool,
    /// Peak rates each model chooses from on the validation digits (issue 26: every arm trained
    /// as well as the method; `train.lr` is not used when this is non-empty).
    pub lr_grid: Vec<f64>,
    /// The last this many training digits are the validation split of the rate choice.
    pub validation: usize,
    /// The seed of the rate-choice runs (one no reported seed uses).
    pub selection_seed: u64,
}

impl MiniSettings {
    /// Section 9's validated settings.
    pub fn mini() -> Self {
        Self {
            train: TrainSettings::mini(),
            seeds: vec![0, 1, 2],
            train_limit: None,
            test_limit: None,
            parallel_runs: 2,
            smoke: false,
            lr_grid: vec![5e-4, 1e-3, 2e-3],
            validation: 500,
            selection_seed: 100,
        }
    }

    /// Two epochs (the second with selection) on 256 digits, one seed.
    pub fn smoke() -> Self {
        Self {
            train: TrainSettings { epochs: 2, select_epochs: 1, batch: 32, ..TrainSettings::mini() },
            seeds: vec![0],
            train_limit: Some(256),
            test_limit: Some(100),
            parallel_runs: 1,
            smoke: true,
            lr_grid: vec![1e-3, 2e-3],
            validation: 64,
            selection_seed: 100,
        }
    }
}

/// The tiny ViT of section 9 on 32 x 32 digits: patch 4 (8 x 8 fine grid), 64 wide, 4 blocks,
/// 4 heads, MLP ratio 2.
pub fn mini_vit() -> Result<VitConfig> {
    Ok(VitConfig::new(32, 4, 64, 4, 4, 128, 10)?.channels(1))
}

/// mnist-5k's train and test digits (the first `train_limit` / `test_limit`), normalised,
/// zero-padded to 32 x 32.
pub fn digits(train_limit: Option<usize>, test_limit: Option<usize>) -> Result<(ImageDataset, ImageDataset)> {
    let (train, test) = embedded::mnist_5k_digits(train_limit, test_limit)?;
    Ok((train.padded(2)?, test.padded(2)?))
}

/// The two models of a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arm {
    /// CF-ViT.
    CfVit,
    /// The same ViT on the fine tokens only.
    Baseline,
}

impl Arm {
    /// Run-folder key.
    pub fn key(self) -> &'static str {
        match self {
            Arm::CfVit => "cf-vit",
            Arm::Baseline => "baseline",
        }
    }
}

/// What one trained model measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ArmOutcome {
    /// CF-ViT: both stages per test image, and the fine stage's top-1 when it re-splits the
    /// lowest-scoring patches instead.
    CfVit {
        /// Per-image outcomes (selection of the informative patches).
        records: StageRecords,
        /// Fine top-1 (%) with the uninformative patches re-split.
        uninformative_top1: f64,
    },
    /// Baseline top-1 (%).
    Baseline {
        /// Top-1 (%).
        top1: f64,
    },
}

/// One trained model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmResult {
    /// Which model.
    pub arm: Arm,
    /// Seed.
    pub seed: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Measurements.
    pub outcome: ArmOutcome,
    /// Training wall-clock seconds (evaluations excluded).
    pub train_seconds: f64,
    /// Where the trained weights are.
    pub weights: PathBuf,
}

impl ArmResult {
    /// The model's top-1 (%) with every image through its last stage: CF-ViT's fine stage at
    /// eta = 1, the baseline's only stage.
    pub fn top1(&self) -> f64 {
        match &self.outcome {
            ArmOutcome::CfVit { records, .. } => records.fine_top1(),
            ArmOutcome::Baseline { top1 } => *top1,
        }
    }
}

/// The rates chosen on the validation digits, and what each model scored there.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Choice {
    /// CF-ViT's rate, then the baseline's.
    pub lrs: [f64; 2],
    /// `(rate, validation top-1 of CF-ViT at eta = 1, of the baseline)`.
    pub table: Vec<(f64, Vec<f64>)>,
}

impl Choice {
    /// The rate chosen for `arm`.
    pub fn lr(&self, arm: Arm) -> f64 {
        self.lrs[usize::from(arm == Arm::Baseline)]
    }
}

/// Each model's peak rate: trained on all but the last `validation` training digits at every
/// rate of the grid (seed `selection_seed`), the first most accurate on those digits.
pub fn choose(s: &MiniSettings, train: &ImageDataset, ctx: &RunContext) -> Result<Choice> {
    if s.lr_grid.is_empty() {
        return Err(CfVitError::Config("an empty rate grid".into()));
    }
    let (fit, val) = train.holdout(s.validation)?;
    let jobs: Vec<(Arm, f64)> = s.lr_grid.iter().flat_map(|&lr| [(Arm::CfVit, lr), (Arm::Baseline, lr)]).collect();
    let done = ctx.side_by_side(&jobs, s.parallel_runs, |&(arm, lr), c| {
        run_arm(s, (arm, lr, s.selection_seed), (&fit, &val), "select-", c).map(|r| r.top1())
    })?;
    let table = choice::table(&s.lr_grid, &done);
    let best = choice::first_best_columns(&table);
    let lrs = [best[0], best[1]];
    if lrs.iter().any(|x| x.is_nan()) {
        return Err(CfVitError::Config(format!("a model learned nothing at any rate: {table:?}")));
    }
    Ok(Choice { lrs, table })
}

fn train_seconds(history: &[serde_json::Value]) -> f64 {
    history.iter().filter_map(|h| h["seconds"].as_f64()).sum()
}

/// Trains `arm` at peak rate `lr` on `train` and measures it on `test` (the run
/// `<tag><arm>-lr<lr>-seed<seed>` of `ctx`).
pub fn run_arm(
    s: &MiniSettings,
    (arm, lr, seed): (Arm, f64, u64),
    (train, test): (&ImageDataset, &ImageDataset),
    tag: &str,
    ctx: &RunContext,
) -> Result<ArmResult> {
    let steps = (train.len() / s.train.batch) as u64;
    let cfg = TrainSettings { lr, ..s.train.clone() }.engine_config(steps, seed);
    let device = ctx.device();
    let (mut run, resuming) = ctx.arm(&format!("{tag}{}-lr{lr}-seed{seed}", arm.key()), &cfg)?;
    let vit = mini_vit()?;
    let weights = run.dir().join("model.safetensors");
    match arm {
        Arm::CfVit => {
            let model = build::deit(&vit, CfVitConfig::mini(), &HashMap::new(), seed, device)?;
            let obj = CfObjective {
                model: &model,
                test,
                select_from: s.train.select_from(),
                smoothing: s.train.label_smoothing,
            };
            let history = fit_objective(&obj, train, &cfg, &mut run, resuming, &mut NoHooks)?;
            compress_nn::weights::save_atomic(&build::tensors(model.varmap())?, &weights)?;
            let records = stage_records(&model, test, 250, Selection::Informative)?;
            let low = stage_records(&model, test, 250, Selection::Uninformative)?;
            Ok(ArmResult {
                arm,
                seed,
                lr,
                outcome: ArmOutcome::CfVit { records, uninformative_top1: low.fine_top1() },
                train_seconds: train_seconds(&history),
                weights,
            })
        }
        Arm::Baseline => {
            let net = Network::<Vit>::new(vit, seed, device)?;
            let history = classify::fit(&net, train, test, &cfg, &mut run, resuming, &mut NoHooks)?;
            net.save(&weights)?;
            let (top1, _) = classify::evaluate(&net, test, 250)?;
            Ok(ArmResult {
                arm,
                seed,
                lr,
                outcome: ArmOutcome::Baseline { top1 },
                train_seconds: train_seconds(&history),
                weights,
            })
        }
    }
}

/// MACs per image `(coarse, fine stage, baseline)` of the mini models (reuse MLP counted).
pub fn mini_macs() -> Result<(f64, f64, f64)> {
    let vit = mini_vit()?;
    let model = build::deit(&vit, CfVitConfig::mini(), &HashMap::new(), 0, &Device::Cpu)?;
    let (c, f) = model.stage_macs();
    Ok((c as f64, f as f64, baseline_macs(&model)))
}

/// MACs of the backbone on its full fine sequence (the baseline ViT).
pub fn baseline_macs<B: crate::TokenBackbone>(model: &CfVit<B>) -> f64 {
    let (bb, n) = (model.backbone(), 2 * model.config().coarse_side);
    let t = 1 + n * n;
    (bb.embed_macs(n) + bb.blocks_macs(t) + bb.head_macs(t)) as f64
}

/// Runs the mini (or smoke) experiment in `ctx`.
pub fn mini(s: &MiniSettings, ctx: &RunContext) -> Result<Outcome> {
    let s = &MiniSettings { seeds: ctx.seeds_or(&s.seeds), ..s.clone() };
    let (train, test) = digits(s.train_limit, s.test_limit)?;
    // The choice depends on the settings, never on the reported seeds: a second seed set reuses it.
    let key = MiniSettings { seeds: vec![], ..s.clone() };
    let (choice, choice_dir, reused) = ctx.memo("choice", &key, "choice.json", || choose(s, &train, ctx))?;
    if !ctx.is_quiet() {
        println!(
            "rates chosen on {} validation digits: CF-ViT {}, baseline {}",
            s.validation, choice.lrs[0], choice.lrs[1]
        );
    }
    let jobs: Vec<(u64, Arm)> = s.seeds.iter().flat_map(|&seed| [(seed, Arm::CfVit), (seed, Arm::Baseline)]).collect();
    let one = |&(seed, arm): &(u64, Arm), sub: &RunContext| -> Result<ArmResult> {
        let r = run_arm(s, (arm, choice.lr(arm), seed), (&train, &test), "", sub)?;
        if !ctx.is_quiet() {
            let what = match &r.outcome {
                ArmOutcome::CfVit { records, uninformative_top1 } => format!(
                    "coarse {:.1} %, fine {:.1} % (uninformative {:.1} %)",
                    records.coarse_top1(),
                    records.fine_top1(),
                    uninformative_top1
                ),
                ArmOutcome::Baseline { top1 } => format!("top-1 {top1:.1} %"),
            };
            let threads = sub.thread_count();
            println!("{} seed {seed}: {what} ({:.0} s training on {threads} thread(s))", arm.key(), r.train_seconds);
        }
        Ok(r)
    };
    let results = ctx.side_by_side(&jobs, s.parallel_runs, one)?;
    let run = ctx.run("", s, 0)?;
    run.write_json("choice.json", &choice)?;
    let (rows, mut notes, curve, base) = report(&results)?;
    notes += &format!(
        "\nPeak rates chosen on the last {} training digits (trained on the others, seed {}; top-1 % there, \
         CF-ViT at eta = 1{}): {}.\n\n{}",
        s.validation,
        s.selection_seed,
        if reused { format!("; recorded in `{}`, reused", choice_dir.display()) } else { String::new() },
        choice::chosen(&["CF-ViT", "baseline"], &choice.lrs),
        choice::rate_table("lr", &["CF-ViT", "baseline"], &choice.table)
    );
    let base_point = vec![(base.1 / 1e6, base.0)];
    run.plot(
        "curve.svg",
        "CF-ViT on MNIST: top-1 (%) vs MACs (M) per image over eta, mean of seeds",
        "MACs per image (M)",
        &[("CF-ViT, eta 0..1", curve.iter().map(|p| (p.macs / 1e6, p.top1)).collect()), ("baseline ViT", base_point)],
    )?;
    run.write_json("curve.json", &curve)?;
    let title = "CF-ViT on mnist-5k (32 px, 4x4 coarse / 8x8 fine tokens): early exit vs the fine-only ViT";
    let report: Report = ctx.report(title, &s.seeds).rows(rows).notes(notes);
    run.write_report(&report)?;
    Ok(Outcome::new(run.dir(), report, vec![]))
}

/// The operating point of claim 2: among thresholds whose expected MACs are at most
/// `max_macs`, the most accurate (ties: the cheaper). Claim 2 holds iff its top-1 is within
/// 0.5 points of the baseline (some eta qualifies iff this one does).
pub fn best_within(curve: &[BudgetPoint], max_macs: f64) -> Option<BudgetPoint> {
    curve
        .iter()
        .filter(|p| p.macs <= max_macs)
        .max_by(|a, b| a.top1.total_cmp(&b.top1).then(b.macs.total_cmp(&a.macs)))
        .copied()
}

/// The report's rows (claims 1-4 of section 9 with the validated tolerances) and notes, the mean
/// curve and `(baseline top-1, baseline MACs)`.
#[allow(clippy::type_complexity)]
fn report(results: &[ArmResult]) -> Result<(Vec<ReportRow>, String, Vec<BudgetPoint>, (f64, f64))> {
    let (mc, mf, mb) = mini_macs()?;
    let etas = eta_grid();
    let mut curves = Vec::new();
    let (mut coarse, mut fine, mut low, mut base) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut per_seed = String::new();
    for r in results {
        match &r.outcome {
            ArmOutcome::CfVit { records, uninformative_top1 } => {
                curves.push(budget_curve(records, mc, mf, &etas));
                coarse.push(records.coarse_top1());
                fine.push(records.fine_top1());
                low.push(*uninformative_top1);
                per_seed += &format!(
                    "- CF-ViT seed {}: coarse {:.1} %, fine {:.1} %, fine re-splitting the lowest-score patches {:.1} % ({:.0} s)\n",
                    r.seed,
                    records.coarse_top1(),
                    records.fine_top1(),
                    uninformative_top1,
                    r.train_seconds
                );
            }
            ArmOutcome::Baseline { top1 } => {
                base.push(*top1);
                per_seed += &format!("- baseline seed {}: {top1:.1} % ({:.0} s)\n", r.seed, r.train_seconds);
            }
        }
    }
    let curve = mean_curve(&curves);
    let b = mean(base.iter().copied());
    let c = mean(coarse.iter().copied());
    if curve.is_empty() {
        return Err(CfVitError::Config("no CF-ViT run".into()));
    }
    let op = best_within(&curve, 0.5 * mb);
    let mut rows = vec![
        ReportRow::claim_seeds(
            "top-1 (%) at eta = 1 vs baseline, mean (min-max) over seeds",
            &base,
            &curves.iter().filter_map(|c| c.last().map(|p| p.top1)).collect::<Vec<f64>>(),
            "(1) CF-ViT >= baseline - 0.3 pp (validated tolerance 1.5 pp: 1,000 test digits; means)",
            Rule::AtLeast(-1.5),
        ),
        ReportRow::claim(
            "top-1 (%) of the most accurate eta within 0.5x the baseline's MACs",
            Some(b),
            op.map(|p| p.top1),
            format!(
                "(2) some eta gives <= 0.5x the baseline's MACs at >= baseline - 0.5 pp{}",
                op.map(|p| format!(
                    " (eta {:.2}: {:.0} % exit, {:.2} M = {:.2}x MACs)",
                    p.eta,
                    100.0 * p.exit_rate,
                    p.macs / 1e6,
                    p.macs / mb
                ))
                .unwrap_or_default()
            ),
            Rule::Holds(op.is_some_and(|p| p.top1 >= b - 0.5)),
        ),
        ReportRow::claim_seeds(
            "fine vs coarse stage top-1 (%)",
            &coarse,
            &fine,
            "(3) fine-stage accuracy >= coarse-stage accuracy (every seed above every seed)",
            Rule::AtLeast(0.0),
        ),
        ReportRow::claim_seeds(
            "fine top-1 (%): lowest-score vs informative patches re-split",
            &low,
            &fine,
            "(4) re-splitting the k lowest-score patches instead lowers fine accuracy (by >= 10 pp, every seed)",
            Rule::AtLeast(10.0),
        ),
        ReportRow::info(
            "coarse stage alone (eta = 0) vs baseline top-1 (%)",
            Some(b),
            Some(c),
            format!("reported: the coarse stage costs {:.2} M MACs vs {:.2} M", mc / 1e6, mb / 1e6),
        ),
    ];
    if let Some(p) = curve.iter().find(|p| (p.eta - 0.5).abs() < 1e-9) {
        rows.push(ReportRow::info(
            "top-1 (%) at eta = 0.50",
            Some(b),
            Some(p.top1),
            format!(
                "reported: {:.0} % of digits exit at the coarse stage, {:.2} M MACs ({:.2}x)",
                100.0 * p.exit_rate,
                p.macs / 1e6,
                p.macs / mb
            ),
        ));
    }
    let mut extra = format!(
        "\nMACs per image (section 2.9's formula plus the reuse MLP): coarse {:.3} M, coarse + fine {:.3} M, baseline {:.3} M.\n\nPer seed:\n\n{per_seed}\nThe curve over eta (mean of seeds) is in `curve.svg` / `curve.json`.\n\n| eta | exit % | MACs (M) | top-1 (%) |\n| --- | --- | --- | --- |\n",
        mc / 1e6,
        (mc + mf) / 1e6,
        mb / 1e6
    );
    for p in curve.iter().step_by(10) {
        extra += &format!("| {:.2} | {:.1} | {:.3} | {:.2} |\n", p.eta, 100.0 * p.exit_rate, p.macs / 1e6, p.top1);
    }
    Ok((rows, extra, curve, (b, mb)))
}

/// `cargo xtask reproduce cf-vit`: coarse-to-fine vision transformer.
const INFO: Info = Info {
    name: "cf-vit",
    about: "coarse-to-fine vision transformer",
    profiles: &[
        ("smoke", "two epochs on 256 digits, one seed (what tests run)"),
        ("mini", "section 9: tiny ViT on 32-px mnist-5k, 4x4 coarse / 8x8 fine, seeds 0-2 x 24 epochs"),
        ("paper", "table 5's DeiT-S / LV-ViT-S configurations and their MACs (ImageNet training not built)"),
    ],
};

/// `cargo xtask reproduce cf-vit`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CfVitReproduction;

impl Reproduction for CfVitReproduction {
    fn info(&self) -> &'static Info {
        &INFO
    }

    fn side_by_side(&self, profile: &str) -> bool {
        profile == "mini"
    }

    fn run(&self, profile: &str, ctx: &RunContext) -> std::result::Result<Outcome, BoxError> {
        Ok(match profile {
            "smoke" => mini(&MiniSettings::smoke(), ctx)?,
            "paper" => paper(ctx)?,
            _ => mini(&MiniSettings::mini(), ctx)?,
        })
    }
}

/// The paper profile: builds the four CF-ViT configurations of table 5, checks their per-stage
/// MACs against the paper, tries to load pretrained DeiT-S from the Hub, and names what ImageNet
/// training still needs.
fn paper(ctx: &RunContext) -> Result<Outcome> {
    let mut rows = Vec::new();
    for row in PAPER_ROWS {
        let (c, total) = row.model.stage_macs_g()?;
        for (stage, ours, theirs, top1) in [
            ("coarse (eta = 0)", c, row.gmacs_coarse, row.top1_coarse),
            ("coarse + fine (eta -> 1)", total, row.gmacs_total, row.top1_full),
        ] {
            let claim = format!("MACs as section 2.9 plus the reuse MLP (paper top-1 {top1:.2} %)");
            rows.push(
                ReportRow::info(format!("{} GMACs, {stage}", row.name), None, Some(ours), claim)
                    .against_paper(Some(theirs), None),
            );
        }
    }
    #[derive(Serialize)]
    struct PaperConfig {
        rows: Vec<&'static str>,
        deit: PaperRecipe,
        lvvit: PaperRecipe,
    }
    let config = PaperConfig {
        rows: PAPER_ROWS.iter().map(|r| r.name).collect(),
        deit: PaperRecipe::deit(),
        lvvit: PaperRecipe::lvvit(),
    };
    let run = ctx.run("", &config, 0)?;
    let report = ctx.report("CF-ViT paper configurations (MACs)", &[0]).rows(rows);
    run.write_report(&report)?;
    let imagenet = compress_data::fetch::default_dataset_dir("imagenet");
    let mut missing = Vec::new();
    if !imagenet.join("train").is_dir() {
        missing.push(format!("ImageNet-1k at {} (`cargo xtask fetch imagenet` says how)", imagenet.display()));
    }
    if let Err(e) = build::pretrained_deit_small(7, None, None, 0, ctx.device()) {
        missing.push(format!("pretrained DeiT-S from the Hub ({e})"));
    }
    if ctx.device().is_cpu() {
        missing.push("a GPU (--features cuda --device cuda:0)".into());
    }
    missing.push(
        "the ImageNet recipe (RandAugment, mixup / cutmix, repeated augmentation, model EMA): not implemented in \
         this crate yet"
            .into(),
    );
    Ok(Outcome::new(run.dir(), report, missing))
}
