//! The paper profile: every row of the paper's table, its compact model's size counted by our
//! cost code against the published one, and, where the dataset is in the cache, DCFF trained
//! with the official schedule (section 3) and its top-1 against the paper's.

use crate::error::Result;
use crate::presets::{PaperModel, PaperSetting, Schedule as PaperSchedule, paper_settings};
use crate::proxy::KlMode;
use crate::reproduce::train_dcff;
use compress_data::batch::{Augment, Dataset, PixelTransform};
use compress_data::cifar::{self, Variant};
use compress_data::image_folder::{FolderTransform, ImageFolder};
use compress_nn::Architecture;
use compress_nn::zoo::{ResNet, ResNetCifar, Vgg};
use compress_prune::{LayerwiseRates, Reduction, compact_config, measured_cost};
use compress_train::optim::OptimizerKind;
use compress_train::schedule::{Decay, Schedule};
use compress_train::{Outcome, ReportRow, Rule, RunContext, TrainConfig};
use std::path::PathBuf;

/// CIFAR-10 channel means and standard deviations of the official scripts.
const CIFAR_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
const CIFAR_STD: [f32; 3] = [0.2023, 0.1994, 0.2010];

/// The official optimisation of a row (section 3), with `iters` optimizer steps per epoch.
pub fn paper_train_config(s: &PaperSetting, iters: usize, seed: u64) -> TrainConfig {
    let it = iters as u64;
    let cifar = !matches!(s.model, PaperModel::ResNet(_));
    let (epochs, base_lr, momentum, wd, decay, warmup) = match (cifar, s.schedule) {
        (true, _) => (300, 0.1, 0.9, 5e-4, Decay::MultiStep { milestones: vec![150 * it, 225 * it], gamma: 0.1 }, 0),
        // lr_e = 0.1 * 0.1^(floor(e / 30) + [e >= 80]).
        (false, PaperSchedule::Step) => {
            (90, 0.1, 0.9, 1e-4, Decay::MultiStep { milestones: vec![30 * it, 60 * it, 80 * it], gamma: 0.1 }, 5 * it)
        }
        // lr_e = 0.5 lr (1 + cos(pi (e - 5) / (E - 5))) after 5 warm-up epochs (per step here).
        (false, PaperSchedule::Cos) => {
            (180, 0.01, 0.99, 1e-4, Decay::Cosine { total: 180 * it, min_lr: 0.0, start: 5 * it }, 5 * it)
        }
    };
    TrainConfig {
        epochs,
        batch_size: 256,
        accumulate: 1,
        optimizer: OptimizerKind::sgd(momentum, false),
        weight_decay: wd,
        no_decay_on_norm_and_bias: false,
        // Warm-up: lr (1 + k) / W at step k < W = 5 iters: linear from lr / W, reaching lr at W - 1.
        schedule: Schedule {
            base_lr,
            decay,
            warmup_steps: warmup.saturating_sub(1),
            warmup_start: if warmup > 0 { 1.0 / warmup as f64 } else { 1.0 },
        },
        label_smoothing: 0.0,
        seed,
        checkpoint_every: 500,
        log_every: 50,
        stop_after_steps: None,
    }
}

/// Where the full datasets live (`$COMPRESS_DATA`, else `~/.cache/compress-rs`).
fn data_dir(name: &str) -> PathBuf {
    compress_data::fetch::default_dataset_dir(name)
}

fn cifar10(train: bool) -> Result<Option<compress_data::ImageDataset>> {
    let dir = data_dir("cifar10").join("cifar-10-batches-bin");
    if !dir.is_dir() {
        return Ok(None);
    }
    let augment = if train { Augment::PadCropFlip { pad: 4 } } else { Augment::None };
    let t = PixelTransform { augment, mean: CIFAR_MEAN.to_vec(), std: CIFAR_STD.to_vec() };
    Ok(Some(cifar::load(&dir, Variant::Cifar10, train)?.with_transform(t)?))
}

fn imagenet() -> Result<Option<(ImageFolder, ImageFolder)>> {
    let dir = data_dir("imagenet");
    if !dir.join("train").is_dir() || !dir.join("val").is_dir() {
        return Ok(None);
    }
    Ok(Some((
        ImageFolder::open(&dir.join("train"), FolderTransform::IMAGENET_TRAIN)?,
        ImageFolder::open(&dir.join("val"), FolderTransform::IMAGENET_EVAL)?,
    )))
}

/// Where and how one row trains.
struct RowRun<'a> {
    s: &'a PaperSetting,
    ctx: &'a RunContext,
}

impl RowRun<'_> {
    /// DCFF on `train` with the row's official schedule; the final top-1 on `test`.
    fn fit<A: Architecture, Tr: Dataset, Te: Dataset>(&self, cfg: &A::Config, train: &Tr, test: &Te) -> Result<f64>
    where
        A::Config: LayerwiseRates,
    {
        let tc = paper_train_config(self.s, train.len() / 256, 0);
        let name = self.s.name.replace(' ', "-").to_lowercase();
        let (mut run, r) = self.ctx.arm(&name, &tc)?;
        let (rates, dev) = (&self.s.layer_rates, self.ctx.device());
        Ok(train_dcff::<A, _, _>(cfg, rates, KlMode::Official, &tc, train, test, &mut run, r, dev)?.0.top1)
    }
}

/// Trains row `s` and returns its final top-1, or `None` when its dataset is not in the cache.
fn train_row(s: &PaperSetting, ctx: &RunContext) -> Result<Option<f64>> {
    let row = RowRun { s, ctx };
    let cifar = || -> Result<_> { Ok(cifar10(true)?.zip(cifar10(false)?)) };
    Ok(match &s.model {
        PaperModel::Vgg(c) => cifar()?.map(|(tr, te)| row.fit::<Vgg, _, _>(c, &tr, &te)).transpose()?,
        PaperModel::ResNetCifar(c) => cifar()?.map(|(tr, te)| row.fit::<ResNetCifar, _, _>(c, &tr, &te)).transpose()?,
        PaperModel::ResNet(c) => imagenet()?.map(|(tr, va)| row.fit::<ResNet, _, _>(c, &tr, &va)).transpose()?,
    })
}

/// The size rows of every paper setting: FLOPs and params reductions against the paper's.
pub fn paper_sizes() -> Result<Vec<ReportRow>> {
    paper_settings()?.iter().map(size_rows).collect::<Result<Vec<_>>>().map(|v| v.concat())
}

fn size_rows(s: &PaperSetting) -> Result<Vec<ReportRow>> {
    let (base, compact) = match &s.model {
        PaperModel::Vgg(c) => (measured_cost::<Vgg>(c)?, measured_cost::<Vgg>(&compact_config(c, &s.layer_rates)?)?),
        PaperModel::ResNetCifar(c) => {
            (measured_cost::<ResNetCifar>(c)?, measured_cost::<ResNetCifar>(&compact_config(c, &s.layer_rates)?)?)
        }
        PaperModel::ResNet(c) => {
            (measured_cost::<ResNet>(c)?, measured_cost::<ResNet>(&compact_config(c, &s.layer_rates)?)?)
        }
    };
    let red = Reduction { base, pruned: compact };
    let m = |x: u64| x as f64 / 1e6;
    // The published reductions have two decimals: ours must round to them.
    let agrees = Rule::PaperWithin(0.005 + 1e-9);
    Ok(vec![
        ReportRow::claim(
            format!(
                "{}: FLOPs reduction (%), {:.2} M -> {:.2} M (paper {:.2} M)",
                s.name,
                m(base.pruning_flops()),
                m(compact.pruning_flops()),
                s.flops / 1e6
            ),
            None,
            Some(red.flops_percent()),
            "the compact model's FLOPs reduction equals the paper's",
            agrees,
        )
        .against_paper(Some(s.reductions.0), Some(agrees)),
        ReportRow::claim(
            format!(
                "{}: params reduction (%), {:.3} M -> {:.3} M (paper {:.2} M)",
                s.name,
                m(base.params),
                m(compact.params),
                s.params / 1e6
            ),
            None,
            Some(red.params_percent()),
            "the compact model's params reduction equals the paper's",
            agrees,
        )
        .against_paper(Some(s.reductions.1), Some(agrees)),
    ])
}

/// The whole paper profile: size rows for every setting, and a top-1 row per setting (trained
/// where its dataset is in the cache; otherwise the outcome names the dataset and how to get it).
pub fn paper(ctx: &RunContext) -> Result<Outcome> {
    let (mut rows, mut missing) = (Vec::new(), Vec::new());
    let settings = paper_settings()?;
    for s in &settings {
        rows.extend(size_rows(s)?);
        let top1 = train_row(s, ctx)?;
        let data = if matches!(s.model, PaperModel::ResNet(_)) {
            "ImageNet, placed by hand (`cargo xtask fetch imagenet` says how)"
        } else {
            "CIFAR-10 (`cargo xtask fetch cifar10`)"
        };
        if top1.is_none() && !missing.iter().any(|m: &String| m == data) {
            missing.push(data.to_string());
        }
        let claim = match top1 {
            Some(_) => "DCFF trained from scratch reaches the paper's top-1 within 0.5 pp".to_string(),
            None => format!("not trained: needs {data}"),
        };
        let rule = Rule::PaperAtLeast(-0.5);
        rows.push(
            ReportRow::claim(format!("{}: top-1 (%)", s.name), None, top1, claim, rule)
                .against_paper(Some(s.top1), Some(rule)),
        );
    }
    #[derive(serde::Serialize)]
    struct Settings<'a> {
        rows: &'a [PaperSetting],
    }
    let run = ctx.run("", &Settings { rows: &settings }, 0)?;
    let title = "DCFF paper profile: the paper's table, sizes counted by our cost code, top-1 where the data is cached";
    let report = ctx.report(title, &[0]).rows(rows);
    run.write_report(&report)?;
    Ok(Outcome::new(run.dir(), report, missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_schedules() {
        let rows = paper_settings().unwrap();
        let lr = |row: usize, step: u64| paper_train_config(&rows[row], 10, 0).schedule.lr(step);
        // CIFAR: 0.1, x0.1 at epochs 150 and 225, no warm-up.
        assert_eq!((lr(0, 0), lr(0, 1499)), (0.1, 0.1));
        assert!((lr(0, 1500) - 0.01).abs() < 1e-12 && (lr(0, 2250) - 0.001).abs() < 1e-12);
        // ImageNet step: warm-up lr (1 + it) / (5 iters), then 0.1 * 0.1^(floor(e/30) + [e >= 80]).
        for k in [0, 24, 49] {
            assert!((lr(3, k) - 0.1 * (1 + k) as f64 / 50.0).abs() < 1e-12, "step {k}: {}", lr(3, k));
        }
        assert!((lr(3, 300) - 0.01).abs() < 1e-12 && (lr(3, 799) - 0.001).abs() < 1e-12);
        assert!((lr(3, 800) - 0.0001).abs() < 1e-12);
        // ImageNet cos: 0.01 until the cosine starts at epoch 5, half of it at epoch 92.5, 0 at 180.
        assert!((lr(6, 50) - 0.01).abs() < 1e-12 && (lr(6, 925) - 0.005).abs() < 1e-12 && lr(6, 1800) < 1e-12);
        let cos = paper_train_config(&rows[6], 10, 0);
        assert_eq!(cos.optimizer, OptimizerKind::sgd(0.99, false));
    }
}
