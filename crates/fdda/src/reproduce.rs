//! `cargo xtask reproduce fdda`: the spec's section 9 on the embedded MNIST.
//!
//! A teacher CNN (shared by every seed), one calibration digit per class, W3A3 on every layer,
//! three arms on the same budget: (A) the calibration digits only, (B) a GDFQ-style generator
//! (`CE + 0.2 L_BNS`) + the calibration digits, (C) full FDDA. Every arm calibrates its
//! activation ranges on the real calibration digits (the spec's reference run: ranges from a
//! barely trained generator cost B and C their start); the as-written variant (ranges from the
//! synthetic batches) is reported as a row. The student's rate is chosen per arm on training
//! digits held out for it (never the test set).

use crate::bits::BitPolicy;
use crate::centres::BnsCentres;
use crate::error::{Result, config_err};
use crate::generator::{FddaGenerator, GeneratorSettings, LossWeights};
use crate::net::{DigitCnn, digit_cnn, digit_generator};
use crate::student::{
    Calibration, RangeSource, StudentOutcome, StudentSettings, SynthAug, TestSet, cbns_distance, run_student,
};
use candle_core::Device;
use compress_core::quant::RangeRule;
use compress_core::rng::SeededRng;
use compress_data::{ImageDataset, embedded};
use compress_nn::Network;
use compress_synth::{CondGenerator, GenConfig};
use compress_train::harness::BoxError;
use compress_train::optim::OptimizerKind;
use compress_train::schedule::Decay;
use compress_train::{Info, NoHooks, Outcome, ReportRow, Reproduction, Rule, RunContext, TrainConfig, classify};
use rand::seq::SliceRandom;
use serde_json::json;

/// The mini's settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MiniSettings {
    /// Teacher epochs (Adam 1e-3, batch 16).
    pub teacher_epochs: usize,
    /// The student's recipe (its rate is chosen from `lr_grid`).
    pub student: StudentSettings,
    /// Rates the student chooses from, per arm.
    pub lr_grid: Vec<f64>,
    /// Training digits held out (the last ones) to choose the rate on.
    pub validation: usize,
    /// Seed of the selection runs (not reported).
    pub selection_seed: u64,
    /// The generator.
    pub generator: GenConfig,
    /// Its FDDA settings (the deep layers start at 2: the formula gives 0 for L = 4).
    pub fdda: GeneratorSettings,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Train / test subset sizes (`None`: all 4,000 / 1,000).
    pub subset: Option<(usize, usize)>,
}

impl MiniSettings {
    /// Section 9: 200 generator-only iterations (ranges on the first 50), 300 joint ones;
    /// generator batches 16 + 16, student 8 real (crops of scale 0.5-1, no flip) + 16 synthetic;
    /// SGD Nesterov, cosine to 0 over the 300 steps, alpha = T = 20; rates from {1e-5, 3e-6,
    /// 1e-6} (the reference run: 1e-3 and 1e-4 diverge, 3e-5 is unstable at W4).
    pub fn mini() -> Self {
        let student = StudentSettings {
            policy: BitPolicy::Uniform { w: 3, a: 3 },
            rule: RangeRule::Plain,
            iters: 500,
            iters_per_epoch: 20,
            warmup_iters: 200,
            calib_iters: 50,
            ranges: RangeSource::Calibration,
            real_batch: 8,
            real_crop: 0.5,
            real_flip: false,
            synth_aug: SynthAug::None,
            synth_batch: None,
            lr: 1e-5,
            t_max: 300,
            momentum: 0.9,
            weight_decay: 1e-4,
            kd_alpha: 20.0,
            kd_t: 20.0,
            eval_every: 50,
            teacher_precision: compress_nn::half::Precision::F32,
        };
        let generator = digit_generator(100);
        Self {
            teacher_epochs: 3,
            student,
            lr_grid: vec![1e-5, 3e-6, 1e-6],
            validation: 500,
            selection_seed: 100,
            generator,
            fdda: GeneratorSettings { deep_start: Some(2), ..GeneratorSettings::code() },
            seeds: vec![0, 1, 2],
            subset: None,
        }
    }

    /// Seconds: 40 iterations (30 warm-up), 600 / 200 digits, one seed, one rate.
    pub fn smoke() -> Self {
        let m = Self::mini();
        Self {
            teacher_epochs: 1,
            student: StudentSettings {
                iters: 40,
                warmup_iters: 30,
                calib_iters: 10,
                t_max: 10,
                eval_every: 5,
                ..m.student
            },
            lr_grid: vec![1e-5],
            validation: 100,
            seeds: vec![0],
            subset: Some((600, 200)),
            ..m
        }
    }
}

/// The arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Arm {
    /// (A) calibration digits only.
    Calibration,
    /// (B) GDFQ-style generator + calibration digits.
    Gdfq,
    /// (C) FDDA.
    Fdda,
}

impl Arm {
    /// All three, in the spec's order.
    pub const ALL: [Arm; 3] = [Arm::Calibration, Arm::Gdfq, Arm::Fdda];

    fn tag(self) -> &'static str {
        match self {
            Arm::Calibration => "A",
            Arm::Gdfq => "B",
            Arm::Fdda => "C",
        }
    }
}

/// The student variants each arm runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// W3A3, ranges from the calibration digits (the gates).
    W3,
    /// W4A4.
    W4,
    /// W3A3 with the ranges from the synthetic batches (as written).
    AsWritten,
}

/// One arm on one seed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArmOutcome {
    /// Which.
    pub arm: Arm,
    /// Seed.
    pub seed: u64,
    /// The student's evaluations.
    pub student: StudentOutcome,
    /// Mean C-BNS distance of fresh class batches to their centres (generator arms).
    pub cbns_distance: Option<f64>,
}

/// One training digit per class: each class's digits shuffled with seed 0, the first one.
fn calibration(train: &ImageDataset, device: &Device) -> Result<Vec<(candle_core::Tensor, usize)>> {
    let all = TestSet::of(train, device)?;
    let labels = all.labels.to_vec1::<u32>()?;
    let mut out = Vec::new();
    for k in 0..10u32 {
        let mut idx: Vec<usize> = labels.iter().enumerate().filter(|(_, l)| **l == k).map(|(i, _)| i).collect();
        idx.shuffle(&mut SeededRng::new(0).stream("fdda/calibration", u64::from(k)));
        let i = *idx.first().ok_or_else(|| config_err(format!("no training digit of class {k}")))?;
        out.push((all.images.get(i)?, k as usize));
    }
    Ok(out)
}

/// The arm's generator (none for A).
pub(crate) fn arm_generator(
    s: &MiniSettings,
    arm: Arm,
    centres: &BnsCentres,
    seed: u64,
    device: &Device,
) -> Result<Option<FddaGenerator>> {
    let weights = match arm {
        Arm::Calibration => return Ok(None),
        Arm::Gdfq => LossWeights::gdfq(),
        Arm::Fdda => LossWeights::code(),
    };
    let g = CondGenerator::new(s.generator.clone(), seed, device)?;
    Ok(Some(FddaGenerator::new(g, centres.clone(), GeneratorSettings { weights, ..s.fdda.clone() })?))
}

#[allow(clippy::too_many_arguments)]
fn run_arm(
    s: &MiniSettings,
    arm: Arm,
    student: &StudentSettings,
    teacher: &Network<DigitCnn>,
    centres: &BnsCentres,
    calib: &Calibration,
    test: &TestSet,
    seed: u64,
) -> Result<ArmOutcome> {
    let mut g = arm_generator(s, arm, centres, seed, teacher.device())?;
    let (_, _, out) = run_student(teacher, g.as_mut(), calib, test, student, seed)?;
    let cbns_distance = match &g {
        Some(g) => Some(cbns_distance(g, teacher, centres, 16, seed)?),
        None => None,
    };
    Ok(ArmOutcome { arm, seed, student: out, cbns_distance })
}

/// What every arm shares: the trained teacher, its centres, the calibration digits, the test
/// digits and the held-out training digits the rates are chosen on.
pub(crate) struct Shared {
    pub(crate) teacher: Network<DigitCnn>,
    pub(crate) teacher_top1: f64,
    pub(crate) centres: BnsCentres,
    pub(crate) calib: Calibration,
    pub(crate) test: TestSet,
    pub(crate) val: TestSet,
}

impl Shared {
    /// Trains (or resumes) the teacher, Adam 1e-3, batch 16, and computes (or reads) its centres.
    pub(crate) fn build(s: &MiniSettings, ctx: &RunContext, exp: &mut compress_train::Run) -> Result<Self> {
        let device = ctx.device().clone();
        let (train, test_set) = embedded::mnist_5k_digits(s.subset.map(|x| x.0), s.subset.map(|x| x.1))?;
        let tcfg = TrainConfig {
            optimizer: OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
            ..TrainConfig::sgd(s.teacher_epochs, 16, 1e-3, Decay::Constant, 0.0, 0)
        };
        let (mut run, resume) = ctx.arm("teacher", &tcfg)?;
        let teacher = Network::<DigitCnn>::new(digit_cnn()?, 0, &device)?;
        classify::fit(&teacher, &train, &test_set, &tcfg, &mut run, resume, &mut NoHooks)?;
        let teacher_top1 = classify::evaluate(&teacher, &test_set, 256)?.0;
        let pairs = calibration(&train, &device)?;
        // Cached by the teacher's weights and the calibration digits.
        let dir = ctx.root().join(ctx.name("centres"));
        let (centres, cached) = BnsCentres::cached(&teacher, &teacher.tensors()?, &pairs, 10, &dir)?;
        exp.log(&json!({"teacher_top1": teacher_top1, "K": centres.correct, "centres_cached": cached}))?;
        Ok(Self {
            teacher_top1,
            centres,
            calib: Calibration::new(&pairs)?,
            test: TestSet::of(&test_set, &device)?,
            val: TestSet::of(&train.holdout(s.validation)?.1, &device)?,
            teacher,
        })
    }
}

/// Runs the mini (or smoke) experiment.
pub fn mini(settings: &MiniSettings, ctx: &RunContext) -> Result<Outcome> {
    let s = &MiniSettings { seeds: ctx.seeds_or(&settings.seeds), ..settings.clone() };
    let mut exp = ctx.run("", s, 0)?;
    let Shared { teacher, teacher_top1, centres, calib, test, val } = Shared::build(s, ctx, &mut exp)?;
    // Every run is one job; jobs run side by side, one core each.
    let jobs: Vec<(Arm, f64)> = s.lr_grid.iter().flat_map(|&lr| Arm::ALL.map(|a| (a, lr))).collect();
    let chosen = ctx.side_by_side(&jobs, 2, |&(arm, lr), _| {
        let st = StudentSettings { lr, ..s.student.clone() };
        run_arm(s, arm, &st, &teacher, &centres, &calib, &val, s.selection_seed).map(|o| o.student.settled(3))
    })?;
    let table: Vec<(f64, Vec<f64>)> =
        s.lr_grid.iter().zip(chosen.chunks(Arm::ALL.len())).map(|(&lr, v)| (lr, v.to_vec())).collect();
    let best = |k: usize| {
        table.iter().fold((f64::NAN, f64::NEG_INFINITY), |b, (lr, v)| if v[k] > b.1 { (*lr, v[k]) } else { b }).0
    };
    let lrs: Vec<f64> = (0..Arm::ALL.len()).map(best).collect();
    if lrs.iter().any(|x| x.is_nan()) {
        return Err(config_err(format!("an arm learned nothing at any rate: {table:?}")));
    }
    exp.log(&json!({"lrs": lrs, "validation": table}))?;
    let mut jobs: Vec<(u64, usize, Variant)> = Vec::new();
    for &seed in &s.seeds {
        for k in 0..Arm::ALL.len() {
            jobs.push((seed, k, Variant::W3));
            jobs.push((seed, k, Variant::W4));
            if Arm::ALL[k] != Arm::Calibration {
                jobs.push((seed, k, Variant::AsWritten));
            }
        }
    }
    let done = ctx.side_by_side(&jobs, 2, |&(seed, k, variant), _| {
        let st = StudentSettings { lr: lrs[k], ..s.student.clone() };
        let st = match variant {
            Variant::W3 => st,
            Variant::W4 => StudentSettings { policy: BitPolicy::Uniform { w: 4, a: 4 }, ..st },
            Variant::AsWritten => StudentSettings { ranges: RangeSource::Synthetic, ..st },
        };
        run_arm(s, Arm::ALL[k], &st, &teacher, &centres, &calib, &test, seed)
    })?;
    let of = |v: Variant| -> Vec<ArmOutcome> {
        jobs.iter().zip(&done).filter(|(j, _)| j.2 == v).map(|(_, o)| o.clone()).collect()
    };
    let (w3, w4, written) = (of(Variant::W3), of(Variant::W4), of(Variant::AsWritten));
    let report = report(s, ctx, teacher_top1, &centres, &lrs, &table, &w3, &w4, &written);
    exp.write_json(
        "arms.json",
        &json!({"lrs": lrs, "validation": table, "w3a3": w3, "w4a4": w4, "as_written": written}),
    )?;
    exp.write_report(&report)?;
    Ok(Outcome::new(exp.dir(), report, vec![]))
}

fn pick(v: &[ArmOutcome], arm: Arm, f: &dyn Fn(&ArmOutcome) -> f64) -> Vec<f64> {
    v.iter().filter(|o| o.arm == arm).map(f).collect()
}

#[allow(clippy::too_many_arguments)]
fn report(
    s: &MiniSettings,
    ctx: &RunContext,
    teacher_top1: f64,
    centres: &BnsCentres,
    lrs: &[f64],
    table: &[(f64, Vec<f64>)],
    w3: &[ArmOutcome],
    w4: &[ArmOutcome],
    written: &[ArmOutcome],
) -> compress_train::Report {
    let n = s.seeds.len();
    let settled = |o: &ArmOutcome| o.student.settled(3);
    let (a, b, c) =
        (pick(w3, Arm::Calibration, &settled), pick(w3, Arm::Gdfq, &settled), pick(w3, Arm::Fdda, &settled));
    let dist = |arm| pick(w3, arm, &|o: &ArmOutcome| o.cbns_distance.unwrap_or(f64::NAN));
    let (db, dc) = (dist(Arm::Gdfq), dist(Arm::Fdda));
    let lower_every_seed = !dc.is_empty() && dc.iter().zip(&db).all(|(c, b)| c < b);
    let calibrated = |arm| pick(w3, arm, &|o: &ArmOutcome| o.student.calibrated());
    let best = |arm| pick(w3, arm, &|o: &ArmOutcome| o.student.best());
    let w4s = |arm| pick(w4, arm, &settled);
    let ws = |arm| pick(written, arm, &settled);
    let rows = vec![
        ReportRow::claim_seeds(
            format!("W3A3 top-1 (%), mean of the last 3 evaluations, {n} seeds: (B) GDFQ-style vs (C) FDDA"),
            &b,
            &c,
            "C > B on every seed",
            Rule::Above(0.0),
        ),
        ReportRow::claim_seeds(
            "W3A3 top-1 (%): (A) calibration only vs (C) FDDA",
            &a,
            &c,
            "C > A on every seed",
            Rule::Above(0.0),
        ),
        ReportRow::claim_seeds(
            "mean C-BNS distance of fresh class batches to their centres: (B) vs (C)",
            &db,
            &dc,
            format!("C lower than B on every seed ({})", if lower_every_seed { "yes" } else { "no" }),
            Rule::Holds(lower_every_seed),
        ),
        ReportRow::info_seeds(
            "W3A3 top-1 (%): (A) vs (B)",
            &a,
            &b,
            format!("B vs A: {} (a tie in the reference run)", Rule::Above(0.0).describe_seeds(&a, &b)),
        ),
        ReportRow::info_seeds(
            "W3A3 calibrated, not fine-tuned (%): (A) vs (C)",
            &calibrated(Arm::Calibration),
            &calibrated(Arm::Fdda),
            "-",
        ),
        ReportRow::info_seeds(
            "W3A3 calibrated, not fine-tuned (%): (B) vs (C)",
            &calibrated(Arm::Gdfq),
            &calibrated(Arm::Fdda),
            "-",
        ),
        ReportRow::info_seeds(
            "W3A3 best evaluation (%): (B) vs (C)",
            &best(Arm::Gdfq),
            &best(Arm::Fdda),
            "what the paper reports (best epoch)",
        ),
        ReportRow::info_seeds(
            "W4A4 top-1 (%): (A) vs (C)",
            &w4s(Arm::Calibration),
            &w4s(Arm::Fdda),
            format!("C vs A: {}", Rule::Above(0.0).describe_seeds(&w4s(Arm::Calibration), &w4s(Arm::Fdda))),
        ),
        ReportRow::info_seeds(
            "W4A4 top-1 (%): (B) vs (C)",
            &w4s(Arm::Gdfq),
            &w4s(Arm::Fdda),
            format!("C vs B: {}", Rule::Above(0.0).describe_seeds(&w4s(Arm::Gdfq), &w4s(Arm::Fdda))),
        ),
        ReportRow::info_seeds(
            "as written (ranges from the synthetic batches), W3A3: (B) vs (C)",
            &ws(Arm::Gdfq),
            &ws(Arm::Fdda),
            format!("vs A {:.2} with real-image ranges", a.iter().sum::<f64>() / a.len().max(1) as f64),
        ),
        ReportRow::info("teacher top-1 (%)", None, Some(teacher_top1), "the spec's reference: 87.4 %"),
    ];
    let outside: Vec<usize> = centres.correct.iter().enumerate().filter(|(_, c)| !**c).map(|(k, _)| k).collect();
    let mut notes = format!(
        "\nStudent rates chosen per arm on the last {} training digits (seed {}; mean of the last 3 evaluations, %):\n\n\
         | lr | (A) | (B) | (C) |\n| --- | --- | --- | --- |\n",
        s.validation, s.selection_seed
    );
    for (lr, v) in table {
        notes += &format!("| {lr:e} | {} |\n", v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" | "));
    }
    notes += &format!(
        "\nChosen: A {:e}, B {:e}, C {:e}. Classes whose calibration digit the teacher misclassifies (outside K): {outside:?}.\n\nPer seed (W3A3, settled / best / calibrated; C-BNS distance):\n\n",
        lrs[0], lrs[1], lrs[2]
    );
    for o in w3 {
        notes += &format!(
            "- seed {} {}: {:.2} / {:.2} / {:.2}{}\n",
            o.seed,
            o.arm.tag(),
            o.student.settled(3),
            o.student.best(),
            o.student.calibrated(),
            o.cbns_distance.map(|d| format!("; {d:.4}")).unwrap_or_default()
        );
    }
    let title = format!("FDDA {}: MNIST CNN, W3A3 every layer, 3 arms, {n} seeds", ctx.profile());
    ctx.report(title, &s.seeds).rows(rows).notes(notes)
}

/// `cargo xtask reproduce fdda`.
const INFO: Info = Info {
    name: "fdda",
    about: "post-training quantization with BNS-guided synthetic data",
    profiles: &[
        ("smoke", "40 iterations on 600 / 200 digits, one seed (what tests run)"),
        ("mini", "section 9: MNIST CNN, W3A3, arms A / B / C, seeds 0-2, student rates chosen on held-out digits"),
        (
            "diagnose",
            "why C settles below A in the mini: the real digits' share of the step, the synthetic share, 3x the \
             budget, per-class accuracy in / outside K, the teacher's labels of synthetic images",
        ),
        (
            "paper",
            "the ImageNet table: each row's BatchNorm count and F8L8 sites checked; accuracies need ImageNet, \
             the teachers and a GPU",
        ),
    ],
};

/// `cargo xtask reproduce fdda`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FddaReproduction;

impl Reproduction for FddaReproduction {
    fn info(&self) -> &'static Info {
        &INFO
    }

    fn side_by_side(&self, profile: &str) -> bool {
        profile == "mini" || profile == "diagnose"
    }

    fn run(&self, profile: &str, ctx: &RunContext) -> std::result::Result<Outcome, BoxError> {
        Ok(match profile {
            "smoke" => mini(&MiniSettings::smoke(), ctx)?,
            "paper" => crate::paper::paper(ctx)?,
            "diagnose" => crate::diagnose::diagnose(&MiniSettings::mini(), ctx)?,
            _ => mini(&MiniSettings::mini(), ctx)?,
        })
    }
}
