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
