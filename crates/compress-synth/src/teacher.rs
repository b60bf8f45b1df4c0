//! The frozen full-precision network synthesis optimises against: its logits, penultimate
//! features and the BatchNorm statistics of every BN layer's input.

use crate::error::{Result, SynthError};
use candle_core::Tensor;
use compress_nn::probe::{BnInput, probe};

/// One probed forward pass (eval mode).
#[derive(Debug, Clone)]
pub struct TeacherOut {
    /// Logits `[B, K]`.
    pub logits: Tensor,
    /// Penultimate features `[B, D]` (the classifier's input).
    pub features: Tensor,
    /// Every BN layer's input statistics, in forward order.
    pub bn: Vec<BnInput>,
}

/// A network synthesis can probe.
pub trait Teacher {
    /// Eval-mode forward of `x` with its probe; gradients flow to `x`.
    fn forward_probe(&self, x: &Tensor) -> Result<TeacherOut>;
}

impl<M: compress_nn::Model + ?Sized> Teacher for M {
    fn forward_probe(&self, x: &Tensor) -> Result<TeacherOut> {
        let (logits, p) = probe(|| self.forward_t(x, false));
        let logits = logits?;
        let features =
            p.linear_inputs.last().cloned().ok_or_else(|| {
                SynthError::Teacher("no linear classifier was called: no penultimate features".into())
            })?;
        if p.bn.is_empty() {
            return Err(SynthError::Teacher("the network has no BatchNorm layer to match".into()));
        }
        let features = features.flatten_from(1)?;
        Ok(TeacherOut { logits, features, bn: p.bn })
    }
}
