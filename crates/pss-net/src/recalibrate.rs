//! BatchNorm recalibration (spec 2.7): the shared running statistics mean nothing for a given
//! subnet, so before every evaluation they are reset and re-estimated on `t = 0..8` training
//! batches with momentum `1 / (t + 1)`, which is the exact average of the batches' means and
//! unbiased variances. Here the average is computed directly from the probed batch statistics
//! and written into the first `c` entries of each BatchNorm's running statistics (the rest of
//! the shared buffers untouched).

use crate::error::{Result, config_err};
use crate::space::SubnetConfig;
use crate::supernet::Supernet;
use candle_core::{DType, Tensor};
use compress_data::batch::{Batcher, Dataset};
use compress_nn::probe::probe;

/// Re-estimates the running statistics of `cfg` on the first `batches` batches of `data` (a
/// shuffled stream of `seed`) and writes them into the supernet. Returns the BatchNorms set.
pub fn recalibrate<D: Dataset>(
    sup: &Supernet,
    cfg: &SubnetConfig,
    data: &D,
    batches: usize,
    batch_size: usize,
    seed: u64,
) -> Result<usize> {
    let b = Batcher::new(batch_size, true, seed, sup.device().clone())?.drop_last(true);
    // Per BatchNorm in forward order: summed means, summed unbiased variances, its running mean.
    let mut sums: Vec<(Tensor, Tensor, Tensor)> = Vec::new();
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
                sums.push((mean, unbiased, s.running_mean.clone()));
            } else {
                sums[i].0 = (&sums[i].0 + mean)?;
                sums[i].1 = (&sums[i].1 + unbiased)?;
            }
        }
        n += 1;
    }
    if n == 0 {
        return Err(config_err("no batch to recalibrate BatchNorm on"));
    }
    let data = sup.net.varmap.data().lock().map_err(|_| config_err("VarMap lock poisoned"))?;
    for (mean, var, running_mean) in &sums {
        // The BatchNorm is found by its running mean's storage: the probe saw its (detached) view.
        let (rm_name, _) = data
            .iter()
            .find(|(k, v)| k.ends_with("running_mean") && same_storage(v.as_tensor(), running_mean))
            .ok_or_else(|| config_err("a probed BatchNorm is not in the supernet's variables"))?;
        let rv_name = rm_name.replace("running_mean", "running_var");
        let c = mean.dim(0)?;
        for (name, value) in [(rm_name.clone(), mean), (rv_name, var)] {
            let v = data.get(&name).ok_or_else(|| config_err(format!("no {name}")))?;
            let full = v.as_tensor();
            let head = (value / n as f64)?.to_dtype(full.dtype())?;
            let new =
                if c == full.dim(0)? { head } else { Tensor::cat(&[&head, &full.narrow(0, c, full.dim(0)? - c)?], 0)? };
            v.set(&new)?;
        }
    }
    Ok(sums.len())
}

/// Whether two tensors are views of one storage (a variable and a detached copy of it).
fn same_storage(a: &Tensor, b: &Tensor) -> bool {
    let (sa, _) = a.storage_and_layout();
    let (sb, _) = b.storage_and_layout();
    std::ptr::eq(&*sa as *const _, &*sb as *const _)
}
