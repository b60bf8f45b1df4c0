//! Measured speed of early exit: images per second of CF-ViT's batched inference (images that
//! exit leave the batch; only the rest run the fine stage) against the fine-only baseline, on
//! the same preloaded images, same threads, medians of whole passes.

use crate::TokenBackbone;
use crate::error::Result;
use crate::model::CfVit;
use candle_core::{D, DType, Tensor};
use compress_data::batch::{Batcher, Dataset};
use serde::{Deserialize, Serialize};

/// One throughput comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Batch size.
    pub batch: usize,
    /// Exit threshold.
    pub eta: f64,
    /// CF-ViT images per second.
    pub cf_images_per_s: f64,
    /// Baseline images per second.
    pub baseline_images_per_s: f64,
    /// Fraction of images that exited at the coarse stage.
    pub exit_rate: f64,
    /// CF-ViT top-1 (%) of these passes.
    pub cf_top1: f64,
    /// Baseline top-1 (%).
    pub baseline_top1: f64,
}

impl Throughput {
    /// CF-ViT's speed-up over the baseline.
    pub fn speedup(&self) -> f64 {
        self.cf_images_per_s / self.baseline_images_per_s
    }
}

fn correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let p = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let l = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    Ok(p.iter().zip(&l).filter(|(a, b)| a == b).count())
}

/// Images/s of `cf.infer(., eta)` and of `baseline` over `data` in batches of `batch`, each the
/// median of whole passes over at least `seconds` (after one warm-up pass).
pub fn measure<B: TokenBackbone, Ds: Dataset>(
    cf: &CfVit<B>,
    baseline: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    data: &Ds,
    eta: f64,
    batch: usize,
    seconds: f64,
) -> Result<Throughput> {
    let batches: Vec<(Tensor, Tensor)> = Batcher::new(batch, false, 0, cf.device().clone())?
        .epoch(data, 0, 0)?
        .map(|b| b.map(|b| (b.images, b.labels)))
        .collect::<std::result::Result<_, _>>()?;
    let n = data.len() as f64;
    let (mut cf_ok, mut exits) = (0usize, 0usize);
    let t_cf = compress_core::timing::median_seconds(1, 3, seconds, || -> Result<()> {
        (cf_ok, exits) = (0, 0);
        for (x, y) in &batches {
            let r = cf.infer(x, eta)?;
            cf_ok += correct(&r.logits, y)?;
            exits += r.exited.iter().filter(|e| **e).count();
        }
        Ok(())
    })?;
    let mut base_ok = 0usize;
    let t_base = compress_core::timing::median_seconds(1, 3, seconds, || -> Result<()> {
        base_ok = 0;
        for (x, y) in &batches {
            base_ok += correct(&baseline(x)?, y)?;
        }
        Ok(())
    })?;
    Ok(Throughput {
        batch,
        eta,
        cf_images_per_s: n / t_cf,
        baseline_images_per_s: n / t_base,
        exit_rate: exits as f64 / n,
        cf_top1: 100.0 * cf_ok as f64 / n,
        baseline_top1: 100.0 * base_ok as f64 / n,
    })
}

/// The trained weights of the mini's run `<arm>-lr<lr>-seed0` under `runs`: the newest run
/// trained with the mini's configuration at one of its grid's rates (a smoke, selection or other
/// run is never taken).
fn mini_weights(runs: &std::path::Path, arm: crate::reproduce::Arm) -> Result<std::path::PathBuf> {
    let s = crate::reproduce::MiniSettings::mini();
    let (train, _) = crate::reproduce::digits(s.train_limit, s.test_limit)?;
    let steps = (train.len() / s.train.batch) as u64;
    let mut found = Vec::new();
    for &lr in &s.lr_grid {
        let cfg = crate::trainer::TrainSettings { lr, ..s.train.clone() }.engine_config(steps, 0);
        let name = format!("cf-vit/mini/{}-lr{lr}-seed0", arm.key());
        found.extend(compress_train::Run::cached(runs, &name, &cfg, "model.safetensors")?);
    }
    // Run folders are named by their start time, so the newest sorts last.
    let name = format!("cf-vit/mini/{}-lr*-seed0", arm.key());
    found.into_iter().max_by_key(|p| p.parent().and_then(|d| d.file_name()).map(|n| n.to_os_string())).ok_or_else(
        || {
            crate::CfVitError::Config(format!(
                "no finished run {name} of the mini's configuration under {}; run `cargo xtask reproduce cf-vit` first",
                runs.display()
            ))
        },
    )
}

/// `cargo xtask bench cf-vit`: wall-clock throughput of CF-ViT's early exit against the
/// fine-only ViT, both trained by the mini (seed 0, under `runs`), on the 1,000 test digits at
/// batch 64 and 1, at claim 2's operating point for this seed (the most accurate eta whose
/// expected MACs are at most half the baseline's). Returns the lines to print.
pub fn bench(runs: &std::path::Path, seconds: f64) -> Result<String> {
    use crate::reproduce::{baseline_macs, best_within, digits, mini_vit};
    let dev = candle_core::Device::Cpu;
    let vit = mini_vit()?;
    let cf_tensors = compress_nn::weights::read(&mini_weights(runs, crate::reproduce::Arm::CfVit)?, &dev)?;
    let cf = crate::build::deit(&vit, crate::CfVitConfig::mini(), &cf_tensors, 0, &dev)?;
    let base = compress_nn::Network::<compress_nn::zoo::Vit>::load(
        vit,
        &mini_weights(runs, crate::reproduce::Arm::Baseline)?,
        &dev,
    )?;
    let (_, test) = digits(None, None)?;
    let (base_top1, _) = compress_train::classify::evaluate(&base, &test, 250)?;
    let records = crate::trainer::stage_records(&cf, &test, 250, crate::Selection::Informative)?;
    let (mc, mf) = cf.stage_macs();
    let mb = baseline_macs(&cf);
    let curve = crate::budget::budget_curve(&records, mc as f64, mf as f64, &crate::budget::eta_grid());
    let op = best_within(&curve, 0.5 * mb)
        .ok_or_else(|| crate::CfVitError::Config("no threshold within half the baseline's MACs".into()))?;
    let mut out = format!(
        "CF-ViT (seed 0) at eta {:.2}: top-1 {:.1} % vs baseline {:.1} %, {:.0} % exit, MACs {:.2} M vs {:.2} M ({:.2}x fewer); {} candle thread(s)\n\
         | batch | CF-ViT (images/s) | baseline (images/s) | speed-up | MAC ratio | speed-up / MAC ratio | CF top-1 | exit % |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        op.eta,
        op.top1,
        base_top1,
        100.0 * op.exit_rate,
        op.macs / 1e6,
        mb / 1e6,
        mb / op.macs,
        candle_core::utils::get_num_threads()
    );
    let fwd = |x: &Tensor| base.forward_t(x, false).map_err(candle_core::Error::wrap);
    for batch in [64, 1] {
        let t = measure(&cf, &fwd, &test, op.eta, batch, seconds)?;
        let ratio = mb / op.macs;
        out += &format!(
            "| {batch} | {:.0} | {:.0} | {:.2}x | {ratio:.2}x | {:.0} % | {:.1} | {:.1} |\n",
            t.cf_images_per_s,
            t.baseline_images_per_s,
            t.speedup(),
            100.0 * t.speedup() / ratio,
            t.cf_top1,
            100.0 * t.exit_rate
        );
    }
    Ok(out)
}
