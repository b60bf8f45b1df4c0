//! The dense baselines every method compresses, trained on the embedded datasets and cached
//! under `runs/train/<name>/`:
//! - `resnet20-mnist`: CIFAR-style ResNet-20 (option A) on mnist-5k, target >= 98 % top-1;
//! - `mobilenetv2-mnist`: MobileNetV2 (width 0.5, stride-1 stem) on mnist-5k, target >= 98 % top-1;
//! - `edsr-mini-photos`: EDSR with 4 blocks x 32 channels, x2, on photos-12, target: beat
//!   bicubic upscaling by >= 1.0 dB PSNR-Y on the test images.

use crate::engine::{NoHooks, TrainConfig};
use crate::error::{Result, TrainError};
use crate::optim::OptimizerKind;
use crate::record::Run;
use crate::report::{Report, ReportRow, Rule};
use crate::schedule::Schedule;
use crate::{classify, super_resolution};
use candle_core::Device;
use compress_data::batch::{Augment, ImageDataset};
use compress_data::{embedded, mnist};
use compress_nn::zoo::{EdsrConfig, MobileNetV2Config, ResNetCifarConfig};
use compress_nn::{Architecture, Network};
use std::path::{Path, PathBuf};

/// The baselines, by name.
pub const BASELINES: [(&str, &str); 3] = [
    ("resnet20-mnist", "ResNet-20 on mnist-5k (>= 98 % top-1)"),
    ("mobilenetv2-mnist", "MobileNetV2 0.5 on mnist-5k (>= 98 % top-1)"),
    ("edsr-mini-photos", "EDSR 4x32 x2 on photos-12 (>= bicubic + 1.0 dB PSNR-Y)"),
];

/// How long to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Seconds, on a subset: what tests run.
    Smoke,
    /// The full recipe (at most 5 minutes on 2 cores).
    Full,
}

impl Profile {
    /// `smoke` or `full`, as reports name it.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Smoke => "smoke",
            Profile::Full => "full",
        }
    }
}

/// What a baseline run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The run folder.
    pub dir: PathBuf,
    /// The trained weights (`model.safetensors` in the run folder).
    pub weights: PathBuf,
    /// The report.
    pub report: Report,
}

/// The resolved configuration a run writes to `config.toml`.
#[derive(serde::Serialize)]
struct Resolved<'a, C> {
    train: &'a TrainConfig,
    model: &'a C,
}

/// MNIST normalisation (mean, std of the full training set).
fn mnist(profile: Profile, train: bool) -> Result<ImageDataset> {
    let split = if train { mnist::Split::Train } else { mnist::Split::Test };
    let limit = (profile == Profile::Smoke).then_some(if train { 256 } else { 128 });
    let augment = if train { Augment::PadCrop { pad: 2 } } else { Augment::None };
    Ok(embedded::mnist_5k_normalised(split, augment, limit)?)
}

/// Learning rate, weight decay and epochs of a classifier recipe.
#[derive(Debug, Clone, Copy)]
struct Recipe {
    optimizer: OptimizerKind,
    batch: usize,
    lr: f64,
    weight_decay: f64,
    epochs: usize,
}

fn classifier_config(profile: Profile, epochs: Option<usize>, train_len: usize, r: Recipe) -> TrainConfig {
    let epochs = epochs.unwrap_or(if profile == Profile::Smoke { 1 } else { r.epochs });
    let batch = if profile == Profile::Smoke { 32 } else { r.batch };
    let total = (epochs * (train_len / batch)) as u64;
    TrainConfig {
        epochs,
        batch_size: batch,
        accumulate: 1,
        optimizer: r.optimizer,
        weight_decay: r.weight_decay,
        no_decay_on_norm_and_bias: true,
        schedule: Schedule::cosine(r.lr, total, 0.0).with_warmup(total / 20, 0.1),
        label_smoothing: 0.0,
        seed: 0,
        checkpoint_every: 0,
        log_every: 10,
        stop_after_steps: None,
    }
}

/// The training configuration of classifier baseline `recipe` at `profile`, at its own length
/// (what a cache lookup needs).
fn classify_config(profile: Profile, recipe: Recipe) -> Result<TrainConfig> {
    let train = mnist(profile, true)?;
    Ok(classifier_config(profile, None, compress_data::batch::Dataset::len(&train), recipe))
}

#[allow(clippy::too_many_arguments)]
fn classify_run<A: Architecture>(
    name: &str,
    config: A::Config,
    recipe: Recipe,
    profile: Profile,
    epochs: Option<usize>,
    runs: &Path,
    resume: bool,
    quiet: bool,
) -> Result<Outcome>
where
    A::Config: serde::Serialize,
{
    let (train, test) = (mnist(profile, true)?, mnist(profile, false)?);
    let cfg = classifier_config(profile, epochs, compress_data::batch::Dataset::len(&train), recipe);
    cfg.validate()?;
    let device = Device::Cpu;
    let run_name = format!("train/{name}");
    let resolved = Resolved { train: &cfg, model: &config };
    let (mut run, _) = Run::resume_or_create(runs, &run_name, &resolved, cfg.seed, "cpu", resume)?;
    run.quiet = quiet;
    let net = Network::<A>::new(config, cfg.seed, &device)?;
    let history = classify::fit(&net, &train, &test, &cfg, &mut run, resume, &mut NoHooks)?;
    let last = history.last().ok_or_else(|| TrainError::Config("no epoch ran".into()))?;
    let top1 = last["top1"].as_f64().unwrap_or(0.0);
    let weights = run.dir().join("model.safetensors");
    net.save(&weights)?;
    let series = |key: &str| {
        history
            .iter()
            .map(|h| (h["epoch"].as_f64().unwrap_or(0.0) + 1.0, h[key].as_f64().unwrap_or(f64::NAN)))
            .collect()
    };
    run.plot("loss.svg", &format!("{name}: training loss"), "epoch", &[("train loss", series("loss"))])?;
    run.plot("accuracy.svg", &format!("{name}: test top-1 (%)"), "epoch", &[("top-1", series("top1"))])?;
    let cost = net.counted_cost()?;
    let title = format!("{name}: dense baseline ({} MACs, {} params)", cost.macs, cost.params);
    let command = format!("cargo xtask train {}", name.split('-').next().unwrap_or(name));
    let report = Report::new(title, command, profile.name(), &[cfg.seed]).rows(vec![
        ReportRow::claim(
            "test top-1 (%)",
            None,
            Some(top1),
            "a dense baseline reaches >= 98 % top-1",
            Rule::Holds(top1 >= 98.0),
        ),
        ReportRow::info("test top-5 (%)", None, last["top5"].as_f64(), "-"),
    ]);
    run.write_report(&report)?;
    Ok(Outcome { dir: run.dir().to_path_buf(), weights, report })
}

/// EDSR-mini's model and training configuration at `profile`, and its steps per round.
fn edsr_config(profile: Profile, epochs: Option<usize>) -> Result<(EdsrConfig, TrainConfig, usize)> {
    let smoke = profile == Profile::Smoke;
    // 4,200 steps of batch 8 on 24 px LR patches: more, cheaper steps beat fewer large ones here
    // (16 x 32 px for 800 steps gave +0.91 dB in the time of 2,400 of these), and DDTB's
    // validated mini settings start from at least 4,000 full-precision iterations.
    let rounds = epochs.unwrap_or(if smoke { 1 } else { 14 });
    let steps = if smoke { 4 } else { 300 };
    let total = (rounds * steps) as u64;
    let cfg = TrainConfig {
        epochs: rounds,
        batch_size: if smoke { 4 } else { 8 },
        accumulate: 1,
        optimizer: OptimizerKind::adam(),
        weight_decay: 0.0,
        no_decay_on_norm_and_bias: false,
        schedule: Schedule::cosine(1e-3, total, 1e-5),
        label_smoothing: 0.0,
        seed: 0,
        checkpoint_every: 0,
        log_every: 10,
        stop_after_steps: None,
    };
    Ok((EdsrConfig::new(2, 4, 32, 1.0)?, cfg, steps))
}

fn edsr_run(profile: Profile, epochs: Option<usize>, runs: &Path, resume: bool, quiet: bool) -> Result<Outcome> {
    let name = "edsr-mini-photos";
    let (train, test) = (embedded::photos_12("train", 2)?, embedded::photos_12("test", 2)?);
    let smoke = profile == Profile::Smoke;
    let test = if smoke { compress_data::SrPairs { pairs: test.pairs[..1].to_vec(), scale: 2 } } else { test };
    let (config, cfg, steps) = edsr_config(profile, epochs)?;
    cfg.validate()?;
    let run_name = format!("train/{name}");
    let resolved = Resolved { train: &cfg, model: &config };
    let (mut run, _) = Run::resume_or_create(runs, &run_name, &resolved, cfg.seed, "cpu", resume)?;
    run.quiet = quiet;
    let net = Network::<compress_nn::zoo::Edsr>::new(config, cfg.seed, &Device::Cpu)?;
    let patch = if smoke { 16 } else { 24 };
    let history = super_resolution::fit(&net, &train, &test, patch, steps, &cfg, &mut run, resume, &mut NoHooks)?;
    let bicubic = super_resolution::bicubic_score(&test)?;
    // The final network on the whole SR evaluation set (photos-12 test + sr-heldout), image by image.
    let eval = embedded::SrEval::load(2, smoke.then_some(1))?;
    let (ours, cubic) = (super_resolution::evaluate(&net, &eval.pairs)?, super_resolution::bicubic_score(&eval.pairs)?);
    run.write_json("per_image.json", &serde_json::json!({"edsr_mini": ours, "bicubic": cubic}))?;
    let weights = run.dir().join("model.safetensors");
    net.save(&weights)?;
    let series = |key: &str| {
        history.iter().map(|h| (h["step"].as_f64().unwrap_or(0.0), h[key].as_f64().unwrap_or(f64::NAN))).collect()
    };
    run.plot(
        "psnr.svg",
        "EDSR-mini x2 on photos-12 test: PSNR-Y (dB)",
        "step",
        &[
            ("EDSR-mini", series("psnr_y")),
            ("bicubic", history.iter().map(|h| (h["step"].as_f64().unwrap_or(0.0), bicubic.psnr)).collect()),
        ],
    )?;
    run.plot("loss.svg", "EDSR-mini: training L1", "step", &[("L1", series("l1"))])?;
    let report = Report::new(
        "edsr-mini-photos: dense SR baseline (EDSR 4x32, x2)",
        "cargo xtask train edsr-mini",
        profile.name(),
        &[cfg.seed],
    )
    .rows(
        eval.subsets()
            .into_iter()
            .flat_map(|(name, first, count)| {
                let (b, o) = (cubic.range(first, count), ours.range(first, count));
                let won = super_resolution::wins(&o, &b, 0.0);
                [
                    ReportRow::claim(
                        format!("PSNR-Y x2 (dB), {name} ({count} images)"),
                        Some(b.psnr),
                        Some(o.psnr),
                        format!("EDSR-mini beats bicubic by >= 1.0 dB (ahead on {won} of {count} images)"),
                        Rule::AtLeast(1.0),
                    ),
                    ReportRow::info(format!("SSIM-Y x2, {name}"), Some(b.ssim), Some(o.ssim), "-"),
                ]
            })
            .collect(),
    )
    .notes(format!(
        "\nPer image (PSNR-Y x2, dB; the first {} are photos-12's test images):\n\n{}",
        eval.photos_12_test,
        super_resolution::per_image_table(&["bicubic", "EDSR-mini", "gain"], &[&cubic, &ours, &ours.minus(&cubic)])
    ));
    run.write_report(&report)?;
    Ok(Outcome { dir: run.dir().to_path_buf(), weights, report })
}

/// The `edsr-mini-photos` recipe on other training pairs (`data` names them; the DDTB diagnosis's
/// varied images): the weights of the newest finished run `train/<name>` so configured under
/// `runs`, else trained now (scored on photos-12 test, as the baseline).
pub fn edsr_mini_on(
    name: &str,
    train: &compress_data::SrPairs,
    profile: Profile,
    runs: &Path,
    quiet: bool,
) -> Result<PathBuf> {
    #[derive(serde::Serialize)]
    struct Keyed<'a> {
        train: &'a TrainConfig,
        model: &'a EdsrConfig,
        images: Vec<String>,
    }
    let (config, cfg, steps) = edsr_config(profile, None)?;
    let images = train.pairs.iter().map(|p| p.name()).collect();
    let key = Keyed { train: &cfg, model: &config, images };
    let run_name = format!("train/{name}");
    if let Some(report) = Run::cached(runs, &run_name, &key, "report.json")?
        && let Some(weights) = report.parent().map(|d| d.join("model.safetensors")).filter(|p| p.is_file())
    {
        return Ok(weights);
    }
    let smoke = profile == Profile::Smoke;
    let test = embedded::photos_12("test", 2)?;
    let test = if smoke { compress_data::SrPairs { pairs: test.pairs[..1].to_vec(), scale: 2 } } else { test };
    let (mut run, _) = Run::resume_or_create(runs, &run_name, &key, cfg.seed, "cpu", false)?;
    run.quiet = quiet;
    let net = Network::<compress_nn::zoo::Edsr>::new(config, cfg.seed, &Device::Cpu)?;
    let patch = if smoke { 16 } else { 24 };
    super_resolution::fit(&net, train, &test, patch, steps, &cfg, &mut run, false, &mut NoHooks)?;
    let weights = run.dir().join("model.safetensors");
    net.save(&weights)?;
    let (ours, cubic) = (super_resolution::evaluate(&net, &test)?, super_resolution::bicubic_score(&test)?);
    let title = format!("{name}: the edsr-mini-photos recipe on {} training images", train.pairs.len());
    let report =
        Report::new(title, "cargo xtask reproduce ddtb --profile diagnose", profile.name(), &[cfg.seed]).rows(vec![
            ReportRow::info(
                "PSNR-Y x2 (dB), photos-12 test: bicubic vs EDSR-mini",
                Some(cubic.psnr),
                Some(ours.psnr),
                "-",
            ),
        ]);
    run.write_report(&report)?;
    Ok(weights)
}

const RESNET20: Recipe = Recipe {
    optimizer: OptimizerKind::Sgd { momentum: 0.9, dampening: 0.0, nesterov: true },
    batch: 64,
    lr: 0.1,
    weight_decay: 5e-4,
    epochs: 10,
};
const MOBILENETV2: Recipe = Recipe {
    optimizer: OptimizerKind::Sgd { momentum: 0.9, dampening: 0.0, nesterov: true },
    batch: 32,
    lr: 0.05,
    weight_decay: 4e-5,
    epochs: 8,
};

fn resnet20() -> Result<ResNetCifarConfig> {
    Ok(ResNetCifarConfig::new(20, 10)?.input(1, 28))
}

fn mobilenetv2() -> Result<MobileNetV2Config> {
    Ok(MobileNetV2Config::new(0.5, 10)?.input(1, 28).small_input())
}

fn unknown(name: &str) -> TrainError {
    TrainError::Config(format!(
        "unknown baseline {name:?}; known: {}",
        BASELINES.iter().map(|b| b.0).collect::<Vec<_>>().join(", ")
    ))
}

/// Trains baseline `name` (see [`BASELINES`]) under `runs`; `epochs` overrides the recipe's
/// length. With `resume`, continues the newest run if it was configured the same way.
pub fn train(
    name: &str,
    profile: Profile,
    epochs: Option<usize>,
    runs: &Path,
    resume: bool,
    quiet: bool,
) -> Result<Outcome> {
    match name {
        "resnet20-mnist" => classify_run::<compress_nn::zoo::ResNetCifar>(
            name,
            resnet20()?,
            RESNET20,
            profile,
            epochs,
            runs,
            resume,
            quiet,
        ),
        "mobilenetv2-mnist" => classify_run::<compress_nn::zoo::MobileNetV2>(
            name,
            mobilenetv2()?,
            MOBILENETV2,
            profile,
            epochs,
            runs,
            resume,
            quiet,
        ),
        "edsr-mini-photos" => edsr_run(profile, epochs, runs, resume, quiet),
        _ => Err(unknown(name)),
    }
}

/// The weights of the newest finished run of baseline `name` under `runs` that was trained
/// exactly as `profile`'s recipe says (its `config.toml` has the same key), if any: a smoke run
/// or a run of another length is never taken for it.
pub fn cached(name: &str, profile: Profile, runs: &Path) -> Result<Option<PathBuf>> {
    let run_name = format!("train/{name}");
    match name {
        "resnet20-mnist" => {
            let cfg = classify_config(profile, RESNET20)?;
            finished(runs, &run_name, &Resolved { train: &cfg, model: &resnet20()? })
        }
        "mobilenetv2-mnist" => {
            let cfg = classify_config(profile, MOBILENETV2)?;
            finished(runs, &run_name, &Resolved { train: &cfg, model: &mobilenetv2()? })
        }
        "edsr-mini-photos" => {
            let (config, cfg, _) = edsr_config(profile, None)?;
            finished(runs, &run_name, &Resolved { train: &cfg, model: &config })
        }
        _ => Err(unknown(name)),
    }
}

/// The weights of the newest run of `run_name` configured as `resolved` that finished (wrote
/// its report, which comes after its weights).
fn finished<C: serde::Serialize>(runs: &Path, run_name: &str, resolved: &Resolved<C>) -> Result<Option<PathBuf>> {
    let report = Run::cached(runs, run_name, resolved, "report.json")?;
    Ok(report.and_then(|r| r.parent().map(|d| d.join("model.safetensors"))).filter(|p| p.is_file()))
}
