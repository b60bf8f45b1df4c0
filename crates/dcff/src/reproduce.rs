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
use compress_train::harness::BoxError;
use compress_train::metrics::mean;
use compress_train::optim::OptimizerKind;
use compress_train::schedule::{Decay, Schedule};
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
    /// Base learning rate.
    pub lr: f64,
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
    /// Section 9: mini-VGG 16-32 pruned to 4-8, 6 epochs, SGD 0.05 (x0.1 for the last epoch),
    /// batch 64, weight decay 5e-4, seeds 0-2.
    pub fn mini() -> Result<Self> {
        Ok(Self {
            model: VggConfig::new(&[16, 0, 32, 0], 10)?.input(1, 28)?.single_linear(),
            rates: vec![0.75, 0.75],
            epochs: 6,
            pretrain_epochs: 4,
            batch: 64,
            lr: 0.05,
            decayed_epochs: 1,
            weight_decay: 5e-4,
            seeds: vec![0, 1, 2],
            subset: None,
        })
    }

    /// A seconds-long version for tests: 3 epochs on 512 / 256 images, one seed.
    pub fn smoke() -> Result<Self> {
        Ok(Self { epochs: 3, pretrain_epochs: 2, seeds: vec![0], subset: Some((512, 256)), ..Self::mini()? })
    }

    fn train_config(&self, seed: u64, epochs: usize, first_epoch: usize, steps_per_epoch: usize) -> TrainConfig {
        // The decay milestone in this phase's own step count.
        let milestone = (self.epochs - self.decayed_epochs).saturating_sub(first_epoch) * steps_per_epoch;
        TrainConfig {
            epochs,
            batch_size: self.batch,
            accumulate: 1,
            optimizer: OptimizerKind::sgd(0.9, false),
            weight_decay: self.weight_decay,
            no_decay_on_norm_and_bias: false,
            schedule: Schedule {
                base_lr: self.lr,
                decay: Decay::MultiStep { milestones: vec![milestone as u64], gamma: 0.1 },
                warmup_steps: 0,
                warmup_start: 1.0,
            },
            label_smoothing: 0.0,
            seed,
            checkpoint_every: 0,
            log_every: 10,
            stop_after_steps: None,
        }
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

fn top1_curve(history: &[serde_json::Value]) -> Vec<f64> {
    history.iter().map(|h| h["top1"].as_f64().unwrap_or(f64::NAN)).collect()
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

/// Runs the mini (or smoke) experiment in `ctx` and returns its outcome.
pub fn mini(settings: &MiniSettings, ctx: &RunContext) -> Result<Outcome> {
    let settings = &MiniSettings { seeds: ctx.seeds_or(&settings.seeds), ..settings.clone() };
    let (train, test) = embedded::mnist_5k_digits(settings.subset.map(|s| s.0), settings.subset.map(|s| s.1))?;
    let steps = train.len() / settings.batch;
    let device = ctx.device();
    let mut exp = ctx.run("", settings, 0)?;
    let full = settings.model.clone();
    let compact = compact_config(&full, &settings.rates)?;
    let (mut a, mut a_stable, mut b, mut c, mut dense) = (vec![], vec![], vec![], vec![], vec![]);
    let mut extras: Vec<DcffExtras> = Vec::new();
    let mut stable_changes = 0usize;
    for &seed in &settings.seeds {
        let cfg = settings.train_config(seed, settings.epochs, 0, steps);
        // (a) DCFF, official KL rule.
        let (mut run, r) = ctx.arm(&format!("a-dcff-seed{seed}"), &cfg)?;
        let (out, ex, _) = train_dcff::<Vgg, _, _>(
            &full,
            &settings.rates,
            KlMode::Official,
            &cfg,
            &train,
            &test,
            &mut run,
            r,
            device,
        )?;
        exp.log(&json!({"arm": "a", "seed": seed, "top1": out.top1, "compact_top1": ex.compact_top1,
            "max_logit_diff": ex.max_logit_diff}))?;
        a.push(out);
        extras.push(ex);
        // (a') DCFF, stable KL rule.
        let (mut run, r) = ctx.arm(&format!("a-stable-seed{seed}"), &cfg)?;
        let (out, ex, _) =
            train_dcff::<Vgg, _, _>(&full, &settings.rates, KlMode::Stable, &cfg, &train, &test, &mut run, r, device)?;
        stable_changes += ex.refreshes.iter().flat_map(|e| &e.layers).filter(|l| l.changed).count();
        a_stable.push(out);
        // (b) The compact network from scratch.
        let (mut run, r) = ctx.arm(&format!("b-scratch-seed{seed}"), &cfg)?;
        let net = Network::<Vgg>::new(compact.clone(), seed, device)?;
        let h = classify::fit(&net, &train, &test, &cfg, &mut run, r, &mut NoHooks)?;
        let curve = top1_curve(&h);
        b.push(ArmOutcome { arm: "scratch".into(), seed, top1: curve.last().copied().unwrap_or(f64::NAN), curve });
        // (c) Magnitude pruning: full net for `pretrain_epochs`, L1-prune, fine-tune the rest.
        let pre = settings.train_config(seed, settings.pretrain_epochs, 0, steps);
        let (mut run, r) = ctx.arm(&format!("c-pretrain-seed{seed}"), &pre)?;
        let net = Network::<Vgg>::new(full.clone(), seed, device)?;
        let h1 = classify::fit(&net, &train, &test, &pre, &mut run, r, &mut NoHooks)?;
        let pruned = net.prune(&magnitude_kept(&net, &compact)?)?;
        let ft_epochs = settings.epochs - settings.pretrain_epochs;
        let ft = settings.train_config(seed, ft_epochs, settings.pretrain_epochs, steps);
        let (mut run, r) = ctx.arm(&format!("c-finetune-seed{seed}"), &ft)?;
        let h2 = classify::fit(&pruned, &train, &test, &ft, &mut run, r, &mut NoHooks)?;
        let mut curve = top1_curve(&h1);
        curve.extend(top1_curve(&h2));
        c.push(ArmOutcome { arm: "magnitude".into(), seed, top1: curve.last().copied().unwrap_or(f64::NAN), curve });
        // The dense network, for reference.
        let (mut run, r) = ctx.arm(&format!("dense-seed{seed}"), &cfg)?;
        let net = Network::<Vgg>::new(full.clone(), seed, device)?;
        let h = classify::fit(&net, &train, &test, &cfg, &mut run, r, &mut NoHooks)?;
        let curve = top1_curve(&h);
        dense.push(ArmOutcome { arm: "dense".into(), seed, top1: curve.last().copied().unwrap_or(f64::NAN), curve });
    }
    let m = |v: &[ArmOutcome]| mean(v.iter().map(|o| o.top1));
    let (ma, mb, mc, md, ms) = (m(&a), m(&b), m(&c), m(&dense), m(&a_stable));
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
    let rows = vec![
        ReportRow::claim(
            format!("top-1 (%), mean of {n} seeds: (c) magnitude prune+fine-tune vs (a) DCFF"),
            Some(mc),
            Some(ma),
            "(1) DCFF from scratch beats pretrain-prune-fine-tune on the same budget",
            Rule::Above(0.0),
        ),
        ReportRow::claim(
            format!("top-1 (%), mean of {n} seeds: (b) compact from scratch vs (a) DCFF"),
            Some(mb),
            Some(ma),
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
        ReportRow::info(
            format!("top-1 (%): dense vs (a') DCFF with the stable KL rule ({stable_changes} S changes)"),
            Some(md),
            Some(ms),
            "-",
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
    let report = ctx.report(title, &settings.seeds).rows(rows);
    exp.write_json("arms.json", &json!({"a": a, "a_stable": a_stable, "b": b, "c": c, "dense": dense}))?;
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
        ("mini", "section 9: mini-VGG 16-32 -> 4-8 on mnist-5k, 6 epochs, seeds 0-2"),
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
