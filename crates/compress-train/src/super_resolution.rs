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

/// Mean PSNR-Y and SSIM-Y over the pairs, with `shave = scale` border pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SrScore {
    /// Mean PSNR on Y (dB).
    pub psnr: f64,
    /// Mean SSIM on Y.
    pub ssim: f64,
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

/// The mean score of `upscale` (any SR function of a `[1, 3, h, w]` LR image) over the pairs,
/// outputs clamped to `[0, 1]`.
pub fn score(pairs: &SrPairs, device: &Device, mut upscale: impl FnMut(&Tensor) -> Result<Tensor>) -> Result<SrScore> {
    let (mut p, mut s) = (0.0, 0.0);
    for i in 0..pairs.pairs.len() {
        let (lr, hr) = pairs.full(i, device)?;
        let sr = upscale(&lr)?.clamp(0f32, 1f32)?;
        p += psnr_y(&sr, &hr, pairs.scale)?;
        s += ssim_y(&sr, &hr, pairs.scale)?;
    }
    let n = pairs.pairs.len().max(1) as f64;
    Ok(SrScore { psnr: p / n, ssim: s / n })
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
