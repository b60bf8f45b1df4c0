//! `cargo xtask reproduce optg`: the spec's section 9 experiment (mini profile, embedded MNIST)
//! and the paper's settings (paper profile).
//!
//! The MLP `784-300-100-10` trains from scratch for 30 epochs with its three weight matrices
//! under one global budget: OptG and GMP at 0.98 / 0.99 / 0.995, the instantaneous Taylor
//! criterion at 0.98 / 0.99, on the same recipe and schedule `p_e`, plus a dense network for
//! reference. Each criterion's learning rate is chosen on training digits held out from
//! training (never the test set), at a seed that is not reported, at 0.99. The report gives the
//! final-mask top-1 per arm over seeds, the realised sparsity, the mask changes per epoch, and
//! the trained OptG networks run dense and on the CSR kernel.

use crate::bench::mlp_forward_ms;
use crate::error::{Result, config_err};
use crate::method::{Criterion, OptgSettings, train};
use crate::sparsified::{Sparsified, sparsifiable_weights};
use candle_core::Tensor;
use compress_data::ImageDataset;
use compress_data::batch::Dataset;
use compress_data::embedded;
use compress_nn::Model;
use compress_nn::Network;
use compress_nn::zoo::{Mlp, MlpConfig};
use compress_train::choice::{chosen, first_best, rate_table};
use compress_train::harness::BoxError;
use compress_train::metrics::mean;
use compress_train::plot::line_plot;
use compress_train::schedule::Decay;
use compress_train::{Info, NoHooks, Outcome, ReportRow, Reproduction, Rule, RunContext, TrainConfig, classify};
use serde_json::json;

/// The mini experiment's settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MiniSettings {
    /// Hidden widths of the MLP.
    pub hidden: Vec<usize>,
    /// Epochs `E`.
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// The spec's `eta_0`.
    pub base_lr: f64,
    /// Rates each criterion (and the dense network) chooses from on the validation digits.
    pub lr_grid: Vec<f64>,
    /// The target the rates are chosen at.
    pub selection_target: f64,
    /// Weight decay (weights; biases undecayed).
    pub weight_decay: f64,
    /// `beta`.
    pub beta: f64,
    /// OptG's and GMP's targets.
    pub targets: Vec<f64>,
    /// The Taylor criterion's targets.
    pub taylor_targets: Vec<f64>,
    /// Fresh batches per Taylor assignment.
    pub taylor_batches: usize,
    /// Training digits held out (the last ones) for the choices.
    pub validation: usize,
    /// Seed of the selection runs (not reported).
    pub selection_seed: u64,
    /// Largest allowed gap between realised and target sparsity.
    pub sparsity_tolerance: f64,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Train / test subset sizes (`None`: all 4,000 / 1,000).
    pub subset: Option<(usize, usize)>,
    /// Time the trained networks dense and on the CSR kernel.
    pub speed: bool,
}

impl MiniSettings {
    /// Section 9: 30 epochs, batch 100, `eta_0` 0.1 without warm-up, weight decay 5e-4, seeds
    /// 0-2; rates from {0.05, 0.1, 0.2} chosen on 500 held-out training digits at seed 100.
    pub fn mini() -> Self {
        Self {
            hidden: vec![300, 100],
            epochs: 30,
            batch: 100,
            base_lr: 0.1,
            lr_grid: vec![0.05, 0.1, 0.2],
            selection_target: 0.99,
            weight_decay: 5e-4,
            beta: 1.0,
            targets: vec![0.98, 0.99, 0.995],
            taylor_targets: vec![0.98, 0.99],
            taylor_batches: 5,
            validation: 500,
            selection_seed: 100,
            sparsity_tolerance: 1e-4,
            seeds: vec![0, 1, 2],
            subset: None,
            speed: true,
        }
    }

    /// A seconds-long version for tests: 6 epochs on 1,000 / 500 digits, one rate, one seed.
    pub fn smoke() -> Self {
        Self {
            epochs: 6,
            lr_grid: vec![0.1],
            validation: 200,
            seeds: vec![0],
            subset: Some((1000, 500)),
            speed: false,
            ..Self::mini()
        }
    }

    fn config(&self, lr: f64, seed: u64, steps_per_epoch: usize) -> TrainConfig {
        let decay =
            Decay::EpochCosine { steps_per_epoch: steps_per_epoch as u64, epochs: self.epochs as u64, warmup: 0 };
        let mut cfg = TrainConfig::sgd(self.epochs, self.batch, lr, decay, self.weight_decay, seed);
        cfg.no_decay_on_norm_and_bias = true;
        cfg.log_every = 0;
        cfg
    }

    fn model(&self) -> Result<MlpConfig> {
        Ok(MlpConfig::new([1, 28, 28], &self.hidden, 10)?)
    }
}

/// One arm: a criterion at a target (`None`: the dense network).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Arm {
    /// The criterion (`None`: dense).
    pub criterion: Option<Criterion>,
    /// Target sparsity (0 for dense).
    pub target: f64,
}

impl Arm {
    fn tag(&self) -> String {
        match self.criterion {
            Some(c) => format!("{}-p{}", c.tag(), self.target),
            None => "dense".into(),
        }
    }

    fn method(&self) -> &'static str {
        self.criterion.map_or("dense", Criterion::tag)
    }
}

/// One arm on one seed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArmOutcome {
    /// The arm.
    pub arm: Arm,
    /// Seed.
    pub seed: u64,
    /// Learning rate.
    pub lr: f64,
    /// Test top-1 (%) with the final masks.
    pub top1: f64,
    /// Test top-1 (%) after the last epoch (the last epoch's masks).
    pub last_epoch_top1: f64,
    /// Realised sparsity of the final masks.
    pub sparsity: f64,
    /// Mask changes at each epoch's assignment.
    pub changes: Vec<usize>,
    /// Kept weights per layer (final masks).
    pub kept: Vec<usize>,
    /// The trained weights and biases (`[C_out, C_in]`, masked), for the speed check.
    #[serde(skip)]
    pub layers: Vec<(Tensor, Tensor)>,
}

fn run_arm(
    s: &MiniSettings,
    arm: Arm,
    lr: f64,
    seed: u64,
    (train_set, test): (&ImageDataset, &ImageDataset),
    tag: &str,
    ctx: &RunContext,
) -> Result<ArmOutcome> {
    let device = ctx.device();
    let cfg = s.config(lr, seed, train_set.len() / s.batch);
    let (mut run, resume) = ctx.arm(&format!("{tag}{}-lr{lr}-seed{seed}", arm.tag()), &cfg)?;
    let net = Network::<Mlp>::new(s.model()?, seed, device)?;
    let (top1, last, sparsity, changes, kept) = match arm.criterion {
        None => {
            let h = classify::fit(&net, train_set, test, &cfg, &mut run, resume, &mut NoHooks)?;
            let top1 = classify::top1_curve(&h).last().copied().unwrap_or(f64::NAN);
            (top1, top1, 0.0, vec![], vec![])
        }
        Some(criterion) => {
            let sparse = Sparsified::new(net.varmap(), &sparsifiable_weights(net.varmap(), &[])?)?;
            let settings = OptgSettings { beta: s.beta, ..OptgSettings::new(arm.target).with_criterion(criterion) };
            let t = train(&net, &sparse, &settings, &cfg, train_set, test, &mut run, resume)?;
            let last = classify::top1_curve(&t.history).last().copied().unwrap_or(f64::NAN);
            let changes = t.history.iter().map(|h| h["mask_changes"].as_u64().unwrap_or(0) as usize).collect();
            let kept = sparse.kept()?.iter().map(|k| k.1).collect();
            (t.top1, last, t.sparsity, changes, kept)
        }
    };
    let tensors = net.tensors()?;
    let layers = (0..=s.hidden.len())
        .map(|i| {
            let get = |n: String| tensors.get(&n).cloned().ok_or_else(|| config_err(format!("no {n}")));
            Ok((get(format!("fc{i}.weight"))?, get(format!("fc{i}.bias"))?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ArmOutcome { arm, seed, lr, top1, last_epoch_top1: last, sparsity, changes, kept, layers })
}

/// The criteria with their selection arm, in report order: dense, OptG, GMP, Taylor.
fn methods(s: &MiniSettings) -> Vec<Arm> {
    let at = |c| Arm { criterion: Some(c), target: s.selection_target };
    vec![
        Arm { criterion: None, target: 0.0 },
        at(Criterion::Supermask),
        at(Criterion::Magnitude),
        at(Criterion::Taylor { batches: s.taylor_batches }),
    ]
}

/// The rates chosen on the validation digits, and what each scored there.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Choice {
    /// Each method's rate: dense, OptG, GMP, Taylor.
    pub lrs: Vec<f64>,
    /// `(rate, validation top-1 of each method)`.
    pub table: Vec<(f64, Vec<f64>)>,
}

fn choose(s: &MiniSettings, train_set: &ImageDataset, ctx: &RunContext) -> Result<Choice> {
    if s.lr_grid.is_empty() {
        return Err(config_err("an empty rate grid"));
    }
    let (fit, val) = train_set.holdout(s.validation)?;
    let jobs: Vec<(Arm, f64)> = s.lr_grid.iter().flat_map(|&lr| methods(s).into_iter().map(move |a| (a, lr))).collect();
    let done = ctx.side_by_side(&jobs, 2, |(arm, lr), c| {
        run_arm(s, *arm, *lr, s.selection_seed, (&fit, &val), "select-", c).map(|o| o.top1)
    })?;
    let k = methods(s).len();
    let table: Vec<(f64, Vec<f64>)> =
        s.lr_grid.iter().enumerate().map(|(i, &lr)| (lr, done[i * k..(i + 1) * k].to_vec())).collect();
    let lrs: Vec<f64> = (0..k).map(|m| first_best(table.iter().map(|t| (t.0, t.1[m])))).collect();
    if lrs.iter().any(|x| x.is_nan()) {
        return Err(config_err(format!("a method learned nothing at any rate: {table:?}")));
    }
    Ok(Choice { lrs, table })
}

/// Runs the mini (or smoke) experiment in `ctx` and returns its outcome.
pub fn mini(settings: &MiniSettings, ctx: &RunContext) -> Result<Outcome> {
    let s = &MiniSettings { seeds: ctx.seeds_or(&settings.seeds), ..settings.clone() };
    let (train_set, test) = embedded::mnist_5k_digits(s.subset.map(|x| x.0), s.subset.map(|x| x.1))?;
    let mut exp = ctx.run("", s, 0)?;
    let choice = choose(s, &train_set, ctx)?;
    exp.log(&json!({"choice": choice}))?;
    let lr_of = |a: &Arm| {
        let i = methods(s).iter().position(|m| m.method() == a.method()).unwrap_or(0);
        choice.lrs[i]
    };
    let mut arms = vec![Arm { criterion: None, target: 0.0 }];
    for &t in &s.targets {
        arms.push(Arm { criterion: Some(Criterion::Supermask), target: t });
        arms.push(Arm { criterion: Some(Criterion::Magnitude), target: t });
    }
    for &t in &s.taylor_targets {
        arms.push(Arm { criterion: Some(Criterion::Taylor { batches: s.taylor_batches }), target: t });
    }
    let jobs: Vec<(Arm, u64)> = arms.iter().flat_map(|&a| s.seeds.iter().map(move |&seed| (a, seed))).collect();
    let outcomes =
        ctx.side_by_side(&jobs, 2, |(arm, seed), c| run_arm(s, *arm, lr_of(arm), *seed, (&train_set, &test), "", c))?;
    for o in &outcomes {
        exp.log(o)?;
    }
    let mut speeds = Vec::new();
    if s.speed {
        for &t in &s.targets {
            let seed = s.seeds.first().copied().unwrap_or(0);
            let pick = |c: Option<Criterion>| {
                outcomes.iter().find(|o| o.arm.criterion == c && o.arm.target == t && o.seed == seed)
            };
            if let Some(o) = pick(Some(Criterion::Supermask)) {
                speeds.push((t, mlp_forward_ms(&o.layers, 1, 0.05)?, mlp_forward_ms(&o.layers, 64, 0.05)?));
            }
        }
    }
    let report = report(s, &choice, &outcomes, &speeds, ctx, exp.dir())?;
    exp.write_json("arms.json", &json!({"choice": choice, "arms": outcomes, "speed": speeds}))?;
    exp.write_report(&report)?;
    Ok(Outcome::new(exp.dir(), report, vec![]))
}

/// Milliseconds at batch 1 and 64 of a target's OptG network: `(target, (dense, csr), (dense, csr))`.
type Speed = (f64, (f64, f64), (f64, f64));

fn report(
    s: &MiniSettings,
    choice: &Choice,
    outcomes: &[ArmOutcome],
    speeds: &[Speed],
    ctx: &RunContext,
    dir: &std::path::Path,
) -> Result<compress_train::Report> {
    let n = s.seeds.len();
    let of = |method: &str, t: f64| -> Vec<&ArmOutcome> {
        outcomes.iter().filter(|o| o.arm.method() == method && (o.arm.target - t).abs() < 1e-12).collect()
    };
    let top1 = |method: &str, t: f64| -> Vec<f64> { of(method, t).iter().map(|o| o.top1).collect() };
    let mut rows = Vec::new();
    let dense = top1("dense", 0.0);
    for &t in &s.targets {
        let (optg, gmp) = (top1("optg", t), top1("gmp", t));
        let pct = 100.0 * t;
        if (t - 0.995).abs() < 1e-9 {
            rows.push(ReportRow::claim_seeds(
                format!("top-1 (%) at {pct} % sparsity, {n} seeds, mean (min-max): GMP vs OptG"),
                &gmp,
                &optg,
                "OptG >= GMP + 0.5 at ultra-high sparsity",
                Rule::AtLeast(0.5),
            ));
        } else {
            rows.push(ReportRow::claim_seeds(
                format!("top-1 (%) at {pct} % sparsity: GMP vs OptG"),
                &gmp,
                &optg,
                "OptG >= GMP - 0.3 (not worse than magnitude pruning)",
                Rule::AtLeast(-0.3),
            ));
        }
        if s.taylor_targets.iter().any(|x| (x - t).abs() < 1e-12) {
            rows.push(ReportRow::claim_seeds(
                format!("top-1 (%) at {pct} % sparsity: instantaneous Taylor vs OptG"),
                &top1("taylor", t),
                &optg,
                "OptG >= Taylor + 0.5 (accumulated beats instantaneous)",
                Rule::AtLeast(0.5),
            ));
        }
    }
    let gap = outcomes
        .iter()
        .filter(|o| o.arm.criterion.is_some())
        .map(|o| (o.sparsity - o.arm.target).abs())
        .fold(0.0, f64::max);
    rows.push(ReportRow::claim(
        "largest gap between realised and target sparsity (final masks, every sparse run)",
        None,
        Some(gap),
        format!("realised sparsity = target within {}", s.sparsity_tolerance),
        Rule::Holds(gap <= s.sparsity_tolerance),
    ));
    rows.push(ReportRow::info_seeds(
        "top-1 (%): the dense MLP (same recipe, its own rate) vs OptG at the lowest target",
        &dense,
        &top1("optg", s.targets.first().copied().unwrap_or(0.0)),
        "what the sparsity costs",
    ));
    for (t, b1, b64) in speeds {
        rows.push(ReportRow::info(
            format!("forward us, trained OptG MLP at {} % (seed {}), batch 1: dense vs CSR", 100.0 * t, s.seeds[0]),
            Some(1e3 * b1.0),
            Some(1e3 * b1.1),
            format!("speedup {:.2}x, ideal {:.0}x", b1.0 / b1.1, 1.0 / (1.0 - t)),
        ));
        rows.push(ReportRow::info(
            format!("forward us, trained OptG MLP at {} %, batch 64: dense vs CSR", 100.0 * t),
            Some(1e3 * b64.0),
            Some(1e3 * b64.1),
            format!("speedup {:.2}x, ideal {:.0}x", b64.0 / b64.1, 1.0 / (1.0 - t)),
        ));
    }
    // Plots: top-1 against sparsity per criterion; mask changes per epoch (first seed).
    let mut series = Vec::new();
    for m in ["optg", "gmp", "taylor"] {
        let mut targets: Vec<f64> = outcomes.iter().filter(|o| o.arm.method() == m).map(|o| o.arm.target).collect();
        targets.sort_by(f64::total_cmp);
        targets.dedup();
        series.push((m, targets.iter().map(|&t| (100.0 * t, mean(top1(m, t)))).collect::<Vec<_>>()));
    }
    line_plot(
        &dir.join("top1_vs_sparsity.svg"),
        "OptG mini: test top-1 vs sparsity (mean over seeds)",
        "sparsity (%)",
        &series,
    )?;
    let first = s.seeds.first().copied().unwrap_or(0);
    let change_series: Vec<(String, Vec<(f64, f64)>)> = outcomes
        .iter()
        .filter(|o| o.seed == first && o.arm.criterion.is_some())
        .map(|o| (o.arm.tag(), o.changes.iter().enumerate().map(|(e, &c)| (e as f64, c as f64)).collect()))
        .collect();
    let refs: Vec<(&str, Vec<(f64, f64)>)> = change_series.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    line_plot(
        &dir.join("mask_changes.svg"),
        "OptG mini: mask entries changed at each epoch's assignment",
        "epoch",
        &refs,
    )?;
    let names: Vec<&str> = methods(s).iter().map(Arm::method).collect();
    let mut notes = format!(
        "\nRates chosen on the last {} training digits (trained on the others, seed {}, at {} % sparsity; top-1 %).\n\n{}\n\
         Chosen: {} (spec: {}).\n\nPer arm and seed (final-mask top-1 / last-epoch top-1, realised sparsity, kept \
         weights per layer, mask changes summed over epochs < E/2, >= E/2; plots: top1_vs_sparsity.svg, \
         mask_changes.svg):\n\n",
        s.validation,
        s.selection_seed,
        100.0 * s.selection_target,
        rate_table("lr", &names, &choice.table),
        chosen(&names, &choice.lrs),
        s.base_lr
    );
    for o in outcomes {
        let half = s.epochs / 2;
        let (early, late): (usize, usize) = (o.changes.iter().take(half).sum(), o.changes.iter().skip(half).sum());
        notes += &format!(
            "- {} seed {} (lr {}): {:.2} / {:.2}, sparsity {:.6}, kept {:?}, changes {} / {}\n",
            o.arm.tag(),
            o.seed,
            o.lr,
            o.top1,
            o.last_epoch_top1,
            o.sparsity,
            o.kept,
            early,
            late
        );
    }
    let title = format!(
        "OptG {}: MLP {} on mnist-5k, {} epochs, targets {:?}, {n} seeds",
        ctx.profile(),
        std::iter::once(784)
            .chain(s.hidden.iter().copied())
            .chain([10])
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("-"),
        s.epochs,
        s.targets
    );
    Ok(ctx.report(title, &s.seeds).rows(rows).notes(notes))
}

/// `cargo xtask reproduce optg`.
const INFO: Info = Info {
    name: "optg",
    about: "supermask training with accumulated gradient scores to ultra-high unstructured sparsity",
    profiles: &[
        ("smoke", "6 epochs on 1,000 / 500 digits, one seed (what tests run)"),
        (
            "mini",
            "section 9: MLP 784-300-100-10 on mnist-5k, OptG and GMP at 98 / 99 / 99.5 %, Taylor at 98 / 99 %, a dense \
             reference, seeds 0-2, rates chosen on held-out training digits; the trained networks on the CSR kernel",
        ),
        ("paper", "the README's rows: schedules, budgets and FLOPs bounds checked; training needs ImageNet / CIFAR-10"),
    ],
};

/// `cargo xtask reproduce optg`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OptgReproduction;

impl Reproduction for OptgReproduction {
    fn info(&self) -> &'static Info {
        &INFO
    }

    fn run(&self, profile: &str, ctx: &RunContext) -> std::result::Result<Outcome, BoxError> {
        Ok(match profile {
            "smoke" => mini(&MiniSettings::smoke(), ctx)?,
            "paper" => crate::paper::paper(ctx)?,
            _ => mini(&MiniSettings::mini(), ctx)?,
        })
    }
}
