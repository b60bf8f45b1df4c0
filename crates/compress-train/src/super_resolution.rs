//! Training and evaluating super-resolution networks on SR pairs: L1 loss on random aligned
//! patches (EDSR's recipe), PSNR-Y / SSIM-Y on whole images against the bicubic baseline.

use crate::engine::{Engine, Hooks, TrainConfig, progress};
use crate::error::{Result, TrainError};
use crate::loss::l1;
use crate::metrics::{psnr_y, ssim_y};
use crate::record::Run;
use candle_core::{Device, Tensor};
use compress_core::rng::SeededRng;
use compress_data::SrPairs;
use compress_data::bicubic::imresize_f64;
use compress_nn::{Architecture, Network};
use serde_json::json;

/// Mean PSNR-Y and SSIM-Y over the pairs, with `shave = scale` border pixels, and each image's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SrScore {
    /// Mean PSNR on Y (dB).
    pub psnr: f64,
    /// Mean SSIM on Y.
    pub ssim: f64,
    /// Every image's scores, in pair order.
    pub images: Vec<ImageScore>,
}

/// One image's PSNR-Y and SSIM-Y.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageScore {
    /// The image's name ([`compress_data::sr::SrPair::name`]).
    pub name: String,
    /// PSNR on Y (dB).
    pub psnr: f64,
    /// SSIM on Y.
    pub ssim: f64,
}

impl SrScore {
    /// The mean over `images` (a non-empty list): PSNR and SSIM averaged image by image.
    pub fn of(images: Vec<ImageScore>) -> Self {
        let n = images.len().max(1) as f64;
        let psnr = images.iter().map(|i| i.psnr).sum::<f64>() / n;
        let ssim = images.iter().map(|i| i.ssim).sum::<f64>() / n;
        Self { psnr, ssim, images }
    }

    /// The score of the `count` images from `first` on (a subset of the evaluation set).
    pub fn range(&self, first: usize, count: usize) -> Self {
        Self::of(self.images.iter().skip(first).take(count).cloned().collect())
    }

    /// The image-by-image mean of several runs' scores on the same images (e.g. a method's seeds);
    /// None without a run.
    pub fn mean_over(runs: &[&SrScore]) -> Option<Self> {
        let first = runs.first()?;
        let k = runs.len() as f64;
        Some(Self::of(
            (0..first.images.len())
                .map(|i| ImageScore {
                    name: first.images[i].name.clone(),
                    psnr: runs.iter().map(|r| r.images[i].psnr).sum::<f64>() / k,
                    ssim: runs.iter().map(|r| r.images[i].ssim).sum::<f64>() / k,
                })
                .collect(),
        ))
    }

    /// `self - other` image by image (PSNR in dB, SSIM), e.g. a network's gain over bicubic.
    pub fn minus(&self, other: &SrScore) -> Self {
        Self::of(
            self.images
                .iter()
                .zip(&other.images)
                .map(|(x, y)| ImageScore { name: x.name.clone(), psnr: x.psnr - y.psnr, ssim: x.ssim - y.ssim })
                .collect(),
        )
    }
}

/// The MATLAB-bicubic upscaling of every LR image, scored against its HR image.
pub fn bicubic_score(pairs: &SrPairs) -> Result<SrScore> {
    score(pairs, &Device::Cpu, |lr| {
        let (_, c, h, w) = lr.dims4()?;
        let s = pairs.scale;
        let v: Vec<f64> = lr.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1()?;
        let up = imresize_f64(&v, c, h, w, h * s, w * s)?;
        Ok(Tensor::from_vec(up, (1, c, h * s, w * s), &Device::Cpu)?.to_dtype(candle_core::DType::F32)?)
    })
}

/// `net`'s score on the pairs, image by image, in eval mode.
pub fn evaluate<A: Architecture>(net: &Network<A>, pairs: &SrPairs) -> Result<SrScore> {
    score(pairs, net.device(), |lr| Ok(net.forward_t(lr, false)?))
}

/// The score of `upscale` (any SR function of a `[1, 3, h, w]` LR image) on every pair and
/// their mean, outputs clamped to `[0, 1]`.
pub fn score(pairs: &SrPairs, device: &Device, mut upscale: impl FnMut(&Tensor) -> Result<Tensor>) -> Result<SrScore> {
    let mut images = Vec::with_capacity(pairs.pairs.len());
    for (i, pair) in pairs.pairs.iter().enumerate() {
        let (lr, hr) = pairs.full(i, device)?;
        let sr = upscale(&lr)?.clamp(0f32, 1f32)?;
        images.push(ImageScore {
            name: pair.name(),
            psnr: psnr_y(&sr, &hr, pairs.scale)?,
            ssim: ssim_y(&sr, &hr, pairs.scale)?,
        });
    }
    Ok(SrScore::of(images))
}

/// A markdown table of per-image PSNR-Y: one row per image, one column per scorer (`columns`
/// names them; every score lists the same images in the same order), then the mean row.
pub fn per_image_table(columns: &[&str], scores: &[&SrScore]) -> String {
    let mut t = format!("| image | {} |\n| --- |{}\n", columns.join(" | "), " --- |".repeat(columns.len()));
    let n = scores.first().map_or(0, |s| s.images.len());
    for i in 0..n {
        let name = scores.first().map_or("", |s| s.images[i].name.as_str());
        let cells: Vec<String> =
            scores.iter().map(|s| s.images.get(i).map_or("-".into(), |x| format!("{:.3}", x.psnr))).collect();
        t += &format!("| {name} | {} |\n", cells.join(" | "));
    }
    let means: Vec<String> = scores.iter().map(|s| format!("{:.3}", s.psnr)).collect();
    t += &format!("| mean | {} |\n", means.join(" | "));
    t
}

/// On how many images `a` scores a higher PSNR-Y than `b` by more than `margin` dB (the same
/// images in the same order).
pub fn wins(a: &SrScore, b: &SrScore, margin: f64) -> usize {
    a.images.iter().zip(&b.images).filter(|(x, y)| x.psnr > y.psnr + margin).count()
}

/// Trains `net` for `cfg.epochs` rounds of `steps_per_epoch` optimizer steps on random
/// `lr_patch` patches of `train` (L1 loss), scoring `test` after each round. Patches of step `t`
/// come from the stream `(seed, "patches", t)`, so a resumed run repeats an uninterrupted one.
#[allow(clippy::too_many_arguments)]
pub fn fit<A: Architecture>(
    net: &Network<A>,
    train: &SrPairs,
    test: &SrPairs,
    lr_patch: usize,
    steps_per_epoch: usize,
    cfg: &TrainConfig,
    run: &mut Run,
    resume: bool,
    hooks: &mut dyn Hooks,
) -> Result<Vec<serde_json::Value>> {
    if train.scale != test.scale {
        return Err(TrainError::Config("train and test pairs have different scales".into()));
    }
    train.check_patch(lr_patch)?;
    let mut e = Engine::new(&net.varmap, cfg, run, resume, net.device())?;
    let rng = SeededRng::new(cfg.seed);
    while e.state.epoch < cfg.epochs {
        let epoch = e.state.epoch;
        hooks.on_epoch_start(epoch, &net.varmap)?;
        let start = std::time::Instant::now();
        let pb = progress(run.quiet, steps_per_epoch as u64, &format!("round {}/{}", epoch + 1, cfg.epochs));
        pb.set_position(e.state.next_batch as u64);
        let micro_per_round = steps_per_epoch * cfg.accumulate;
        while e.state.next_batch < steps_per_epoch {
            for m in 0..cfg.accumulate {
                // The global micro-batch index names the patches, whatever the resumption point.
                let mut r = rng.stream("patches", e.state.step * cfg.accumulate as u64 + m as u64);
                let b = train.patch_batch(&mut r, cfg.batch_size, lr_patch, net.device())?;
                let loss = l1(&net.forward_t(&b.lr, true)?, &b.hr)?;
                e.state.loss_sum += f64::from(loss.to_scalar::<f32>()?);
                e.state.loss_count += 1;
                e.micro_batch(&loss, run)?;
            }
            e.state.next_batch += 1;
            pb.inc(1);
            hooks.after_step(e.state.step, &net.varmap)?;
            if cfg.log_every > 0 && e.state.step.is_multiple_of(cfg.log_every) {
                run.log(&json!({"epoch": epoch, "step": e.state.step, "l1": e.epoch_loss(), "lr": e.lr()}))?;
            }
            e.after_step(run)?;
        }
        pb.finish_and_clear();
        let sc = evaluate(net, test)?;
        let rec = json!({
            "epoch": epoch, "step": e.state.step, "l1": e.epoch_loss(),
            "psnr_y": sc.psnr, "ssim_y": sc.ssim, "lr": e.lr(), "seconds": start.elapsed().as_secs_f64(),
            "micro_batches": micro_per_round,
        });
        e.end_epoch(rec, run)?;
    }
    Ok(e.state.history)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(name: &str, psnr: f64) -> ImageScore {
        ImageScore { name: name.into(), psnr, ssim: psnr / 100.0 }
    }

    #[test]
    fn the_mean_over_runs_is_taken_image_by_image() {
        let a = SrScore::of(vec![img("x", 30.0), img("y", 40.0)]);
        let b = SrScore::of(vec![img("x", 32.0), img("y", 36.0)]);
        let m = SrScore::mean_over(&[&a, &b]).expect("two runs");
        assert_eq!((m.images[0].psnr, m.images[1].psnr, m.psnr), (31.0, 38.0, 34.5));
        assert!((m.images[1].ssim - 0.38).abs() < 1e-12 && m.images[1].name == "y");
        assert!(SrScore::mean_over(&[]).is_none());
    }

    #[test]
    fn per_image_scores_average_to_the_mean_and_subsets_and_wins_count_images() {
        let a = SrScore::of(vec![img("x", 30.0), img("y", 20.0), img("z", 40.0)]);
        assert_eq!((a.psnr, a.ssim), (30.0, 0.3));
        let tail = a.range(1, 2);
        assert_eq!((tail.psnr, tail.images.len(), tail.images[0].name.as_str()), (30.0, 2, "y"));
        let b = SrScore::of(vec![img("x", 29.0), img("y", 21.0), img("z", 39.95)]);
        assert_eq!(wins(&a, &b, 0.0), 2);
        assert_eq!(wins(&a, &b, 0.1), 1);
        assert_eq!(wins(&b, &a, 0.0), 1);
        let d = a.minus(&b);
        assert_eq!(d.images.iter().map(|i| i.psnr).collect::<Vec<_>>(), [1.0, -1.0, 40.0 - 39.95]);
        assert!((d.psnr - (a.psnr - b.psnr)).abs() < 1e-12);
        let t = per_image_table(&["a", "b"], &[&a, &b]);
        assert_eq!(
            t,
            "| image | a | b |\n| --- | --- | --- |\n| x | 30.000 | 29.000 |\n| y | 20.000 | 21.000 |\n\
             | z | 40.000 | 39.950 |\n| mean | 30.000 | 29.983 |\n"
        );
    }
}
