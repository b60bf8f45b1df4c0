//! One SGD update of a CPU parameter in a single pass (PyTorch's `torch.optim.SGD`):
//! `d = g + wd p`; `buf = momentum buf + (1 - dampening) d` (the first step: `buf = d`);
//! `d = d + momentum buf` (Nesterov) or `buf`; `p = p - lr d`.
//!
//! Composed from candle ops the update is six passes and six allocations per parameter, which in
//! a network of many small tensors (MobileNetV2: 158) costs more than the arithmetic.

use candle_core::{Result, Tensor};

/// The hyperparameters of one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    /// Learning rate.
    pub lr: f64,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
    /// Momentum (0: none, and no buffer).
    pub momentum: f64,
    /// Dampening of the gradient in the buffer.
    pub dampening: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

/// The updated parameter and momentum buffer (None without momentum) for parameter `p`,
/// gradient `g` and the previous buffer, or `None` when the operands are not f32 CPU tensors of
/// one shape (the caller composes the update from tensor ops then).
pub fn sgd_step(p: &Tensor, g: &Tensor, buf: Option<&Tensor>, h: SgdStep) -> Result<Option<(Tensor, Option<Tensor>)>> {
    let same = |t: &Tensor| t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.dims() == p.dims();
    if super::candle_only() || !same(p) || !same(g) || !buf.is_none_or(same) {
        return Ok(None);
    }
    let (new_p, new_b) = crate::cpu::with_f32(p, |pv| {
        crate::cpu::with_f32(g, |gv| match buf {
            Some(b) => crate::cpu::with_f32(b, |bv| update(pv, gv, Some(bv), h)),
            None => Ok(update(pv, gv, None, h)),
        })
    })???;
    let new_b = match new_b {
        Some(b) => Some(Tensor::from_vec(b, p.shape(), p.device())?),
        None => None,
    };
    Ok(Some((Tensor::from_vec(new_p, p.shape(), p.device())?, new_b)))
}

/// The update over slices in two parallel passes (the buffer, then the parameter from it).
fn update(p: &[f32], g: &[f32], buf: Option<&[f32]>, h: SgdStep) -> (Vec<f32>, Option<Vec<f32>>) {
    const CHUNK: usize = 1 << 14;
    let (lr, wd, m, damp) = (h.lr as f32, h.weight_decay as f32, h.momentum as f32, (1.0 - h.dampening) as f32);
    let d = |i: usize| g[i] + wd * p[i];
    if h.momentum == 0.0 {
        return (crate::cpu::par_from_fn(p.len(), CHUNK, |i| p[i] - lr * d(i)), None);
    }
    let nb = crate::cpu::par_from_fn(p.len(), CHUNK, |i| match buf {
        Some(b) => m * b[i] + damp * d(i),
        None => d(i),
    });
    let np = crate::cpu::par_from_fn(p.len(), CHUNK, |i| {
        let step = if h.nesterov { d(i) + m * nb[i] } else { nb[i] };
        p[i] - lr * step
    });
    (np, Some(nb))
}
