//! BatchNorm recalibration (spec 2.7): the shared running statistics mean nothing for a given
//! subnet, so before every evaluation they are reset and re-estimated on `t = 0..8` training
//! batches with momentum `1 / (t + 1)` ([`cumulative`]), which is the exact average of the
//! batches' means and unbiased variances. Here the update runs on the probed batch statistics of
//! the subnet, and the result is written into the first `c` entries of each BatchNorm's running statistics (the rest of
//! the shared buffers untouched).

use crate::error::{Result, config_err};
use crate::space::SubnetConfig;
use crate::supernet::{SlimArch, Supernet};
use candle_core::{DType, Tensor};
use compress_data::batch::{Batcher, Dataset};
use compress_nn::probe::probe;

/// One update of a running statistic with momentum `1 / (t + 1)` (PyTorch's
/// `r <- (1 - mu) r + mu x`): after batches `0..=t` the running value is their exact average.
pub fn cumulative(running: &Tensor, x: &Tensor, t: usize) -> candle_core::Result<Tensor> {
    let mu = 1.0 / (t + 1) as f64;
    running.affine(1.0 - mu, 0.0)? + x.affine(mu, 0.0)?
}

/// Re-estimates the running statistics of `cfg` on the first `batches` batches of `data` (a
/// shuffled stream of `seed`) and writes them into the supernet. Returns the BatchNorms set.
pub fn recalibrate<A: SlimArch, D: Dataset>(
    sup: &Supernet<A>,
    cfg: &SubnetConfig,
    data: &D,
    batches: usize,
    batch_size: usize,
    seed: u64,
) -> Result<usize> {
    let b = Batcher::new(batch_size, true, seed, sup.device().clone())?.drop_last(true);
    // Per BatchNorm in forward order: the running mean and unbiased variance, its prefix.
    let mut sums: Vec<(Tensor, Tensor, String)> = Vec::new();
    let mut n = 0usize;
    for batch in b.epoch(data, 0, 0)?.take(batches) {
        let batch = batch?;
        let (out, p) = probe(|| sup.forward(&batch.images, cfg, true));
        out?;
        if n > 0 && p.bn.len() != sums.len() {
            return Err(config_err("the subnet's BatchNorms changed between batches"));
        }
        for (i, s) in p.bn.iter().enumerate() {
            let m = s.count as f64;
            let unbiased = (s.var.detach().to_dtype(DType::F64)? * (m / (m - 1.0).max(1.0)))?;
            let mean = s.mean.detach().to_dtype(DType::F64)?;
            if n == 0 {
                // Reset (mean 0, variance 1), then the first batch at momentum 1.
                let (m0, v0) = (mean.zeros_like()?, unbiased.ones_like()?);
                sums.push((cumulative(&m0, &mean, 0)?, cumulative(&v0, &unbiased, 0)?, s.prefix.clone()));
            } else {
                sums[i].0 = cumulative(&sums[i].0, &mean, n)?;
                sums[i].1 = cumulative(&sums[i].1, &unbiased, n)?;
            }
        }
        n += 1;
    }
    if n == 0 {
        return Err(config_err("no batch to recalibrate BatchNorm on"));
    }
    let data = sup.net.varmap.data().lock().map_err(|_| config_err("VarMap lock poisoned"))?;
    for (mean, var, prefix) in &sums {
        let c = mean.dim(0)?;
        for (name, value) in [(format!("{prefix}.running_mean"), mean), (format!("{prefix}.running_var"), var)] {
            let v = data.get(&name).ok_or_else(|| config_err(format!("no {name}")))?;
            let full = v.as_tensor();
            let head = value.to_dtype(full.dtype())?;
            let new =
                if c == full.dim(0)? { head } else { Tensor::cat(&[&head, &full.narrow(0, c, full.dim(0)? - c)?], 0)? };
            v.set(&new)?;
        }
    }
    Ok(sums.len())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;

    /// Section 8: momentum 1 / (t + 1) over batch means 1, 2, 6 gives a running mean of 3.
    #[test]
    fn momentum_one_over_t_plus_one_is_the_average() {
        let dev = Device::Cpu;
        let mut r = Tensor::new(&[0f64], &dev).unwrap();
        for (t, x) in [1.0, 2.0, 6.0].iter().enumerate() {
            r = cumulative(&r, &Tensor::new(&[*x], &dev).unwrap(), t).unwrap();
        }
        assert!((r.to_vec1::<f64>().unwrap()[0] - 3.0).abs() < 1e-12);
    }
}
