//! `cargo xtask reproduce intraq`: section 9's CPU experiment on the embedded MNIST (mini with
//! the validated settings, mini-long with 1,000 synthesis iterations and 5 seeds, smoke).

use crate::error::{IntraqError, Result};
use crate::finetune::{FinetuneConfig, QuantOutcome, SETTLED, Stage2, top1};
use crate::metrics::intra_class_cosine_distance;
use crate::net::DigitCnn;
use crate::synthesis::IntraqTerms;
use candle_core::{DType, Tensor};
use compress_core::quant::RangeRule;
use compress_data::batch::{Dataset, ImageDataset};
use compress_data::embedded;
use compress_synth::{SynthConfig, SyntheticSet, Teacher, synthesize};
use compress_train::engine::TrainConfig;
use compress_train::harness::BoxError;
use compress_train::metrics::mean;
use compress_train::optim::OptimizerKind;
use compress_train::schedule::Schedule;
use compress_train::{Info, NoHooks, Outcome, Report, ReportRow, Reproduction, Rule, Run, RunContext};
use serde::{Deserialize, Serialize};

/// The two synthesis arms of section 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arm {
    /// (A) BN statistics + hard-target inception loss: no LOR, no MDC, eps = 1.
    Baseline,
    /// (B) IntraQ: LOR (eta 0.5, no flip), MDC (0.05, 0.8), soft labels eps 0.95.
    IntraQ,
}

impl Arm {
    /// Run-folder key.
    pub fn key(self) -> &'static str {
        match self {
            Arm::Baseline => "baseline",
            Arm::IntraQ => "intraq",
        }
    }

    /// The arm's synthesis for `images = groups x batch` digits and `iters` iterations: the
    /// loop and IntraQ's terms (the baseline: hard targets, no LOR, no MDC).
    pub fn synth(self, groups: usize, batch: usize, iters: usize) -> (SynthConfig, IntraqTerms) {
        let cfg = SynthConfig {
            groups,
            batches_per_group: 1,
            batch,
            iters,
            image_size: 28,
            channels: 1,
            classes: 10,
            ..SynthConfig::cifar10()
        };
        let base = IntraqTerms { flip: false, ..IntraqTerms::cifar10() };
        let terms = match self {
            Arm::Baseline => IntraqTerms { p_lor: 0.0, lambda: (0.0, 2.0), eps_soft: 1.0, ..base },
            Arm::IntraQ => IntraqTerms { p_lor: 0.5, eta: 0.5, lambda: (0.05, 0.8), eps_soft: 0.95, ..base },
        };
        (cfg, terms)
    }
}

/// How the full-precision teacher is trained (Adam, cross-entropy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherRecipe {
    /// Epochs.
    pub epochs: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Batch size.
    pub batch: usize,
    /// Training digits (None: all 4,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
}

/// Settings of the mini experiments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiniSettings {
    /// Profile name (run folders).
    pub name: String,
    /// Seeds (synthesis, calibration order, fine-tuning batches).
    pub seeds: Vec<u64>,
    /// Synthesis groups (one batch each).
    pub groups: usize,
    /// Images per synthesis batch.
    pub synth_batch: usize,
    /// Adam iterations per synthesis batch.
    pub synth_iters: usize,
    /// Fine-tuning recipe.
    pub finetune: FinetuneConfig,
    /// `(weight, activation)` bit-widths.
    pub bits: Vec<(u32, u32)>,
    /// Activation-range rule (the validated settings: a singly corrected average).
    pub range_rule: RangeRule,
    /// The teacher's training.
    pub teacher: TeacherRecipe,
    /// Test digits (None: all 1,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_limit: Option<usize>,
    /// Seeds run side by side.
    pub parallel_runs: usize,
    /// Fine-tuning rates each (arm, bit-width) chooses from on the validation digits (issue 26:
    /// every arm fine-tuned as well as the method; `finetune.lr` is not used when non-empty).
    pub lr_grid: Vec<f64>,
    /// The last this many training digits score the rates (the student never trains on real
    /// digits; the teacher has seen them; the test digits stay unseen).
    pub validation: usize,
    /// The seed of the rate-choice runs (synthesis and fine-tuning; one no reported seed uses).
    pub selection_seed: u64,
}

impl MiniSettings {
    /// Section 9's validated settings.
    pub fn mini() -> Self {
        Self {
            name: "mini".into(),
            seeds: vec![0, 1, 2],
            groups: 3,
            synth_batch: 100,
            synth_iters: 200,
            finetune: FinetuneConfig::mini(),
            bits: vec![(3, 3), (4, 4)],
            range_rule: RangeRule::BiasCorrected,
            teacher: TeacherRecipe { epochs: 6, lr: 3e-3, batch: 64, train_limit: None },
            test_limit: None,
            parallel_runs: 2,
            lr_grid: vec![3e-6, 1e-5, 3e-5],
            validation: 500,
            selection_seed: 100,
        }
    }

    /// The longer profile: 1,000 synthesis iterations, 5 seeds.
    pub fn mini_long() -> Self {
        Self { name: "mini-long".into(), seeds: vec![0, 1, 2, 3, 4], synth_iters: 1000, ..Self::mini() }
    }

    /// Everything for a few steps.
    pub fn smoke() -> Self {
        Self {
            name: "smoke".into(),
            seeds: vec![0],
            groups: 2,
            synth_batch: 20,
            synth_iters: 4,
            finetune: FinetuneConfig { steps: 6, batch: 16, calib_batches: 2, eval_every: 3, ..FinetuneConfig::mini() },
            bits: vec![(4, 4)],
            teacher: TeacherRecipe { epochs: 1, lr: 3e-3, batch: 64, train_limit: Some(512) },
            test_limit: Some(100),
            parallel_runs: 1,
            lr_grid: vec![1e-5, 3e-5],
            validation: 64,
            ..Self::mini()
        }
    }
}

/// The test digits of `s`.
fn test_digits(s: &MiniSettings) -> Result<ImageDataset> {
    let test = compress_data::mnist::Split::Test;
    Ok(embedded::mnist_5k_normalised(test, compress_data::batch::Augment::None, s.test_limit)?)
}

/// What the teacher's run records as its configuration.
#[derive(Serialize)]
struct TeacherRun {
    train: TrainConfig,
    recipe: TeacherRecipe,
}

/// The full-precision teacher: trained once per profile (Adam, cross-entropy) and cached as the
/// context's run `teacher`.
pub fn teacher(s: &MiniSettings, ctx: &RunContext) -> Result<(DigitCnn, f64)> {
    let device = ctx.device();
    let TeacherRecipe { epochs, lr, batch, train_limit: limit } = s.teacher.clone();
    let (train, test) = embedded::mnist_5k_digits(limit, s.test_limit)?;
    let cfg = TrainConfig {
        epochs,
        batch_size: batch,
        accumulate: 1,
        optimizer: OptimizerKind::adam(),
        weight_decay: 0.0,
        no_decay_on_norm_and_bias: false,
        schedule: Schedule::constant(lr),
        label_smoothing: 0.0,
        seed: 0,
        checkpoint_every: 0,
        log_every: 0,
        stop_after_steps: None,
    };
    // The cache key covers the whole recipe (the number of training digits too).
    let recipe = TeacherRun { train: cfg.clone(), recipe: s.teacher.clone() };
    if let Some(p) = Run::cached(&ctx.root(), &ctx.name("teacher"), &recipe, "model.safetensors")? {
        let net = DigitCnn::from_tensors(&compress_nn::weights::read(&p, device)?, device)?;
        let acc = top1(&net, &test)?;
        return Ok((net, acc));
    }
    let mut run = ctx.clone().resume(false).run("teacher", &recipe, 0)?;
    let net = DigitCnn::new(0, device)?;
    compress_train::classify::fit(&net, &train, &test, &cfg, &mut run, false, &mut NoHooks)?;
    compress_nn::weights::save_atomic(&net.tensors()?, &run.dir().join("model.safetensors"))?;
    let acc = top1(&net, &test)?;
    Ok((net, acc))
}

/// Teacher features `[N, 32]` (clean images, eval mode) as rows.
fn features(teacher: &DigitCnn, images: &Tensor) -> Result<Vec<Vec<f32>>> {
    let mut rows = Vec::new();
    let n = images.dim(0)?;
    for start in (0..n).step_by(250) {
        let x = images.narrow(0, start, 250.min(n - start))?;
        rows.extend(teacher.forward_probe(&x)?.features.to_dtype(DType::F32)?.to_vec2::<f32>()?);
    }
    Ok(rows)
}

/// Everything one synthesis arm of one seed measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmResult {
    /// Seed.
    pub seed: u64,
    /// Synthesis arm.
    pub arm: Arm,
    /// Intra-class cosine distance of the synthetic images' teacher features.
    pub distance: f64,
    /// Mean final BN-statistics loss of the synthesis batches.
    pub bns: f64,
    /// Mean final synthesis learning rate (the plateau rule's cuts).
    pub final_lr: f64,
    /// Quantized models (one per bit-width).
    pub quant: Vec<QuantOutcome>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// One arm's synthetic digits for `seed`, cached as the context's `synth/<tag><arm>-seed<seed>`.
fn synthesize_arm(
    s: &MiniSettings,
    seed: u64,
    arm: Arm,
    tag: &str,
    teacher: &DigitCnn,
    ctx: &RunContext,
) -> Result<SyntheticSet> {
    let teacher_id = ctx.name("teacher");
    let (cfg, terms) = arm.synth(s.groups, s.synth_batch, s.synth_iters);
    let dir = ctx.root().join(ctx.name(&format!("synth/{tag}{}-seed{seed}", arm.key())));
    if !ctx.resuming() && dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|source| IntraqError::Io { path: dir.clone(), source })?;
    }
    Ok(synthesize(teacher, &cfg, &mut terms.method(cfg.classes)?, seed, Some((&dir, &teacher_id)), ctx.device())?)
}

/// Calibration and fine-tuning of `set` at `bits` with fine-tuning rate `lr`, evaluated on
/// `eval` (the context's arm `<tag><arm>-lr<lr>-w<w>a<a>-seed<seed>`).
fn quantize_at(
    s: &MiniSettings,
    (arm, bits, lr, seed): (Arm, (u32, u32), f64, u64),
    (teacher, set, eval): (&DigitCnn, &SyntheticSet, &ImageDataset),
    tag: &str,
    ctx: &RunContext,
) -> Result<QuantOutcome> {
    let device = ctx.device();
    let finetune = FinetuneConfig { lr, ..s.finetune.clone() };
    let bits = [bits];
    let stage2 = Stage2 {
        bits: &bits,
        finetune: &finetune,
        range_rule: s.range_rule,
        seed,
        arm,
        name: format!("{tag}{}-lr{lr}", arm.key()),
    };
    let tensors = teacher.tensors()?;
    let mut q = stage2.run(|| DigitCnn::from_tensors(&tensors, device), teacher, set, eval, ctx)?;
    q.pop().ok_or_else(|| IntraqError::Config("stage 2 returned no outcome".into()))
}

/// The fine-tuning rates chosen on the validation digits, and what each scored there.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Choice {
    /// `(arm, bits, rate)` for every arm at every bit-width.
    pub lrs: Vec<(Arm, (u32, u32), f64)>,
    /// `(rate, validation top-1 (%), mean of the last evaluations, of each (bits, arm) in
    /// [`Choice::columns`] order)`.
    pub table: Vec<(f64, Vec<f64>)>,
}

impl Choice {
    /// The (bits, arm) columns of the table: every bit-width, A then B.
    pub fn columns(bits: &[(u32, u32)]) -> Vec<((u32, u32), Arm)> {
        bits.iter().flat_map(|&b| [(b, Arm::Baseline), (b, Arm::IntraQ)]).collect()
    }

    /// The rate chosen for `arm` at `bits`.
    pub fn lr(&self, arm: Arm, bits: (u32, u32)) -> Result<f64> {
        self.lrs
            .iter()
            .find(|c| c.0 == arm && c.1 == bits)
            .map(|c| c.2)
            .ok_or_else(|| IntraqError::Config(format!("no rate chosen for {} at W{}A{}", arm.key(), bits.0, bits.1)))
    }
}

/// Each (arm, bit-width)'s fine-tuning rate: both arms synthesise at `selection_seed`, every
/// rate of the grid fine-tunes their students, and the first rate with the best mean of the last
/// evaluations on the validation digits wins.
pub fn choose(s: &MiniSettings, teacher: &DigitCnn, ctx: &RunContext) -> Result<Choice> {
    if s.lr_grid.is_empty() {
        return Err(IntraqError::Config("an empty rate grid".into()));
    }
    let train =
        embedded::mnist_5k_normalised(compress_data::mnist::Split::Train, compress_data::batch::Augment::None, None)?;
    let (_, val) = train.holdout(s.validation)?;
    let seed = s.selection_seed;
    let tensors = teacher.tensors()?;
    let device = ctx.device();
    let sets = ctx.side_by_side(&[Arm::Baseline, Arm::IntraQ], s.parallel_runs, |&arm, c| {
        synthesize_arm(s, seed, arm, "select-", &DigitCnn::from_tensors(&tensors, device)?, c)
    })?;
    let columns = Choice::columns(&s.bits);
    let jobs: Vec<(f64, (u32, u32), Arm)> =
        s.lr_grid.iter().flat_map(|&lr| columns.iter().map(move |&(b, a)| (lr, b, a))).collect();
    let done = ctx.side_by_side(&jobs, s.parallel_runs, |&(lr, bits, arm), c| {
        let set = &sets[usize::from(arm == Arm::IntraQ)];
        let t = DigitCnn::from_tensors(&tensors, device)?;
        quantize_at(s, (arm, bits, lr, seed), (&t, set, &val), "select-", c).map(|q| q.settled())
    })?;
    let table = compress_train::choice::table(&s.lr_grid, &done);
    let mut lrs = Vec::new();
    for (&(bits, arm), lr) in columns.iter().zip(compress_train::choice::first_best_columns(&table)) {
        if lr.is_nan() {
            return Err(IntraqError::Config(format!(
                "{} W{}A{} learned nothing at any rate: {table:?}",
                arm.key(),
                bits.0,
                bits.1
            )));
        }
        lrs.push((arm, bits, lr));
    }
    Ok(Choice { lrs, table })
}

/// Synthesis of one arm for one seed, then calibration and fine-tuning at every bit-width, each
/// at its chosen rate.
pub fn run_arm(
    s: &MiniSettings,
    seed: u64,
    arm: Arm,
    teacher: &DigitCnn,
    choice: &Choice,
    ctx: &RunContext,
) -> Result<ArmResult> {
    let start = std::time::Instant::now();
    let test = test_digits(s)?;
    let set = synthesize_arm(s, seed, arm, "", teacher, ctx)?;
    let distance = intra_class_cosine_distance(&features(teacher, &set.images)?, &set.labels);
    let mut quant = Vec::new();
    for &bits in &s.bits {
        quant.push(quantize_at(s, (arm, bits, choice.lr(arm, bits)?, seed), (teacher, &set, &test), "", ctx)?);
    }
    Ok(ArmResult {
        seed,
        arm,
        distance,
        bns: mean(set.stats.iter().map(|x| x.bns)),
        final_lr: mean(set.stats.iter().map(|x| x.lr)),
        quant,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Runs a mini profile in `ctx`.
pub fn mini(s: &MiniSettings, ctx: &RunContext) -> Result<Outcome> {
    let s = &MiniSettings { seeds: ctx.seeds_or(&s.seeds), ..s.clone() };
    let device = ctx.device();
    let (teacher, teacher_top1) = teacher(s, ctx)?;
    // The choice depends on the settings, never on the reported seeds: a second seed set reuses it.
    let key = MiniSettings { seeds: vec![], ..s.clone() };
    let (choice, choice_dir, reused) = ctx.memo("choice", &key, "choice.json", || choose(s, &teacher, ctx))?;
    if !ctx.is_quiet() {
        println!("fine-tuning rates chosen on {} validation digits: {}", s.validation, choice_line(&choice));
    }
    let tensors = teacher.tensors()?;
    let jobs: Vec<(u64, Arm)> = s.seeds.iter().flat_map(|&seed| [(seed, Arm::Baseline), (seed, Arm::IntraQ)]).collect();
    let one = |&(seed, arm): &(u64, Arm), sub: &RunContext| -> Result<ArmResult> {
        let t = DigitCnn::from_tensors(&tensors, device)?;
        let r = run_arm(s, seed, arm, &t, &choice, sub)?;
        if !ctx.is_quiet() {
            println!(
                "{} seed {seed}: intra-class distance {:.3}; {} ({:.0} s on {} thread(s))",
                arm.key(),
                r.distance,
                r.quant
                    .iter()
                    .map(|q| format!("W{}A{} {:.1} -> {:.1}", q.bits.0, q.bits.1, q.calibrated, q.last()))
                    .collect::<Vec<_>>()
                    .join(", "),
                r.seconds,
                sub.thread_count()
            );
        }
        Ok(r)
    };
    let results = ctx.side_by_side(&jobs, s.parallel_runs, one)?;
    let test = test_digits(s)?;
    let real = {
        let mut imgs = Vec::new();
        let b = compress_data::batch::Batcher::new(250, false, 0, device.clone())?;
        for batch in b.epoch(&test, 0, 0)? {
            imgs.push(batch?.images);
        }
        let images = Tensor::cat(&imgs, 0)?;
        intra_class_cosine_distance(&features(&teacher, &images)?, &test.labels()[..test.len()])
    };
    let run = ctx.run("", s, 0)?;
    run.write_json("choice.json", &choice)?;
    let reused = reused.then(|| choice_dir.display().to_string());
    let report = report(s, ctx, &results, teacher_top1, real, (&choice, reused));
    run.write_report(&report)?;
    Ok(Outcome::new(run.dir(), report, vec![]))
}

fn arm_of(results: &[ArmResult], seed: u64, arm: Arm) -> Option<&ArmResult> {
    results.iter().find(|r| r.seed == seed && r.arm == arm)
}

/// `"A W3A3 1e-5, B W3A3 3e-6, ..."`.
fn choice_line(choice: &Choice) -> String {
    let name = |arm: Arm| if arm == Arm::Baseline { "A" } else { "B" };
    choice.lrs.iter().map(|(a, (w, x), lr)| format!("{} W{w}A{x} {lr:e}", name(*a))).collect::<Vec<_>>().join(", ")
}

fn report(
    s: &MiniSettings,
    ctx: &RunContext,
    results: &[ArmResult],
    teacher_top1: f64,
    real: f64,
    (choice, reused): (&Choice, Option<String>),
) -> Report {
    let pairs: Vec<(u64, f64, f64)> = s
        .seeds
        .iter()
        .filter_map(|&seed| {
            Some((seed, arm_of(results, seed, Arm::Baseline)?.distance, arm_of(results, seed, Arm::IntraQ)?.distance))
        })
        .collect();
    let ratio_ok = !pairs.is_empty() && pairs.iter().all(|(_, a, b)| *b >= 1.5 * a);
    let (da, db): (Vec<f64>, Vec<f64>) = pairs.iter().map(|p| (p.1, p.2)).unzip();
    let mut rows = vec![ReportRow::claim_seeds(
        "intra-class cosine distance of teacher features (synthetic), mean (min-max)",
        &da,
        &db,
        format!(
            "(1) IntraQ's images are more diverse: B >= 1.5x A on every seed (B/A {}); real test digits {real:.3}",
            pairs.iter().map(|(_, a, b)| format!("{:.2}", b / a)).collect::<Vec<_>>().join(", ")
        ),
        Rule::Holds(ratio_ok),
    )];
    let m = |arm: Arm, bits: (u32, u32), f: fn(&QuantOutcome) -> f64| {
        mean(results.iter().filter(|r| r.arm == arm).flat_map(|r| r.quant.iter()).filter(|q| q.bits == bits).map(f))
    };
    let per = |arm: Arm, bits: (u32, u32), f: fn(&QuantOutcome) -> f64| -> Vec<f64> {
        results.iter().filter(|r| r.arm == arm).flat_map(|r| r.quant.iter()).filter(|q| q.bits == bits).map(f).collect()
    };
    for &bits in &s.bits {
        let (w, a) = bits;
        rows.push(ReportRow::info_seeds(
            format!("W{w}A{a} top-1 (%) fine-tuned, mean of the last {SETTLED} evaluations (A vs B)"),
            &per(Arm::Baseline, bits, QuantOutcome::settled),
            &per(Arm::IntraQ, bits, QuantOutcome::settled),
            format!(
                "(2) reported: B > A (final evaluation: A {:.1}, B {:.1}; best: A {:.1}, B {:.1})",
                m(Arm::Baseline, bits, QuantOutcome::last),
                m(Arm::IntraQ, bits, QuantOutcome::last),
                m(Arm::Baseline, bits, QuantOutcome::best),
                m(Arm::IntraQ, bits, QuantOutcome::best)
            ),
        ));
        rows.push(ReportRow::info_seeds(
            format!("W{w}A{a} top-1 (%) calibrated, not fine-tuned (A vs B)"),
            &per(Arm::Baseline, bits, |q| q.calibrated),
            &per(Arm::IntraQ, bits, |q| q.calibrated),
            "reported",
        ));
    }
    if s.bits.contains(&(4, 4)) {
        for arm in [Arm::Baseline, Arm::IntraQ] {
            let cal = m(arm, (4, 4), |q| q.calibrated);
            let ft = m(arm, (4, 4), QuantOutcome::settled);
            rows.push(ReportRow::claim(
                format!("W4A4 {}: not fine-tuned vs fine-tuned top-1 (%, last {SETTLED} evaluations)", arm.key()),
                Some(cal),
                Some(ft),
                "sanity: not fine-tuned >= 40 % and fine-tuning adds >= 5 points",
                Rule::Holds(cal >= 40.0 && ft >= cal + 5.0),
            ));
        }
    }
    rows.push(ReportRow::info(
        "synthesis: final BN-statistics loss (A vs B)",
        Some(mean(results.iter().filter(|r| r.arm == Arm::Baseline).map(|r| r.bns))),
        Some(mean(results.iter().filter(|r| r.arm == Arm::IntraQ).map(|r| r.bns))),
        "reported: how far each synthesis converged",
    ));
    rows.push(ReportRow::info(
        "teacher top-1 (%)",
        None,
        Some(teacher_top1),
        "reported (the validated teacher: 91.5 %); every run finished without a non-finite loss",
    ));
    let columns: Vec<String> = Choice::columns(&s.bits)
        .iter()
        .map(|((w, a), arm)| format!("{} W{w}A{a}", if *arm == Arm::Baseline { "A" } else { "B" }))
        .collect();
    let mut extra = format!(
        "\nSynthesis: {} groups x {} digits, {} Adam iterations (lr 0.5, plateau rule); fine-tuning {} SGD steps at the chosen rate; activation ranges: {:?}.\n\n\
         Fine-tuning rates chosen on the last {} training digits (synthesis and fine-tuning at seed {}; top-1 %, mean of the last {SETTLED} evaluations{}): {}.\n\n{}\nPer seed and arm:\n\n",
        s.groups,
        s.synth_batch,
        s.synth_iters,
        s.finetune.steps,
        s.range_rule,
        s.validation,
        s.selection_seed,
        reused.map(|d| format!("; recorded in `{d}`, reused")).unwrap_or_default(),
        choice_line(choice),
        compress_train::choice::rate_table(
            "lr",
            &columns.iter().map(String::as_str).collect::<Vec<_>>(),
            &choice.table
        )
    );
    for r in results {
        extra += &format!(
            "- {} seed {}: distance {:.3}; final BNS {:.4}; final synthesis lr {:.0e}; {} ({:.0} s)\n",
            r.arm.key(),
            r.seed,
            r.distance,
            r.bns,
            r.final_lr,
            r.quant
                .iter()
                .map(|q| format!(
                    "W{}A{} {:.1} -> {:.1} (last {SETTLED} {:.1}, best {:.1}; every evaluation {:.1?})",
                    q.bits.0,
                    q.bits.1,
                    q.calibrated,
                    q.last(),
                    q.settled(),
                    q.best(),
                    q.evals
                ))
                .collect::<Vec<_>>()
                .join(", "),
            r.seconds
        );
    }
    let title =
        format!("IntraQ on mnist-5k ({}): synthetic-data quantization, baseline synthesis (A) vs IntraQ (B)", s.name);
    ctx.report(title, &s.seeds).rows(rows).decimals(3).notes(extra)
}

/// `cargo xtask reproduce intraq`: zero-shot quantization from synthetic images.
const INFO: Info = Info {
    name: "intraq",
    about: "zero-shot quantization from synthetic images",
    profiles: &[
        ("smoke", "a few steps of everything, one seed (what tests run)"),
        ("mini", "section 9: mnist-5k CNN, 200 synthesis iterations, W3A3 / W4A4, seeds 0-2"),
        ("mini-long", "the mini with 1,000 synthesis iterations and seeds 0-4"),
        ("paper", "table 5: every row whose test split and converted pytorchcv weights are present runs end to end"),
    ],
};

/// `cargo xtask reproduce intraq`.
#[derive(Debug, Clone, Copy, Default)]
pub struct IntraqReproduction;

impl Reproduction for IntraqReproduction {
    fn info(&self) -> &'static Info {
        &INFO
    }

    fn side_by_side(&self, profile: &str) -> bool {
        matches!(profile, "mini" | "mini-long")
    }

    fn run(&self, profile: &str, ctx: &RunContext) -> std::result::Result<Outcome, BoxError> {
        Ok(match profile {
            "smoke" => mini(&MiniSettings::smoke(), ctx)?,
            "mini-long" => mini(&MiniSettings::mini_long(), ctx)?,
            "paper" => paper(ctx)?,
            _ => mini(&MiniSettings::mini(), ctx)?,
        })
    }
}

/// The paper profile: every (dataset, model) of table 5 whose test split and converted weights
/// are on this machine runs end to end (seed 1, as the official run 0); the report has all ten
/// rows, measured or not. With nothing to run it writes the table and says what is missing.
fn paper(ctx: &RunContext) -> Result<Outcome> {
    use crate::paper::PAPER_ROWS;
    use crate::paper_run::{self, PaperOutcome, PaperRun};
    let runs = PaperRun::table(1);
    let mut outcomes: Vec<PaperOutcome> = Vec::new();
    let mut missing = Vec::new();
    for r in &runs {
        let m = r.missing();
        if m.is_empty() {
            outcomes.push(paper_run::run(r, ctx)?);
        } else {
            missing.extend(m.into_iter().filter(|x| !missing.contains(x)).collect::<Vec<_>>());
        }
    }
    #[derive(Serialize)]
    struct PaperConfig<'a> {
        runs: &'a [PaperRun],
    }
    let run = ctx.run("", &PaperConfig { runs: &runs }, 1)?;
    let mut rows = Vec::new();
    for r in PAPER_ROWS {
        let measured = outcomes
            .iter()
            .filter(|o| o.dataset == r.dataset && o.model == r.model)
            .find_map(|o| Some((o.fp_top1, o.quant.iter().find(|q| q.bits == r.bits)?)));
        let (w, a) = r.bits;
        let within = Rule::PaperAtLeast(-1.0);
        rows.push(match measured {
            Some((fp, q)) => ReportRow::claim(
                format!("{:?} {:?} W{w}A{a} top-1 (%): FP vs IntraQ best epoch", r.dataset, r.model),
                Some(fp),
                Some(q.best()),
                format!(
                    "within 1 point of the paper's {:.2} (final epoch {:.2}, calibrated {:.2}; paper FP {})",
                    r.intraq,
                    q.last(),
                    q.calibrated,
                    r.fp.map_or("UNKNOWN".to_string(), |f| format!("{f:.2}"))
                ),
                within,
            )
            .against_paper(Some(r.intraq), Some(within)),
            None => ReportRow::claim(
                format!("{:?} {:?} W{w}A{a} top-1 (%)", r.dataset, r.model),
                r.fp,
                None,
                "not run here (inputs missing); baseline = the paper's full precision",
                within,
            )
            .against_paper(Some(r.intraq), Some(within)),
        });
    }
    let notes = if missing.is_empty() {
        String::new()
    } else {
        format!(
            "\nNot run, missing: {}. A GPU (--features cuda) is advised: one synthesis batch of 256 ResNet-20 \
             images takes about an hour on 2 CPU cores.\n",
            missing.join("; ")
        )
    };
    let report = ctx.report("IntraQ paper settings (table 5)", &[1]).rows(rows).notes(notes);
    run.write_report(&report)?;
    Ok(Outcome::new(run.dir(), report, missing))
}
