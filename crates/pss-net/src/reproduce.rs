//! `cargo xtask reproduce pss-net`: the spec's section 9 experiment on the
//! embedded MNIST. MBV1-tiny supernets train with PSS-Net and with the random-sampling baseline
//! (`p_e = 1`, pools only observed) on the same recipe; each bucket's argmax-score pool subnet,
//! and a uniform-width subnet per bucket from the baseline's supernet, are evaluated with their
//! BatchNorms recalibrated on 9 training batches. PSS-Net vs the baseline is judged by the paired
//! per-seed difference and its standard error; the deployed subnets are extracted as narrow
//! networks and checked against the supernet; a latency table of the whole space is measured on
//! this machine and its sums compared with the deployed subnets timed whole.

use crate::deploy::extract;
use crate::error::{Result, config_err};
use crate::flops::SlimMobileNetV1;
use crate::latency::{LatencyTable, all_blocks, blocks, on_threads};
use crate::recalibrate::recalibrate;
use crate::schedule::PssSchedule;
use crate::space::SubnetConfig;
use crate::supernet::Supernet;
use crate::trainer::{PssSettings, PssState, Sandwich};
use candle_core::{D, DType};
use compress_data::ImageDataset;
use compress_data::batch::{Batcher, Dataset};
use compress_data::embedded;
use compress_train::harness::BoxError;
use compress_train::optim::OptimizerKind;
use compress_train::plot::line_plot;
use compress_train::schedule::Decay;
use compress_train::{Info, NoHooks, Outcome, ReportRow, Reproduction, Rule, RunContext, TrainConfig, Verdict};
use serde_json::json;

/// The mini experiment's settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MiniSettings {
    /// The supernet.
    pub arch: SlimMobileNetV1,
    /// The method (its `random_only` is set per arm).
    pub method: PssSettings,
    /// Epochs `E`.
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// The spec's learning rate (SGD Nesterov 0.9, cosine per step to 0).
    pub lr: f64,
    /// Rates each arm (PSS-Net, the baseline) chooses from on the validation digits.
    pub lr_grid: Vec<f64>,
    /// Training digits held out (the last ones) for the choice.
    pub validation: usize,
    /// Seed of the selection runs (not reported).
    pub selection_seed: u64,
    /// Weight decay (non-depthwise conv and classifier weights).
    pub weight_decay: f64,
    /// Batches of the BatchNorm recalibration.
    pub recalibration_batches: usize,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Train / test subset sizes (`None`: all 4,000 / 1,000).
    pub subset: Option<(usize, usize)>,
    /// Least seconds per latency-table entry; the whole space's table is built when positive,
    /// only the deployed subnets' blocks (timed once) otherwise.
    pub latency_seconds: f64,
}

impl MiniSettings {
    /// Section 9 with the reference run's fixes: E = 6, batch 64, lr 0.1, wd 1e-4, K = 10,
    /// lambda 0.9, buckets of 55 kMACs in (55, 660) kept with >= 50 of 20,000 map samples, 9
    /// recalibration batches, seeds 0-9.
    pub fn mini() -> Self {
        Self {
            arch: SlimMobileNetV1::tiny(),
            method: PssSettings {
                schedule: PssSchedule::official(6),
                capacity: 10,
                lambda: 0.9,
                buckets: (55.0, 660.0, 55.0),
                n_map: 20_000,
                min_count: 50,
                unit: 1e3,
                random_only: false,
            },
            epochs: 6,
            batch: 64,
            lr: 0.1,
            lr_grid: vec![0.05, 0.1, 0.2],
            validation: 500,
            selection_seed: 100,
            weight_decay: 1e-4,
            recalibration_batches: 9,
            seeds: (0..10).collect(),
            subset: None,
            latency_seconds: 0.02,
        }
    }

    /// A seconds-long version for tests: 2 epochs on 1,280 / 200 digits, 5,000 map samples, one
    /// seed.
    pub fn smoke() -> Self {
        let mut s = Self::mini();
        s.epochs = 2;
        s.method.schedule = PssSchedule::official(2);
        s.method.n_map = 5_000;
        s.method.min_count = 10;
        s.seeds = vec![0];
        s.subset = Some((1280, 200));
        s.lr_grid = vec![0.1];
        s.validation = 200;
        s.latency_seconds = 0.0;
        s
    }

    fn config(&self, lr: f64, seed: u64, steps: usize) -> TrainConfig {
        let decay = Decay::Cosine { total: (self.epochs * steps) as u64, min_lr: 0.0, start: 0 };
        let mut cfg = TrainConfig::sgd(self.epochs, self.batch, lr, decay, self.weight_decay, seed);
        cfg.optimizer = OptimizerKind::sgd(0.9, true);
        cfg.log_every = 0;
        cfg
    }
}

/// One bucket of one seed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BucketOutcome {
    /// Bucket centre (kMACs).
    pub bucket: f64,
    /// PSS-Net's deployed subnet, its kMACs and test top-1 (%).
    pub pss: (SubnetConfig, f64, f64),
    /// The baseline's.
    pub baseline: (SubnetConfig, f64, f64),
    /// The uniform-width subnet (on the baseline's supernet).
    pub uniform: (SubnetConfig, f64, f64),
    /// Largest |deployed - supernet| logit difference of PSS-Net's subnet.
    pub deploy_diff: f32,
}

/// One seed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeedOutcome {
    /// Seed.
    pub seed: u64,
    /// Per bucket.
    pub buckets: Vec<BucketOutcome>,
    /// Iterations that drew from a pool (PSS-Net).
    pub pool_draws: usize,
    /// Max / min net top-1 (%) of each supernet: (PSS-Net, baseline).
    pub extremes: ((f64, f64), (f64, f64)),
}

fn accuracy(sup: &Supernet, cfg: &SubnetConfig, test: &ImageDataset) -> Result<f64> {
    let b = Batcher::new(250, false, 0, sup.device().clone())?;
    let (mut right, mut n) = (0f64, 0usize);
    for batch in b.epoch(test, 0, 0)? {
        let batch = batch?;
        let pred = sup.forward(&batch.images, cfg, false)?.argmax(D::Minus1)?;
        right += pred.eq(&batch.labels)?.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        n += batch.indices.len();
    }
    Ok(100.0 * right / n as f64)
}

/// Recalibrated test top-1 of `cfg` on `sup`.
fn evaluate(
    s: &MiniSettings,
    sup: &Supernet,
    cfg: &SubnetConfig,
    train: &ImageDataset,
    test: &ImageDataset,
    seed: u64,
) -> Result<f64> {
    recalibrate(sup, cfg, train, s.recalibration_batches, s.batch, seed)?;
    accuracy(sup, cfg, test)
}

/// The all-equal-multiplier subnet whose cost is closest to `bucket` over every resolution.
fn uniform_width(sup: &Supernet, bucket: f64, unit: f64) -> SubnetConfig {
    let sp = &sup.arch.space;
    let mut best = (f64::INFINITY, sp.min_config());
    for r in sp.resolution_grid() {
        for &m in &sp.mult_grid() {
            let c = SubnetConfig::uniform(r, m, sp.bases.len());
            let d = (sup.macs(&c) as f64 / unit - bucket).abs();
            if d < best.0 {
                best = (d, c);
            }
        }
    }
    best.1
}

/// Trains one supernet (PSS-Net or the baseline) on `train`.
fn train_one(
    s: &MiniSettings,
    (random_only, lr): (bool, f64),
    seed: u64,
    train: &ImageDataset,
    prefix: &str,
    ctx: &RunContext,
) -> Result<(Supernet, PssState)> {
    let cfg = s.config(lr, seed, train.len() / s.batch);
    let tag = if random_only { "baseline" } else { "pss" };
    let (mut run, resume) = ctx.arm(&format!("{prefix}{tag}-lr{lr}-seed{seed}"), &cfg)?;
    let sup = Supernet::new(s.arch.clone(), seed, ctx.device())?;
    let method = PssSettings { random_only, ..s.method.clone() };
    let state = PssState::new(&sup, &method, seed)?;
    let obj =
        Sandwich { sup: &sup, settings: &method, state: &state, seed, pools_file: Some(run.dir().join("pools.json")) };
    if resume {
        obj.restore()?;
    }
    compress_train::classify::fit_objective(&obj, train, &cfg, &mut run, resume, &mut NoHooks)?;
    Ok((sup, state))
}

fn run_seed(
    s: &MiniSettings,
    seed: u64,
    lrs: (f64, f64),
    (train, test): (&ImageDataset, &ImageDataset),
    prefix: &str,
    ctx: &RunContext,
) -> Result<SeedOutcome> {
    let (pss, pss_state) = train_one(s, (false, lrs.0), seed, train, prefix, ctx)?;
    let (base, base_state) = train_one(s, (true, lrs.1), seed, train, prefix, ctx)?;
    let unit = s.method.unit;
    let kmacs = |sup: &Supernet, c: &SubnetConfig| sup.macs(c) as f64 / unit;
    let recal_seed = compress_core::rng::SeededRng::new(seed).child("pss-net/recalibration").seed();
    let mut buckets = Vec::new();
    let probe_x = Batcher::new(64, false, 0, pss.device().clone())?
        .epoch(test, 0, 0)?
        .next()
        .ok_or_else(|| config_err("no test batch"))??
        .images;
    for ((b, p), (_, q)) in pss_state.best().into_iter().zip(base_state.best()) {
        // A bucket never drawn in a short run has an empty pool: left out (the report says so).
        let (Some((pc, _)), Some((qc, _))) = (p, q) else { continue };
        let pa = evaluate(s, &pss, &pc, train, test, recal_seed)?;
        let deployed = extract(&pss, &pc)?;
        let deploy_diff =
            (deployed.forward(&probe_x)? - pss.forward(&probe_x, &pc, false)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let qa = evaluate(s, &base, &qc, train, test, recal_seed)?;
        let uc = uniform_width(&base, b, unit);
        let ua = evaluate(s, &base, &uc, train, test, recal_seed)?;
        buckets.push(BucketOutcome {
            bucket: b,
            pss: (pc.clone(), kmacs(&pss, &pc), pa),
            baseline: (qc.clone(), kmacs(&base, &qc), qa),
            uniform: (uc.clone(), kmacs(&base, &uc), ua),
            deploy_diff,
        });
    }
    let sp = &s.arch.space;
    let ext = |sup: &Supernet| -> Result<(f64, f64)> {
        Ok((
            evaluate(s, sup, &sp.max_config(), train, test, recal_seed)?,
            evaluate(s, sup, &sp.min_config(), train, test, recal_seed)?,
        ))
    };
    let pool_draws = *pss_state.pool_draws.borrow();
    Ok(SeedOutcome { seed, buckets, pool_draws, extremes: (ext(&pss)?, ext(&base)?) })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Paired per-seed differences: mean, sample sd, standard error, t, and the verdict that the
/// mean is positive beyond noise (`t > 2` holds, `t < -2` fails, else within noise).
fn paired(d: &[f64]) -> (f64, f64, f64, f64, Verdict) {
    let n = d.len() as f64;
    let m = mean(d);
    let sd = (d.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    let se = sd / n.sqrt();
    let t = if se > 0.0 { m / se } else { f64::NAN };
    let v = if d.len() < 2 || !t.is_finite() {
        Verdict::Missing
    } else if t > 2.0 {
        Verdict::Holds
    } else if t < -2.0 {
        Verdict::Fails
    } else {
        Verdict::WithinNoise
    };
    (m, sd, se, t, v)
}

/// The rates chosen on the validation digits, and the bucket means each scored there.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Choice {
    /// (PSS-Net, baseline).
    pub lrs: (f64, f64),
    /// `(rate, [PSS-Net, baseline] bucket-mean validation top-1)`.
    pub table: Vec<(f64, Vec<f64>)>,
}

fn choose(s: &MiniSettings, train: &ImageDataset, ctx: &RunContext) -> Result<Choice> {
    if s.lr_grid.is_empty() {
        return Err(config_err("an empty rate grid"));
    }
    let (fit, val) = train.holdout(s.validation)?;
    let done =
        ctx.side_by_side(&s.lr_grid, 2, |&lr, c| run_seed(s, s.selection_seed, (lr, lr), (&fit, &val), "select-", c))?;
    let bucket_mean =
        |o: &SeedOutcome, f: &dyn Fn(&BucketOutcome) -> f64| mean(&o.buckets.iter().map(f).collect::<Vec<_>>());
    let table: Vec<(f64, Vec<f64>)> = s
        .lr_grid
        .iter()
        .zip(&done)
        .map(|(&lr, o)| (lr, vec![bucket_mean(o, &|b| b.pss.2), bucket_mean(o, &|b| b.baseline.2)]))
        .collect();
    let pick = |k: usize| compress_train::choice::first_best(table.iter().map(|t| (t.0, t.1[k])));
    let lrs = (pick(0), pick(1));
    if lrs.0.is_nan() || lrs.1.is_nan() {
        return Err(config_err(format!("an arm learned nothing at any rate: {table:?}")));
    }
    Ok(Choice { lrs, table })
}

/// Runs the mini (or smoke) experiment in `ctx` and returns its outcome.
pub fn mini(settings: &MiniSettings, ctx: &RunContext) -> Result<Outcome> {
    let s = &MiniSettings { seeds: ctx.seeds_or(&settings.seeds), ..settings.clone() };
    let (train, test) = embedded::mnist_5k_digits(s.subset.map(|x| x.0), s.subset.map(|x| x.1))?;
    let mut exp = ctx.run("", s, 0)?;
    let choice = choose(s, &train, ctx)?;
    exp.log(&json!({"choice": choice}))?;
    let seeds = ctx.side_by_side(&s.seeds, 2, |&seed, c| run_seed(s, seed, choice.lrs, (&train, &test), "", c))?;
    for o in &seeds {
        exp.log(o)?;
    }
    // The buckets every seed filled (a short run can leave a pool empty).
    let common: Vec<f64> = seeds
        .first()
        .map(|o| {
            o.buckets
                .iter()
                .map(|b| b.bucket)
                .filter(|b| seeds.iter().all(|o| o.buckets.iter().any(|x| x.bucket == *b)))
                .collect()
        })
        .unwrap_or_default();
    if common.is_empty() {
        return Err(config_err("no bucket has a pool entry on every seed"));
    }
    let at = |o: &SeedOutcome, b: f64| o.buckets.iter().find(|x| x.bucket == b).cloned();
    let arm_mean = |f: &dyn Fn(&BucketOutcome) -> f64| -> Vec<f64> {
        seeds
            .iter()
            .map(|o| mean(&common.iter().filter_map(|&b| at(o, b)).map(|x| f(&x)).collect::<Vec<_>>()))
            .collect()
    };
    let (pss, base, uni) = (arm_mean(&|b| b.pss.2), arm_mean(&|b| b.baseline.2), arm_mean(&|b| b.uniform.2));
    let d: Vec<f64> = pss.iter().zip(&base).map(|(a, b)| a - b).collect();
    let (md, sd, se, t, paired_base) = paired(&d);
    // Uniform width is evaluated on the same seed's baseline supernet: the seeds pair the arms.
    let du: Vec<f64> = pss.iter().zip(&uni).map(|(a, b)| a - b).collect();
    let (mdu, sdu, seu, tu, paired_uni) = paired(&du);
    // The latency table on this machine (batch 1), checked against the deployed subnets of the
    // first seed measured whole (same shapes: fresh weights do not change the time).
    let mut table = LatencyTable::new(1, 1);
    let first = &seeds[0].buckets;
    if s.latency_seconds > 0.0 {
        table.measure(&all_blocks(&s.arch), s.latency_seconds)?;
    } else {
        for b in first {
            table.measure(&blocks(&s.arch, &b.pss.0), 0.0)?;
        }
    }
    exp.write_json("latency_table.json", &table)?;
    let fresh = Supernet::new(s.arch.clone(), 0, ctx.device())?;
    let mut latency = Vec::new();
    for b in first {
        let d = extract(&fresh, &b.pss.0)?;
        let r = b.pss.0.resolution;
        let x = candle_core::Tensor::randn(0f32, 1.0, (1, s.arch.in_channels, r, r), ctx.device())?;
        let secs = s.latency_seconds.max(0.01);
        let measured = on_threads(table.threads, || -> std::result::Result<f64, String> {
            let mut best = f64::INFINITY;
            for _ in 0..3 {
                let t = compress_core::timing::median_seconds(3, 20, secs, || d.net.forward_t(&x, false).map(|_| ()))
                    .map_err(|e| e.to_string())?;
                best = best.min(1e6 * t);
            }
            Ok(best)
        })?
        .map_err(config_err)?;
        latency.push((b.bucket, table.predict(&s.arch, &b.pss.0)?, measured));
    }
    let worst = latency.iter().map(|(_, p, m)| (p / m - 1.0).abs()).fold(0.0, f64::max);
    let deploy_max = seeds.iter().flat_map(|o| o.buckets.iter().map(|b| b.deploy_diff)).fold(0f32, f32::max);
    let ns = seeds.len();
    let rows = vec![
        ReportRow::claim_seeds(
            format!(
                "bucket-mean top-1 (%), {ns} seeds, mean (min-max): uniform width vs PSS-Net; paired difference {mdu:+.2} pp, \
                 sd {sdu:.2}, se {seu:.2}, t {tu:.2}, ahead on {} of {ns} seeds (every-seed rule: {})",
                du.iter().filter(|x| **x > 0.0).count(),
                Rule::AtLeast(0.0).describe_seeds(&uni, &pss)
            ),
            &uni,
            &pss,
            "PSS-Net >= uniform width beyond noise (paired t > 2)",
            Rule::AtLeast(0.0),
        )
        .with_verdict(paired_uni),
        ReportRow::claim(
            format!("bucket-mean top-1 (%): random-sampling baseline vs PSS-Net; paired difference {md:+.2} pp, sd {sd:.2}, se {se:.2}, t {t:.2}"),
            Some(mean(&base)),
            Some(mean(&pss)),
            "PSS-Net > baseline beyond noise (t > 2)",
            Rule::Above(0.0),
        )
        .with_verdict(paired_base),
        ReportRow::claim(
            "largest |deployed narrow network - supernet| logit difference (every bucket, every seed)",
            None,
            Some(f64::from(deploy_max)),
            "a deployed subnet computes the supernet's output at its config",
            Rule::Holds(deploy_max == 0.0),
        ),
        ReportRow::info(
            format!(
                "latency (us, batch 1, one thread, {} table entries): mean LUT prediction vs mean whole-subnet measurement over seed {}'s deployed subnets; largest relative gap {:.1} %",
                table.entries.len(),
                seeds[0].seed,
                100.0 * worst
            ),
            Some(mean(&latency.iter().map(|l| l.1).collect::<Vec<_>>())),
            Some(mean(&latency.iter().map(|l| l.2).collect::<Vec<_>>())),
            "the table's sum against the measured network (resize excluded)",
        ),
        ReportRow::info_seeds(
            "max net top-1 (%): baseline vs PSS-Net (recalibrated)",
            &seeds.iter().map(|o| o.extremes.1.0).collect::<Vec<_>>(),
            &seeds.iter().map(|o| o.extremes.0.0).collect::<Vec<_>>(),
            "-",
        ),
        ReportRow::info_seeds(
            "min net top-1 (%): baseline vs PSS-Net (recalibrated)",
            &seeds.iter().map(|o| o.extremes.1.1).collect::<Vec<_>>(),
            &seeds.iter().map(|o| o.extremes.0.1).collect::<Vec<_>>(),
            "-",
        ),
    ];
    // Per-bucket table and plot.
    let nb = common.len();
    let col = |b: f64, f: &dyn Fn(&BucketOutcome) -> f64| {
        mean(&seeds.iter().filter_map(|o| at(o, b)).map(|x| f(&x)).collect::<Vec<_>>())
    };
    let total = seeds.iter().map(|o| o.buckets.len()).max().unwrap_or(0);
    let mut notes = format!(
        "\nRates chosen on the last {} training digits (trained on the others, seed {}; bucket-mean top-1 %).\n\n{}\n\
         Chosen: PSS-Net {}, baseline {} (spec: {}); uniform width runs on the baseline's supernet.\n",
        s.validation,
        s.selection_seed,
        compress_train::choice::rate_table("lr", &["PSS-Net", "baseline"], &choice.table),
        choice.lrs.0,
        choice.lrs.1,
        s.lr
    );
    notes += &format!(
        "\n{nb} buckets with a pool entry on every seed ({total} on the fullest).\n\nPer bucket (kMACs), mean over {ns} seeds: deployed subnet's kMACs and test top-1 (%).\n\n\
         | bucket | PSS-Net kMACs | PSS-Net | baseline kMACs | baseline | uniform kMACs | uniform |\n| --- | --- | --- | --- | --- | --- | --- |\n"
    );
    let mut series: Vec<(&str, Vec<(f64, f64)>)> =
        vec![("PSS-Net", vec![]), ("random sampling", vec![]), ("uniform width", vec![])];
    for &b in &common {
        let row = [
            (col(b, &|x| x.pss.1), col(b, &|x| x.pss.2)),
            (col(b, &|x| x.baseline.1), col(b, &|x| x.baseline.2)),
            (col(b, &|x| x.uniform.1), col(b, &|x| x.uniform.2)),
        ];
        notes += &format!(
            "| {b} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} |\n",
            row[0].0, row[0].1, row[1].0, row[1].1, row[2].0, row[2].1
        );
        for (k, r) in row.iter().enumerate() {
            series[k].1.push(*r);
        }
    }
    let third = nb.div_ceil(3);
    let wins = |k: usize| (0..third).filter(|&i| series[0].1[i].1 > series[k].1[i].1).count();
    notes += &format!(
        "\nLowest third of the buckets ({third}): PSS-Net ahead of the baseline in {}, of uniform width in {} (reported, not gated).\n\
         PSS-Net's iterations drawing from a pool: {} per run on average. Paired PSS-Net - baseline per seed: {}.\n\
         \nLatency of seed {}'s deployed PSS-Net subnets (batch 1, microseconds): {}\n",
        wins(1),
        wins(2),
        seeds.iter().map(|o| o.pool_draws).sum::<usize>() / ns.max(1),
        d.iter().map(|x| format!("{x:+.2}")).collect::<Vec<_>>().join(" "),
        seeds[0].seed,
        latency
            .iter()
            .map(|(b, p, m)| format!("bucket {b}: LUT {p:.1} / measured {m:.1}"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    line_plot(
        &exp.dir().join("accuracy_vs_flops.svg"),
        "PSS-Net mini: test top-1 vs kMACs (mean over seeds)",
        "kMACs",
        &series,
    )?;
    let report = ctx
        .report(
            format!("PSS-Net {}: MBV1-tiny on mnist-5k, {} epochs, {nb} buckets, {ns} seeds", ctx.profile(), s.epochs),
            &s.seeds,
        )
        .rows(rows)
        .notes(notes);
    exp.write_json("seeds.json", &json!({"choice": choice, "seeds": seeds}))?;
    exp.write_report(&report)?;
    Ok(Outcome::new(exp.dir(), report, vec![]))
}

/// `cargo xtask reproduce pss-net`.
const INFO: Info = Info {
    name: "pss-net",
    about: "a slimmable supernet trained with prioritized subnet pools",
    profiles: &[
        ("smoke", "2 epochs on 1,280 / 200 digits, one seed (what tests run)"),
        (
            "mini",
            "section 9: MBV1-tiny on mnist-5k, PSS-Net vs random sampling vs uniform width per FLOPs bucket, seeds 0-9; \
             deployment and the latency table checked",
        ),
        ("paper", "the FLOPs scripts: extremes, bucket sets, README subnets; training needs ImageNet"),
    ],
};

/// `cargo xtask reproduce pss-net`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PssReproduction;

impl Reproduction for PssReproduction {
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
