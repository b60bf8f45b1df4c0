//! `cargo xtask reproduce dcff`: the spec's section 9 experiment (mini profile, embedded MNIST)
//! and the paper's settings (paper profile).
//!
//! Arms (mini): (a) DCFF from scratch (official KL rule), (b) the same compact network trained
//! from scratch, (c) magnitude pruning on the same budget (train the full net, L1-prune, fine-tune),
//! plus (a') DCFF with the stable KL rule and the dense network, both for information.

use crate::error::Result;
use crate::fused::{EpochRefresh, FusedNetwork};
use crate::hooks::Refresher;
use crate::proxy::KlMode;
use crate::temperature::TemperatureSchedule;
use candle_core::Device;
use compress_data::batch::Dataset;
use compress_data::embedded;
use compress_nn::zoo::{Vgg, VggConfig};
use compress_nn::{Architecture, Model, Network};
use compress_prune::{LayerwiseRates, Reduction, compact_config, magnitude_kept, measured_cost};
use compress_train::choice::first_best;
use compress_train::classify::top1_curve;
use compress_train::harness::BoxError;
use compress_train::metrics::mean;
use compress_train::schedule::Decay;
use compress_train::{Info, NoHooks, Outcome, ReportRow, Reproduction, Rule, Run, RunContext, TrainConfig, classify};
use serde_json::json;

/// The mini experiment's settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MiniSettings {
    /// The full network.
    pub model: VggConfig,
    /// Per-layer rates.
    pub rates: Vec<f64>,
    /// Epochs of every arm.
    pub epochs: usize,
    /// Epochs the magnitude arm trains the full net before pruning.
    pub pretrain_epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// The spec's learning rate (section 9's recipe, every arm): reported for information.
    pub lr: f64,
    /// Learning rates each arm chooses from on the validation split (the same budget for all).
    pub lr_grid: Vec<f64>,
    /// Training digits held out (the last ones) to choose the learning rates on; the test set
    /// is never used for a choice.
    pub validation: usize,
    /// Seed of the selection runs (not one of the reported seeds).
    pub selection_seed: u64,
    /// Epochs at the end run at `lr / 10`.
    pub decayed_epochs: usize,
    /// Weight decay (on every parameter, as PyTorch's SGD in the official code).
    pub weight_decay: f64,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Train / test subset sizes (`None`: all 4,000 / 1,000).
    pub subset: Option<(usize, usize)>,
}

impl MiniSettings {
    /// Section 9: mini-VGG 16-32 pruned to 4-8, 6 epochs, SGD (x0.1 for the last epoch),
    /// batch 64, weight decay 5e-4, seeds 0-2; each arm's learning rate chosen from 0.05 (the
    /// spec's), 0.02 and 0.01 on 500 held-out training digits at seed 100.
    pub fn mini() -> Result<Self> {
        Ok(Self {
            model: VggConfig::new(&[16, 0, 32, 0], 10)?.input(1, 28)?.single_linear(),
            rates: vec![0.75, 0.75],
            epochs: 6,
            pretrain_epochs: 4,
            batch: 64,
            lr: 0.05,
            lr_grid: vec![0.05, 0.02, 0.01],
            validation: 500,
            selection_seed: 100,
            decayed_epochs: 1,
            weight_decay: 5e-4,
            seeds: vec![0, 1, 2],
            subset: None,
        })
    }

    /// A seconds-long version for tests: 3 epochs on 512 / 256 images, one seed.
    pub fn smoke() -> Result<Self> {
        Ok(Self {
            epochs: 3,
            pretrain_epochs: 2,
            seeds: vec![0],
            subset: Some((512, 256)),
            lr_grid: vec![0.05, 0.01],
            validation: 128,
            ..Self::mini()?
        })
    }

    fn train_config(
        &self,
        lr: f64,
        seed: u64,
        epochs: usize,
        first_epoch: usize,
        steps_per_epoch: usize,
    ) -> TrainConfig {
        // The decay milestone in this phase's own step count.
        let milestone = (self.epochs - self.decayed_epochs).saturating_sub(first_epoch) * steps_per_epoch;
        let decay = Decay::MultiStep { milestones: vec![milestone as u64], gamma: 0.1 };
        TrainConfig::sgd(epochs, self.batch, lr, decay, self.weight_decay, seed)
    }
}

/// One arm's outcome on one seed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArmOutcome {
    /// Arm name.
    pub arm: String,
    /// Seed.
    pub seed: u64,
    /// Final-epoch test top-1 (%).
    pub top1: f64,
    /// Test top-1 after every epoch.
    pub curve: Vec<f64>,
}

/// What the DCFF arm adds: the refresh log and the extraction check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DcffExtras {
    /// Every epoch's refresh (from the run's journal, so a resumed run's record is whole).
    pub refreshes: Vec<EpochRefresh>,
    /// Top-1 of the extracted compact network (%).
    pub compact_top1: f64,
    /// Max |logit difference| between the fused and the compact network on the test set.
    pub max_logit_diff: f64,
}

/// Trains DCFF on `train`, evaluating on `test`; returns the outcome and what the refreshes found.
#[allow(clippy::too_many_arguments)]
pub fn train_dcff<A: Architecture, Tr: Dataset, Te: Dataset>(
    original: &A::Config,
    rates: &[f64],
    mode: KlMode,
    cfg: &TrainConfig,
    train: &Tr,
    test: &Te,
    run: &mut Run,
    resume: bool,
    device: &Device,
) -> Result<(ArmOutcome, DcffExtras, Network<A>)>
where
    A::Config: LayerwiseRates,
{
    let net = FusedNetwork::<A>::new(original.clone(), rates, mode, cfg.seed, device)?;
    let journal = run.dir().join("refreshes.jsonl");
    let mut hooks = Refresher::new(&net, TemperatureSchedule::official(cfg.epochs)).journal(journal.clone());
    let history = classify::fit(&net, train, test, cfg, run, resume, &mut hooks)?;
    // The whole record, including refreshes made before an interruption.
    let refreshes = crate::hooks::read_journal(&journal)?;
    let compact = net.to_compact()?;
    let (compact_top1, _) = classify::evaluate(&compact, test, 256)?;
    let mut max_diff = 0f64;
    let b = compress_data::Batcher::new(256, false, 0, device.clone())?;
    for batch in b.epoch(test, 0, 0)? {
        let x = batch?.images;
        let d = (Model::forward_t(&net, &x, false)? - compact.forward_t(&x, false)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        max_diff = max_diff.max(f64::from(d));
    }
    compact.save(&run.dir().join("compact.safetensors"))?;
    let curve = top1_curve(&history);
    let top1 = curve.last().copied().unwrap_or(f64::NAN);
    let arm = ArmOutcome { arm: "dcff".into(), seed: cfg.seed, top1, curve };
    Ok((arm, DcffExtras { refreshes, compact_top1, max_logit_diff: max_diff }, compact))
}

/// The arms' learning rates.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ArmLrs {
    /// (a) and (a') DCFF.
    pub dcff: f64,
    /// (b) the compact network from scratch.
    pub scratch: f64,
    /// (c) magnitude pruning (pre-training and fine-tuning).
    pub magnitude: f64,
    /// The dense network.
    pub dense: f64,
}

/// Every arm's outcome on one seed.
#[derive(Debug, Default)]
struct SeedArms {
    a: Option<(ArmOutcome, DcffExtras)>,
    a_stable: Option<(ArmOutcome, usize)>,
    b: Option<ArmOutcome>,
    c: Option<ArmOutcome>,
    dense: Option<ArmOutcome>,
}

/// Which arms [`run_arms`] trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    /// (a), (b), (c) and the dense network.
    Compared,
    /// Those and (a').
    All,
}

/// Trains the arms on `train` for one seed at `lrs`, evaluating on `eval`; run names start with
/// `tag`.
#[allow(clippy::too_many_arguments)]
fn run_arms<Tr: Dataset, Te: Dataset>(
    s: &MiniSettings,
    lrs: ArmLrs,
    seed: u64,
    which: Which,
    train: &Tr,
    eval: &Te,
    tag: &str,
    ctx: &RunContext,
) -> Result<SeedArms> {
    let steps = train.len() / s.batch;
    let device = ctx.device();
    let full = s.model.clone();
    let compact = compact_config(&full, &s.rates)?;
    let mut out = SeedArms::default();
    let last = |c: &[f64]| c.last().copied().unwrap_or(f64::NAN);
    // (a) DCFF, official KL rule.
    let cfg = s.train_config(lrs.dcff, seed, s.epochs, 0, steps);
    let (mut run, r) = ctx.arm(&format!("{tag}a-dcff-seed{seed}"), &cfg)?;
    let (o, ex, _) =
        train_dcff::<Vgg, _, _>(&full, &s.rates, KlMode::Official, &cfg, train, eval, &mut run, r, device)?;
    out.a = Some((o, ex));
    if which == Which::All {
        // (a') DCFF, stable KL rule.
        let (mut run, r) = ctx.arm(&format!("{tag}a-stable-seed{seed}"), &cfg)?;
        let (o, ex, _) =
            train_dcff::<Vgg, _, _>(&full, &s.rates, KlMode::Stable, &cfg, train, eval, &mut run, r, device)?;
        let changes = ex.refreshes.iter().flat_map(|e| &e.layers).filter(|l| l.changed).count();
        out.a_stable = Some((o, changes));
    }
    // (b) The compact network from scratch.
    let cfg = s.train_config(lrs.scratch, seed, s.epochs, 0, steps);
    let (mut run, r) = ctx.arm(&format!("{tag}b-scratch-seed{seed}"), &cfg)?;
    let net = Network::<Vgg>::new(compact.clone(), seed, device)?;
    let curve = top1_curve(&classify::fit(&net, train, eval, &cfg, &mut run, r, &mut NoHooks)?);
    out.b = Some(ArmOutcome { arm: "scratch".into(), seed, top1: last(&curve), curve });
    // (c) Magnitude pruning: full net for `pretrain_epochs`, L1-prune, fine-tune the rest.
    let pre = s.train_config(lrs.magnitude, seed, s.pretrain_epochs, 0, steps);
    let (mut run, r) = ctx.arm(&format!("{tag}c-pretrain-seed{seed}"), &pre)?;
    let net = Network::<Vgg>::new(full.clone(), seed, device)?;
    let h1 = classify::fit(&net, train, eval, &pre, &mut run, r, &mut NoHooks)?;
    let pruned = net.prune(&magnitude_kept(&net, &compact)?)?;
    let ft = s.train_config(lrs.magnitude, seed, s.epochs - s.pretrain_epochs, s.pretrain_epochs, steps);
    let (mut run, r) = ctx.arm(&format!("{tag}c-finetune-seed{seed}"), &ft)?;
    let h2 = classify::fit(&pruned, train, eval, &ft, &mut run, r, &mut NoHooks)?;
    let mut curve = top1_curve(&h1);
    curve.extend(top1_curve(&h2));
    out.c = Some(ArmOutcome { arm: "magnitude".into(), seed, top1: last(&curve), curve });
    // The dense network.
    let cfg = s.train_config(lrs.dense, seed, s.epochs, 0, steps);
    let (mut run, r) = ctx.arm(&format!("{tag}dense-seed{seed}"), &cfg)?;
    let net = Network::<Vgg>::new(full.clone(), seed, device)?;
    let curve = top1_curve(&classify::fit(&net, train, eval, &cfg, &mut run, r, &mut NoHooks)?);
    out.dense = Some(ArmOutcome { arm: "dense".into(), seed, top1: last(&curve), curve });
    Ok(out)
}

/// One rate of the selection: `(lr, final validation top-1 of [DCFF, scratch, magnitude, dense])`.
pub type ValidationRow = (f64, [f64; 4]);

/// Each arm's learning rate: the grid's rate with the best final top-1 on the validation digits
/// (the last `validation` training digits; the arms train on the others), at the selection
/// seed. Returns the choice and every `(lr, [dcff, scratch, magnitude, dense])` measured.
fn select_lrs(
    s: &MiniSettings,
    train: &compress_data::ImageDataset,
    ctx: &RunContext,
) -> Result<(ArmLrs, Vec<ValidationRow>)> {
    let n = train.len();
    if s.validation == 0 || s.validation >= n || s.lr_grid.is_empty() {
        return Err(crate::DcffError::Config(format!(
            "a validation split of {} of {n} training digits and a grid of {} rates",
            s.validation,
            s.lr_grid.len()
        )));
    }
    let (fit, val) = train.holdout(s.validation)?;
    let mut table = Vec::new();
    for &lr in &s.lr_grid {
        let lrs = ArmLrs { dcff: lr, scratch: lr, magnitude: lr, dense: lr };
        let o = run_arms(s, lrs, s.selection_seed, Which::Compared, &fit, &val, &format!("select-lr{lr}-"), ctx)?;
        let top = |x: Option<&ArmOutcome>| x.map_or(f64::NAN, |o| o.top1);
        table
            .push((lr, [top(o.a.as_ref().map(|x| &x.0)), top(o.b.as_ref()), top(o.c.as_ref()), top(o.dense.as_ref())]));
    }
    // The first best in grid order (ties keep the larger, earlier rate); NaN never wins.
    let best = |k: usize| first_best(table.iter().map(|(lr, v)| (*lr, v[k])));
    let lrs = ArmLrs { dcff: best(0), scratch: best(1), magnitude: best(2), dense: best(3) };
    if [lrs.dcff, lrs.scratch, lrs.magnitude, lrs.dense].iter().any(|x| x.is_nan()) {
        return Err(crate::DcffError::Config(format!("an arm learned nothing at any rate: {table:?}")));
    }
    Ok((lrs, table))
}

/// Runs the mini (or smoke) experiment in `ctx` and returns its outcome.
pub fn mini(settings: &MiniSettings, ctx: &RunContext) -> Result<Outcome> {
    let settings = &MiniSettings { seeds: ctx.seeds_or(&settings.seeds), ..settings.clone() };
    let (train, test) = embedded::mnist_5k_digits(settings.subset.map(|s| s.0), settings.subset.map(|s| s.1))?;
    let mut exp = ctx.run("", settings, 0)?;
    let full = settings.model.clone();
    let compact = compact_config(&full, &settings.rates)?;
    let (lrs, table) = select_lrs(settings, &train, ctx)?;
    exp.log(&json!({"chosen_lrs": lrs, "validation_top1": table}))?;
    let spec = ArmLrs { dcff: settings.lr, scratch: settings.lr, magnitude: settings.lr, dense: settings.lr };
    let (mut a, mut a_stable, mut b, mut c, mut dense) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut spec_a, mut spec_b, mut spec_c, mut spec_dense) = (vec![], vec![], vec![], vec![]);
    let mut extras: Vec<DcffExtras> = Vec::new();
    let mut stable_changes = 0usize;
    for &seed in &settings.seeds {
        let o = run_arms(settings, lrs, seed, Which::All, &train, &test, "", ctx)?;
        let missing = || crate::DcffError::Config("an arm did not run".into());
        let (oa, ex) = o.a.ok_or_else(missing)?;
        exp.log(&json!({"arm": "a", "seed": seed, "top1": oa.top1, "compact_top1": ex.compact_top1,
            "max_logit_diff": ex.max_logit_diff}))?;
        a.push(oa);
        extras.push(ex);
        let (os, changes) = o.a_stable.ok_or_else(missing)?;
        stable_changes += changes;
        a_stable.push(os);
        b.push(o.b.ok_or_else(missing)?);
        c.push(o.c.ok_or_else(missing)?);
        dense.push(o.dense.ok_or_else(missing)?);
        // The spec's recipe (lr 0.05 for every arm), for information.
        let o = run_arms(settings, spec, seed, Which::Compared, &train, &test, "spec-", ctx)?;
        spec_a.push(o.a.ok_or_else(missing)?.0);
        spec_b.push(o.b.ok_or_else(missing)?);
        spec_c.push(o.c.ok_or_else(missing)?);
        spec_dense.push(o.dense.ok_or_else(missing)?);
    }
    let m = |v: &[ArmOutcome]| mean(v.iter().map(|o| o.top1));
    let (ma, mb, mc, md) = (m(&a), m(&b), m(&c), m(&dense));
    // Claim 3: every layer's scores turn non-finite at epoch 1 and S never changes after epoch 0.
    let frozen_layers: Vec<bool> = extras
        .iter()
        .flat_map(|ex| {
            let later: Vec<&EpochRefresh> = ex.refreshes.iter().filter(|e| e.epoch >= 1).collect();
            let n = ex.refreshes.first().map_or(0, |e| e.layers.len());
            (0..n)
                .map(move |l| !later.is_empty() && later.iter().all(|e| !e.layers[l].finite && !e.layers[l].changed))
                .collect::<Vec<_>>()
        })
        .collect();
    let frozen_pct = 100.0 * frozen_layers.iter().filter(|f| **f).count() as f64 / frozen_layers.len().max(1) as f64;
    let extraction_gap = extras.iter().zip(&a).map(|(ex, o)| (ex.compact_top1 - o.top1).abs()).fold(0.0, f64::max);
    let logit_gap = extras.iter().map(|e| e.max_logit_diff).fold(0.0, f64::max);
    let cost_full = measured_cost::<Vgg>(&full)?;
    let cost_compact = measured_cost::<Vgg>(&compact)?;
    let red = Reduction { base: cost_full, pruned: cost_compact };
    let n = settings.seeds.len();
    let t = |v: &[ArmOutcome]| v.iter().map(|o| o.top1).collect::<Vec<f64>>();
    let rows = vec![
        ReportRow::claim_seeds(
            format!("top-1 (%), {n} seeds, mean (min-max): (c) magnitude prune+fine-tune vs (a) DCFF"),
            &t(&c),
            &t(&a),
            "(1) DCFF from scratch beats pretrain-prune-fine-tune on the same budget (every seed above every seed)",
            Rule::Above(0.0),
        ),
        ReportRow::claim_seeds(
            format!("top-1 (%), {n} seeds: (b) compact from scratch vs (a) DCFF"),
            &t(&b),
            &t(&a),
            "(2) DCFF within 1 pp of scratch (fusion acts in epoch 0 only)",
            Rule::Within(1.0),
        ),
        ReportRow::claim(
            "layers whose scores are NaN from epoch 1 and whose S never changes (%)",
            None,
            Some(frozen_pct),
            "(3) the official KL rule freezes the epoch-0 selection (100 %)",
            Rule::Holds(frozen_pct == 100.0),
        ),
        ReportRow::claim(
            "largest top-1 gap, compact vs fused (pp)",
            None,
            Some(extraction_gap),
            format!("(4) the extracted compact model equals the fused one (0 pp; max logit diff {logit_gap:.2e})"),
            Rule::Holds(extraction_gap == 0.0 && logit_gap < 1e-4),
        ),
        ReportRow::info_seeds(
            format!("top-1 (%): dense vs (a') DCFF with the stable KL rule ({stable_changes} S changes)"),
            &t(&dense),
            &t(&a_stable),
            "-",
        ),
        ReportRow::info_seeds(
            format!("spec recipe, lr {} for every arm: (c) magnitude vs (a) DCFF", settings.lr),
            &t(&spec_c),
            &t(&spec_a),
            "information: claim (1) on the spec's recipe, under which the dense pre-training can diverge",
        ),
        ReportRow::info_seeds(
            format!("spec recipe, lr {}: dense vs (b) compact from scratch", settings.lr),
            &t(&spec_dense),
            &t(&spec_b),
            "information",
        ),
        ReportRow::info(
            format!("FLOPs (papers' counter) dense -> compact, reduction {:.1} %", red.flops_percent()),
            Some(cost_full.pruning_flops() as f64),
            Some(cost_compact.pruning_flops() as f64),
            "-",
        )
        .counts(),
        ReportRow::info(
            format!("params dense -> compact, reduction {:.1} %", red.params_percent()),
            Some(cost_full.params as f64),
            Some(cost_compact.params as f64),
            "-",
        )
        .counts(),
    ];
    let title =
        format!("DCFF {}: mini-VGG 16-32 -> 4-8 on mnist-5k, {} epochs, {n} seeds", ctx.profile(), settings.epochs);
    let mut notes = format!(
        "\nLearning rates chosen on the last {} training digits (trained on the other {}, seed {}; final top-1 %):\n\n\
         | lr | (a) DCFF | (b) scratch | (c) magnitude | dense |\n| --- | --- | --- | --- | --- |\n",
        settings.validation,
        train.len() - settings.validation,
        settings.selection_seed
    );
    for (lr, v) in &table {
        notes += &format!("| {lr} | {:.2} | {:.2} | {:.2} | {:.2} |\n", v[0], v[1], v[2], v[3]);
    }
    notes += &format!(
        "\nChosen: (a) DCFF {}, (b) scratch {}, (c) magnitude {}, dense {}. Per seed (top-1 %, chosen rates): {}\n",
        lrs.dcff,
        lrs.scratch,
        lrs.magnitude,
        lrs.dense,
        settings
            .seeds
            .iter()
            .enumerate()
            .map(|(i, s)| format!(
                "seed {s}: a {:.2}, b {:.2}, c {:.2}, dense {:.2}",
                a[i].top1, b[i].top1, c[i].top1, dense[i].top1
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let report = ctx.report(title, &settings.seeds).rows(rows).notes(notes);
    exp.write_json(
        "arms.json",
        &json!({"lrs": lrs, "validation": table, "a": a, "a_stable": a_stable, "b": b, "c": c, "dense": dense,
            "spec": {"a": spec_a, "b": spec_b, "c": spec_c, "dense": spec_dense}}),
    )?;
    let f = |x: compress_core::cost::Cost| x.pruning_flops() as f64 / 1e6;
    exp.plot(
        "accuracy_vs_flops.svg",
        "DCFF mini: test top-1 (%) vs MFLOPs (mean of seeds)",
        "MFLOPs (MACs + bias and BN ops)",
        &[
            ("dense", vec![(f(cost_full), md)]),
            ("(a) DCFF", vec![(f(cost_compact), ma)]),
            ("(b) scratch", vec![(f(cost_compact), mb)]),
            ("(c) magnitude", vec![(f(cost_compact), mc)]),
        ],
    )?;
    let epochs_curve = |v: &[ArmOutcome]| -> Vec<(f64, f64)> {
        (0..settings.epochs).map(|e| (e as f64 + 1.0, mean(v.iter().filter_map(|o| o.curve.get(e).copied())))).collect()
    };
    exp.plot(
        "accuracy.svg",
        "DCFF mini: test top-1 (%) by epoch (mean of seeds)",
        "epoch",
        &[
            ("(a) DCFF", epochs_curve(&a)),
            ("(b) scratch", epochs_curve(&b)),
            ("(c) magnitude", epochs_curve(&c)),
            ("dense", epochs_curve(&dense)),
        ],
    )?;
    exp.write_report(&report)?;
    Ok(Outcome::new(exp.dir(), report, vec![]))
}

/// `cargo xtask reproduce dcff`: dynamic-coded filter fusion.
const INFO: Info = Info {
    name: "dcff",
    about: "dynamic-coded filter fusion",
    profiles: &[
        ("smoke", "3 epochs on 512 / 256 digits, one seed (what tests run)"),
        (
            "mini",
            "section 9: mini-VGG 16-32 -> 4-8 on mnist-5k, 6 epochs, seeds 0-2, learning rates chosen on held-out training digits",
        ),
        ("paper", "the paper's table: compact sizes counted, top-1 trained where CIFAR-10 / ImageNet are cached"),
    ],
};

/// `cargo xtask reproduce dcff`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DcffReproduction;

impl Reproduction for DcffReproduction {
    fn info(&self) -> &'static Info {
        &INFO
    }

    fn run(&self, profile: &str, ctx: &RunContext) -> std::result::Result<Outcome, BoxError> {
        Ok(match profile {
            "smoke" => mini(&MiniSettings::smoke()?, ctx)?,
            "paper" => crate::paper::paper(ctx)?,
            _ => mini(&MiniSettings::mini()?, ctx)?,
        })
    }
}
