//! The probing forward pass: while a closure runs, BatchNorm layers report the batch statistics
//! of their inputs (differentiable) next to their running statistics, and linear layers their
//! inputs. Data-free methods (IntraQ, FDDA) match the former to the latter and read the
//! classifier's input (the penultimate features) from the last of the latter.

use candle_core::{Result, Tensor};
use std::cell::RefCell;

/// What one BatchNorm layer saw: the batch mean and biased variance of its input per channel
/// (gradients flow through them) and its running statistics (constants).
#[derive(Debug, Clone)]
pub struct BnInput {
    /// Batch mean `[C]` over `(N, H, W)`.
    pub mean: Tensor,
    /// Biased batch variance `[C]`.
    pub var: Tensor,
    /// Running mean `[C]`.
    pub running_mean: Tensor,
    /// Running variance `[C]`.
    pub running_var: Tensor,
    /// Values per channel `N H W` (the unbiased variance is `var count / (count - 1)`).
    pub count: usize,
    /// The layer's variable prefix (its running statistics are `<prefix>.running_mean` / `_var`).
    pub prefix: String,
}

/// Everything recorded during one probed forward, in forward order.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// Every BatchNorm layer's input statistics.
    pub bn: Vec<BnInput>,
    /// Every linear layer's input.
    pub linear_inputs: Vec<Tensor>,
}

thread_local! {
    static PROBE: RefCell<Option<Probe>> = const { RefCell::new(None) };
}

/// Whether a probe is recording on this thread.
pub(crate) fn active() -> bool {
    PROBE.with(|p| p.borrow().is_some())
}

/// `t` in f32 when it is half precision (statistics of half activations are computed and kept in
/// f32; f32 and f64 stay as they are).
fn widened(t: &Tensor) -> Result<Tensor> {
    match t.dtype() {
        candle_core::DType::F16 | candle_core::DType::BF16 => t.to_dtype(candle_core::DType::F32),
        _ => Ok(t.clone()),
    }
}

/// Records a BatchNorm input `[N, C, ...]` with the layer's running statistics.
pub(crate) fn record_bn(prefix: &str, x: &Tensor, running_mean: &Tensor, running_var: &Tensor) -> Result<()> {
    let (x, running_mean, running_var) = (&widened(x)?, &widened(running_mean)?, &widened(running_var)?);
    let c = x.dim(1)?;
    let flat = x.transpose(0, 1)?.contiguous()?.reshape((c, ()))?;
    let mean = flat.mean(1)?;
    let var = flat.broadcast_sub(&mean.unsqueeze(1)?)?.sqr()?.mean(1)?;
    let count = x.elem_count() / c.max(1);
    let rec = BnInput {
        mean,
        var,
        running_mean: running_mean.detach(),
        running_var: running_var.detach(),
        count,
        prefix: prefix.to_string(),
    };
    PROBE.with(|p| {
        if let Some(p) = p.borrow_mut().as_mut() {
            p.bn.push(rec);
        }
    });
    Ok(())
}

/// Records a linear layer's input (in f32 when it is half precision).
pub(crate) fn record_linear(x: &Tensor) -> Result<()> {
    if !active() {
        return Ok(());
    }
    let x = widened(x)?;
    PROBE.with(|p| {
        if let Some(p) = p.borrow_mut().as_mut() {
            p.linear_inputs.push(x);
        }
    });
    Ok(())
}

/// Runs `f` and returns its result with what its layers recorded. A nested probe records its
/// own layers (the outer one resumes after it); a panic in `f` leaves no probe recording.
pub fn probe<R>(f: impl FnOnce() -> R) -> (R, Probe) {
    let (r, rec) = crate::scope::scoped(&PROBE, Probe::default(), f);
    (r, rec.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{BatchNorm2d, Linear};
    use candle_core::{DType, Device, Module, ModuleT, Var};
    use candle_nn::{VarBuilder, VarMap};

    #[test]
    fn batchnorm_inputs_and_linear_inputs_are_recorded_with_gradients() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let bn = BatchNorm2d::new(2, vb.pp("bn")).unwrap();
        let fc = Linear::new(3, 2, true, vb.pp("fc")).unwrap();
        // Channel 0 holds 1, 2, 3, 4; channel 1 holds 0, 0, 0, 4 (over N = 2, H = 1, W = 2).
        let x = Var::new(&[[[[1f32, 2.0]], [[0.0, 0.0]]], [[[3.0, 4.0]], [[0.0, 4.0]]]], &dev).unwrap();
        let z = Tensor::ones((1, 3), DType::F32, &dev).unwrap();
        let (_, p) = probe(|| {
            bn.forward_t(x.as_tensor(), false).unwrap();
            fc.forward(&z).unwrap();
        });
        assert_eq!((p.bn.len(), p.linear_inputs.len()), (1, 1));
        assert_eq!(p.bn[0].mean.to_vec1::<f32>().unwrap(), vec![2.5, 1.0]);
        assert_eq!(p.bn[0].var.to_vec1::<f32>().unwrap(), vec![1.25, 3.0]);
        assert_eq!(p.bn[0].running_var.to_vec1::<f32>().unwrap(), vec![1.0, 1.0]);
        let g = p.bn[0].var.sum_all().unwrap().backward().unwrap();
        assert!(g.get(x.as_tensor()).is_some(), "the statistics are differentiable in the input");
        // Outside a probe nothing is kept.
        bn.forward_t(x.as_tensor(), false).unwrap();
        assert!(!active());
    }
}
