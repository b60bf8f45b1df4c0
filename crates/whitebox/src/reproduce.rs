//! `cargo xtask reproduce whitebox`: the spec's section 9 experiment (mini profile, embedded
//! MNIST) and the scripts' settings (paper profile).
//!
//! VGG-tiny trains with class-wise masks (stage 1), the vote prunes it to a 70 % FLOPs
//! reduction with `t = sum_k M / 2` folded into the BatchNorms, and four arms fine-tune: (a)
//! White-Box, (b) an identical plain network trained as long, pruned by filter L1 norms at a
//! uniform per-layer ratio with the same FLOPs (within 1 %), (c) White-Box's stage-1 network at
//! the vote's own widths with random channels (folded as (a)): the test of the vote itself, and
//! (d) the plain network pruned by L1 at the vote's widths (a diagnostic that separates the
//! vote's structure from its channel choice). A vote ablation removes the lowest- or the
//! highest-vote half of one masked layer (no fine-tuning). Every network is evaluated without
//! masks (the official forward needs labels).
//!
//! The spec's stage-1 rate (0.05) collapses the masked network in the reference run (the gate
//! multiplies activations about 5.5x at K = 10), so each stage-1 rate and each arm's fine-tuning
//! rate are chosen on training digits held out from training (never the test set), at a seed that
//! is not reported.

use crate::error::{Result, config_err};
use crate::inherit::inherit;
use crate::layout::MaskSlot;
use crate::method::{MaskTraining, WhiteBoxSettings, counted_flops, prune, train_masks};
use crate::net::{VggTiny, vgg_tiny};
use compress_core::rng::SeededRng;
use compress_data::ImageDataset;
use compress_data::batch::Dataset;
use compress_data::embedded;
use compress_nn::stack::StackConfig;
use compress_nn::structure::Widths;
use compress_nn::{ArchConfig, Network};
use compress_train::choice::{chosen, first_best, rate_table};
use compress_train::classify::top1_curve;
use compress_train::harness::BoxError;
use compress_train::metrics::mean;
use compress_train::schedule::Decay;
use compress_train::{Info, NoHooks, Outcome, ReportRow, Reproduction, Rule, RunContext, TrainConfig, classify};
use rand::seq::index::sample;
use serde_json::json;
use std::collections::BTreeMap;

/// The mini experiment's settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MiniSettings {
    /// The unpruned network (recorded by its widths).
    #[serde(serialize_with = "widths_of")]
    pub model: StackConfig,
    /// `lambda`, the target, the vote.
    pub method: WhiteBoxSettings,
    /// Classes `K`.
    pub classes: usize,
    /// Stage-1 epochs (constant rate), also the plain network's.
    pub stage1_epochs: usize,
    /// The spec's stage-1 rate.
    pub stage1_lr: f64,
    /// Stage-1 rates each network chooses from on the validation digits.
    pub stage1_grid: Vec<f64>,
    /// Fine-tuning epochs of every arm (cosine to 0).
    pub finetune_epochs: usize,
    /// The spec's fine-tuning rate.
    pub finetune_lr: f64,
    /// Fine-tuning rates each arm chooses from on the validation digits.
    pub finetune_grid: Vec<f64>,
    /// Batch size.
    pub batch: usize,
    /// Weight decay (masks included).
    pub weight_decay: f64,
    /// The masked layer of the vote ablation.
    pub ablation_group: String,
    /// Training digits held out (the last ones) for the choices.
    pub validation: usize,
    /// Seed of the selection runs (not reported).
    pub selection_seed: u64,
    /// The largest relative FLOPs gap between the L1 arm and the vote's plan.
    pub flops_tolerance: f64,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Train / test subset sizes (`None`: all 4,000 / 1,000).
    pub subset: Option<(usize, usize)>,
}

fn widths_of<S: serde::Serializer>(m: &StackConfig, s: S) -> std::result::Result<S::Ok, S::Error> {
    serde::Serialize::serialize(m.widths(), s)
}

impl MiniSettings {
    /// Section 9: VGG-tiny on mnist-5k, stage 1 for 3 epochs (lambda 0.01, batch 64, weight
    /// decay 5e-4), the vote to a 70 % FLOPs reduction, 2 fine-tuning epochs (cosine); seeds 0-2;
    /// rates chosen on 500 held-out training digits at seed 100.
    pub fn mini() -> Result<Self> {
        Ok(Self {
            model: vgg_tiny()?,
            method: WhiteBoxSettings::new(0.01, 0.7),
            classes: 10,
            stage1_epochs: 3,
            stage1_lr: 0.05,
            stage1_grid: vec![0.05, 0.02, 0.01, 0.005],
            finetune_epochs: 2,
            finetune_lr: 0.05,
            finetune_grid: vec![0.05, 0.02, 0.01],
            batch: 64,
            weight_decay: 5e-4,
            ablation_group: "convs.2".into(),
            validation: 500,
            selection_seed: 100,
            flops_tolerance: 0.01,
            seeds: vec![0, 1, 2],
            subset: None,
        })
    }

    /// A seconds-long version for tests: 1 + 1 epochs on 512 / 256 digits, one seed.
    pub fn smoke() -> Result<Self> {
        Ok(Self {
            stage1_epochs: 1,
            finetune_epochs: 1,
            stage1_grid: vec![0.01],
            finetune_grid: vec![0.01],
            validation: 128,
            seeds: vec![0],
            subset: Some((512, 256)),
            ..Self::mini()?
        })
    }

    fn stage1_config(&self, lr: f64, seed: u64) -> TrainConfig {
        TrainConfig::sgd(self.stage1_epochs, self.batch, lr, Decay::Constant, self.weight_decay, seed)
    }

    fn finetune_config(&self, lr: f64, seed: u64, steps: usize) -> TrainConfig {
        let total = (self.finetune_epochs * steps) as u64;
        let decay = Decay::Cosine { total, min_lr: 0.0, start: 0 };
        TrainConfig::sgd(self.finetune_epochs, self.batch, lr, decay, self.weight_decay, seed)
    }
}

/// The fine-tuned arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Arm {
    /// (a) White-Box: the vote's channels, BN folded.
    WhiteBox,
    /// (b) a plain network, uniform L1 filters at the same FLOPs.
    UniformL1,
    /// (c) White-Box's stage-1 network at the vote's widths, random channels, BN folded.
    RandomAtVoteWidths,
    /// (d) the plain network at the vote's widths, L1 filters (a diagnostic: (b) vs (d) is the
    /// vote's structure, (d) vs (a) the masked training and the vote's channel choice).
    L1AtVoteWidths,
}

impl Arm {
    /// Every arm, in the spec's order.
    pub const ALL: [Arm; 4] = [Arm::WhiteBox, Arm::UniformL1, Arm::RandomAtVoteWidths, Arm::L1AtVoteWidths];

    fn tag(self) -> &'static str {
        match self {
            Arm::WhiteBox => "a-whitebox",
            Arm::UniformL1 => "b-uniform-l1",
            Arm::RandomAtVoteWidths => "c-random-at-vote-widths",
            Arm::L1AtVoteWidths => "d-l1-at-vote-widths",
        }
    }

    fn index(self) -> usize {
        Arm::ALL.iter().position(|&a| a == self).unwrap_or(0)
    }
}

/// One arm on one seed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArmOutcome {
    /// Which arm.
    pub arm: Arm,
    /// Top-1 (%) right after pruning, before fine-tuning.
    pub pruned_top1: f64,
    /// Top-1 (%) after every fine-tuning epoch.
    pub curve: Vec<f64>,
    /// Its widths.
    pub widths: Widths,
    /// FLOPs (papers' counter).
    pub flops: u64,
}

impl ArmOutcome {
    fn last(&self) -> f64 {
        self.curve.last().copied().unwrap_or(f64::NAN)
    }
}

/// Stage 1 of one seed, both networks, and what the vote made of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeedOutcome {
    /// Seed.
    pub seed: u64,
    /// The masked network after stage 1, folded, unpruned: top-1 (%).
    pub masked_top1: f64,
    /// The plain network after stage 1: top-1 (%).
    pub plain_top1: f64,
    /// Mean fold factor `t` per slot.
    pub mean_fold: Vec<f64>,
    /// The vote's widths, passes and reduction.
    pub vote_widths: Widths,
    /// Vote passes.
    pub passes: usize,
    /// FLOPs reduction of the vote's plan.
    pub reduction: f64,
    /// The uniform L1 arm's rate.
    pub uniform_rate: f64,
    /// Vote ablation on the ablation layer: top-1 (%) without its lowest-vote half, without its
    /// highest-vote half (folded, no fine-tuning).
    pub ablation: (f64, f64),
    /// The arms.
    pub arms: Vec<ArmOutcome>,
}

fn flops(cfg: &StackConfig) -> Result<u64> {
    counted_flops::<VggTiny>(cfg)
}

fn evaluate(net: &Network<VggTiny>, data: &ImageDataset) -> Result<f64> {
    Ok(classify::evaluate(net, data, 256)?.0)
}

/// Stage 1 of one seed at `(masked_lr, plain_lr)`: the two trained networks and the masks.
struct Stage1 {
    masked: Network<VggTiny>,
    masks: MaskTraining,
    plain: Network<VggTiny>,
}

fn stage1(
    s: &MiniSettings,
    lrs: (f64, f64),
    seed: u64,
    train: &ImageDataset,
    eval: &ImageDataset,
    tag: &str,
    ctx: &RunContext,
) -> Result<Stage1> {
    let device = ctx.device();
    let cfg = s.stage1_config(lrs.0, seed);
    let (mut run, resume) = ctx.arm(&format!("{tag}stage1-masked-l{}-seed{seed}", s.method.lambda), &cfg)?;
    let masked = Network::<VggTiny>::new(s.model.clone(), seed, device)?;
    let masks = train_masks(&masked, s.classes, &s.method, train, &cfg, &mut run, resume)?;
    let cfg = s.stage1_config(lrs.1, seed);
    let (mut run, resume) = ctx.arm(&format!("{tag}stage1-plain-seed{seed}"), &cfg)?;
    let plain = Network::<VggTiny>::new(s.model.clone(), seed, device)?;
    classify::fit(&plain, train, eval, &cfg, &mut run, resume, &mut NoHooks)?;
    Ok(Stage1 { masked, masks, plain })
}

/// Random channels at `widths` for every prunable slot's group (stream per group of `seed`).
fn random_kept(slots: &[MaskSlot], widths: &Widths, seed: u64) -> BTreeMap<String, Vec<usize>> {
    let rng = SeededRng::new(seed);
    let mut kept = BTreeMap::new();
    for s in slots.iter().filter(|s| s.prunable) {
        let m = widths.get(&s.group).copied().unwrap_or(s.width);
        let mut k = sample(&mut rng.stream(&format!("whitebox/random-arm/{}", s.group), 0), s.width, m).into_vec();
        k.sort_unstable();
        kept.insert(s.group.clone(), k);
    }
    kept
}

/// Each arm's pruned starting network.
type Starts = Vec<(Arm, Network<VggTiny>)>;

/// The four pruned starting networks of one seed and the seed's diagnostics (arms empty).
fn prune_arms(s: &MiniSettings, st: &Stage1, seed: u64, eval: &ImageDataset) -> Result<(SeedOutcome, Starts)> {
    let slots = &st.masks.slots;
    let masks = &st.masks.masks;
    let folded = crate::inherit::fold(&st.masked, slots, masks)?;
    let masked_top1 = evaluate(&folded, eval)?;
    let plain_top1 = evaluate(&st.plain, eval)?;
    let p = prune(&st.masked, &st.masks, &s.method, seed)?;
    // The vote ablation: one layer loses its lowest- or its highest-vote half.
    let j = slots
        .iter()
        .position(|x| x.group == s.ablation_group)
        .ok_or_else(|| config_err(format!("no mask on {:?}", s.ablation_group)))?;
    let mut order: Vec<usize> = (0..slots[j].width).collect();
    order.sort_by(|&a, &b| p.scores[j][a].total_cmp(&p.scores[j][b]).then(a.cmp(&b)));
    let half = order.len() / 2;
    let without = |removed: &[usize]| -> Result<f64> {
        let mut k: Vec<usize> = order.iter().copied().filter(|c| !removed.contains(c)).collect();
        k.sort_unstable();
        evaluate(&inherit(&st.masked, slots, masks, &[(s.ablation_group.clone(), k)].into())?, eval)
    };
    let ablation = (without(&order[..half])?, without(&order[order.len() - half..])?);
    // (b): the plain network at a uniform ratio with the vote's FLOPs, L1 filters.
    let full: Widths = slots.iter().filter(|x| x.prunable).map(|x| (x.group.clone(), x.width)).collect();
    let mut count = |w: &Widths| -> compress_prune::Result<u64> {
        Ok(compress_prune::measured_cost::<VggTiny>(&s.model.with_widths(w.clone())?)?.pruning_flops())
    };
    let uniform = compress_prune::uniform_at_flops(&full, p.plan.flops, &mut count)?;
    let l1_kept = compress_prune::magnitude_kept(&st.plain, &s.model.with_widths(uniform.widths.clone())?)?;
    let l1 = st.plain.prune(&l1_kept)?;
    // (c): the vote's widths, random channels; (d): the plain network at the vote's widths.
    let random = inherit(&st.masked, slots, masks, &random_kept(slots, &p.plan.widths, seed))?;
    let l1_vote =
        st.plain.prune(&compress_prune::magnitude_kept(&st.plain, &s.model.with_widths(p.plan.widths.clone())?)?)?;
    let mean_fold = masks
        .iter()
        .map(|m| Ok(crate::gate::fold_scale(m)?.iter().map(|&v| f64::from(v)).sum::<f64>() / m.dim(1)? as f64))
        .collect::<Result<Vec<f64>>>()?;
    let outcome = SeedOutcome {
        seed,
        masked_top1,
        plain_top1,
        mean_fold,
        vote_widths: p.plan.widths.clone(),
        passes: p.plan.passes.len(),
        reduction: p.plan.reduction,
        uniform_rate: uniform.rate,
        ablation,
        arms: Vec::new(),
    };
    let starts = vec![
        (Arm::WhiteBox, p.network),
        (Arm::UniformL1, l1),
        (Arm::RandomAtVoteWidths, random),
        (Arm::L1AtVoteWidths, l1_vote),
    ];
    Ok((outcome, starts))
}

/// Fine-tunes `start` as `arm` at `lr`.
#[allow(clippy::too_many_arguments)]
fn finetune(
    s: &MiniSettings,
    arm: Arm,
    start: &Network<VggTiny>,
    lr: f64,
    seed: u64,
    train: &ImageDataset,
    eval: &ImageDataset,
    tag: &str,
    ctx: &RunContext,
) -> Result<ArmOutcome> {
    let pruned_top1 = evaluate(start, eval)?;
    let net = Network::<VggTiny>::from_tensors(start.config.clone(), &start.tensors()?, start.device())?;
    let cfg = s.finetune_config(lr, seed, train.len() / s.batch);
    let (mut run, resume) = ctx.arm(&format!("{tag}{}-seed{seed}", arm.tag()), &cfg)?;
    let curve = top1_curve(&classify::fit(&net, train, eval, &cfg, &mut run, resume, &mut NoHooks)?);
    Ok(ArmOutcome { arm, pruned_top1, curve, widths: net.config.widths().clone(), flops: flops(&net.config)? })
}

/// The rates chosen on the validation digits, and what each scored there.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Choice {
    /// Stage-1 rates: (masked, plain).
    pub stage1: (f64, f64),
    /// `(rate, validation top-1 of the folded masked network, of the plain network)`.
    pub stage1_table: Vec<(f64, f64, f64)>,
    /// Each arm's fine-tuning rate, in [`Arm::ALL`] order.
    pub finetune: Vec<f64>,
    /// `(rate, final validation top-1 of each arm)`.
    pub finetune_table: Vec<(f64, Vec<f64>)>,
}

fn choose(s: &MiniSettings, train: &ImageDataset, ctx: &RunContext) -> Result<Choice> {
    if s.stage1_grid.is_empty() || s.finetune_grid.is_empty() {
        return Err(config_err("empty rate grids"));
    }
    let (fit, val) = train.holdout(s.validation)?;
    let seed = s.selection_seed;
    let mut stage1_table = Vec::new();
    for &lr in &s.stage1_grid {
        let st = stage1(s, (lr, lr), seed, &fit, &val, &format!("select-{lr}-"), ctx)?;
        let folded = crate::inherit::fold(&st.masked, &st.masks.slots, &st.masks.masks)?;
        stage1_table.push((lr, evaluate(&folded, &val)?, evaluate(&st.plain, &val)?));
    }
    let lrs =
        (first_best(stage1_table.iter().map(|t| (t.0, t.1))), first_best(stage1_table.iter().map(|t| (t.0, t.2))));
    if lrs.0.is_nan() || lrs.1.is_nan() {
        return Err(config_err(format!("a network learned nothing at any stage-1 rate: {stage1_table:?}")));
    }
    let st = stage1(s, lrs, seed, &fit, &val, "select-", ctx)?;
    let (_, starts) = prune_arms(s, &st, seed, &val)?;
    let mut finetune_table = Vec::new();
    for &lr in &s.finetune_grid {
        let mut v = Vec::new();
        for (arm, start) in &starts {
            v.push(finetune(s, *arm, start, lr, seed, &fit, &val, &format!("select-ft{lr}-"), ctx)?.last());
        }
        finetune_table.push((lr, v));
    }
    let finetune: Vec<f64> =
        (0..Arm::ALL.len()).map(|k| first_best(finetune_table.iter().map(|t| (t.0, t.1[k])))).collect();
    if finetune.iter().any(|x| x.is_nan()) {
        return Err(config_err(format!("an arm learned nothing at any fine-tuning rate: {finetune_table:?}")));
    }
    Ok(Choice { stage1: lrs, stage1_table, finetune, finetune_table })
}

/// Runs the mini (or smoke) experiment in `ctx` and returns its outcome.
pub fn mini(settings: &MiniSettings, ctx: &RunContext) -> Result<Outcome> {
    let s = &MiniSettings { seeds: ctx.seeds_or(&settings.seeds), ..settings.clone() };
    let (train, test) = embedded::mnist_5k_digits(s.subset.map(|x| x.0), s.subset.map(|x| x.1))?;
    let mut exp = ctx.run("", s, 0)?;
    let choice = choose(s, &train, ctx)?;
    exp.log(&json!({"choice": choice}))?;
    let mut seeds = Vec::new();
    for &seed in &s.seeds {
        let st = stage1(s, choice.stage1, seed, &train, &test, "", ctx)?;
        let (mut o, starts) = prune_arms(s, &st, seed, &test)?;
        for (arm, start) in &starts {
            o.arms.push(finetune(s, *arm, start, choice.finetune[arm.index()], seed, &train, &test, "", ctx)?);
        }
        exp.log(&o)?;
        seeds.push(o);
    }
    let report = report(s, &choice, &seeds, ctx)?;
    exp.write_json("arms.json", &json!({"choice": choice, "seeds": seeds}))?;
    exp.write_report(&report)?;
    Ok(Outcome::new(exp.dir(), report, vec![]))
}

fn report(
    s: &MiniSettings,
    choice: &Choice,
    seeds: &[SeedOutcome],
    ctx: &RunContext,
) -> Result<compress_train::Report> {
    let n = seeds.len();
    let arm = |a: Arm, f: &dyn Fn(&ArmOutcome) -> f64| -> Vec<f64> {
        seeds.iter().filter_map(|o| o.arms.iter().find(|x| x.arm == a)).map(f).collect()
    };
    let last = |a: Arm| arm(a, &ArmOutcome::last);
    let flops_gap = seeds
        .iter()
        .map(|o| {
            let f = |a| o.arms.iter().find(|x| x.arm == a).map_or(0.0, |x| x.flops as f64);
            (f(Arm::UniformL1) - f(Arm::WhiteBox)).abs() / f(Arm::WhiteBox).max(1.0)
        })
        .fold(0.0, f64::max);
    let low: Vec<f64> = seeds.iter().map(|o| o.ablation.0).collect();
    let high: Vec<f64> = seeds.iter().map(|o| o.ablation.1).collect();
    let ablation_wins = seeds.iter().filter(|o| o.ablation.0 > o.ablation.1).count();
    let base_flops = flops(&s.model)? as f64;
    let e = s.finetune_epochs;
    let rows = vec![
        ReportRow::claim(
            "largest FLOPs gap, (b) uniform L1 vs the vote's plan (%)",
            None,
            Some(100.0 * flops_gap),
            format!("the arms' FLOPs matched within {} %", 100.0 * s.flops_tolerance),
            Rule::Holds(flops_gap <= s.flops_tolerance),
        ),
        ReportRow::claim_seeds(
            format!(
                "top-1 (%) after {e} fine-tuning epochs, {n} seeds, mean (min-max): (b) uniform L1 vs (a) White-Box"
            ),
            &last(Arm::UniformL1),
            &last(Arm::WhiteBox),
            "(1) White-Box >= the L1 baseline at the same FLOPs",
            Rule::AtLeast(0.0),
        ),
        ReportRow::claim_seeds(
            format!(
                "vote ablation on {} (folded, no fine-tuning): top-1 (%) without the highest-vote half vs without the \
                 lowest-vote half ({ablation_wins} of {n} seeds favour the vote)",
                s.ablation_group
            ),
            &high,
            &low,
            "(2) removing the lowest-vote half costs less than removing the highest-vote half",
            Rule::Above(0.0),
        ),
        ReportRow::info_seeds(
            format!("top-1 (%) after {e} epochs: (c) random channels at the vote's widths vs (a) White-Box"),
            &last(Arm::RandomAtVoteWidths),
            &last(Arm::WhiteBox),
            format!(
                "the test of the vote: (a) >= (c) {}",
                Rule::AtLeast(0.0).describe_seeds(&last(Arm::RandomAtVoteWidths), &last(Arm::WhiteBox))
            ),
        ),
        ReportRow::info_seeds(
            format!("top-1 (%) after {e} epochs: (b) uniform L1 vs (d) L1 filters at the vote's widths"),
            &last(Arm::UniformL1),
            &last(Arm::L1AtVoteWidths),
            "the vote's structure against the uniform one, same network and criterion",
        ),
        ReportRow::info_seeds(
            format!("top-1 (%) after {e} epochs: (d) plain network, L1 at the vote's widths vs (a) White-Box"),
            &last(Arm::L1AtVoteWidths),
            &last(Arm::WhiteBox),
            "same widths: the masked training and the vote's channels against a plain network and L1",
        ),
        ReportRow::info_seeds(
            "top-1 (%) right after pruning: (b) uniform L1 vs (a) White-Box (folded)",
            &arm(Arm::UniformL1, &|o| o.pruned_top1),
            &arm(Arm::WhiteBox, &|o| o.pruned_top1),
            "-",
        ),
        ReportRow::info_seeds(
            "top-1 (%) right after pruning: (c) random at the vote's widths vs (a) White-Box",
            &arm(Arm::RandomAtVoteWidths, &|o| o.pruned_top1),
            &arm(Arm::WhiteBox, &|o| o.pruned_top1),
            "-",
        ),
        ReportRow::info_seeds(
            format!("top-1 (%) after stage 1 ({} epochs), unpruned: plain vs masked (folded)", s.stage1_epochs),
            &seeds.iter().map(|o| o.plain_top1).collect::<Vec<_>>(),
            &seeds.iter().map(|o| o.masked_top1).collect::<Vec<_>>(),
            "-",
        ),
        ReportRow::info(
            format!(
                "FLOPs (papers' counter) unpruned -> the vote's plan (mean), reduction {:.1} %",
                100.0 * mean(seeds.iter().map(|o| o.reduction))
            ),
            Some(base_flops),
            Some(mean(arm(Arm::WhiteBox, &|o| o.flops as f64).into_iter())),
            format!("target {} %", 100.0 * s.method.target),
        )
        .counts(),
    ];
    let title = format!(
        "White-Box {}: VGG-tiny on mnist-5k, lambda {}, target {} %, {} + {e} epochs, {n} seeds",
        ctx.profile(),
        s.method.lambda,
        100.0 * s.method.target,
        s.stage1_epochs
    );
    let stage1: Vec<(f64, Vec<f64>)> = choice.stage1_table.iter().map(|&(lr, m, p)| (lr, vec![m, p])).collect();
    let mut notes = format!(
        "\nRates chosen on the last {} training digits (trained on the others, seed {}; top-1 %).\n\n{}\n\
         Chosen: masked {}, plain {} (spec: {}).\n\n{}",
        s.validation,
        s.selection_seed,
        rate_table("stage-1 lr", &["masked (folded)", "plain"], &stage1),
        choice.stage1.0,
        choice.stage1.1,
        s.stage1_lr,
        rate_table("fine-tune lr", &Arm::ALL.map(Arm::tag), &choice.finetune_table),
    );
    notes += &format!(
        "\nChosen: {} (spec: {}).\n\nPer seed (widths {}; top-1 %):\n\n",
        chosen(&Arm::ALL.map(Arm::tag), &choice.finetune),
        s.finetune_lr,
        s.model.groups().iter().filter(|g| g.prunable).map(|g| g.name.clone()).collect::<Vec<_>>().join("/"),
    );
    for o in seeds {
        let w = |a: Arm| {
            o.arms
                .iter()
                .find(|x| x.arm == a)
                .map(|x| {
                    s.model
                        .groups()
                        .iter()
                        .filter(|g| g.prunable)
                        .map(|g| x.widths.get(&g.name).map_or("-".into(), |v| v.to_string()))
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .unwrap_or_default()
        };
        let t = |a: Arm| o.arms.iter().find(|x| x.arm == a).map_or(f64::NAN, ArmOutcome::last);
        let p = |a: Arm| o.arms.iter().find(|x| x.arm == a).map_or(f64::NAN, |x| x.pruned_top1);
        notes += &format!(
            "- seed {}: stage 1 masked {:.2} plain {:.2}; mean t per mask {}; vote widths {} ({} passes, -{:.1} % FLOPs), \
             L1 widths {} (rate {:.3}); after pruning (a) {:.2} (b) {:.2} (c) {:.2} (d) {:.2}; fine-tuned (a) {:.2} \
             (b) {:.2} (c) {:.2} (d) {:.2}; ablation without lowest / highest half {:.2} / {:.2}\n",
            o.seed,
            o.masked_top1,
            o.plain_top1,
            o.mean_fold.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join("/"),
            w(Arm::WhiteBox),
            o.passes,
            100.0 * o.reduction,
            w(Arm::UniformL1),
            o.uniform_rate,
            p(Arm::WhiteBox),
            p(Arm::UniformL1),
            p(Arm::RandomAtVoteWidths),
            p(Arm::L1AtVoteWidths),
            t(Arm::WhiteBox),
            t(Arm::UniformL1),
            t(Arm::RandomAtVoteWidths),
            t(Arm::L1AtVoteWidths),
            o.ablation.0,
            o.ablation.1,
        );
    }
    Ok(ctx.report(title, &s.seeds).rows(rows).notes(notes))
}

/// `cargo xtask reproduce whitebox`.
const INFO: Info = Info {
    name: "whitebox",
    about: "class-wise channel masks, a global vote, pruning to a FLOPs target",
    profiles: &[
        ("smoke", "1 + 1 epochs on 512 / 256 digits, one seed (what tests run)"),
        (
            "mini",
            "section 9: VGG-tiny on mnist-5k, 70 % FLOPs, White-Box vs uniform L1 vs random channels at the vote's \
             widths, vote ablation, seeds 0-2, rates chosen on held-out training digits",
        ),
        (
            "paper",
            "the scripts' rows: mask layouts, MACs and the vote loop checked; training needs CIFAR-10 / ImageNet",
        ),
    ],
};

/// `cargo xtask reproduce whitebox`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhiteBoxReproduction;

impl Reproduction for WhiteBoxReproduction {
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
