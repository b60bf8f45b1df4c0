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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{DType, Device, Var};
    use compress_nn::Network;
    use compress_nn::half::HalfModel;
    use compress_nn::zoo::{ResNetCifar, ResNetCifarConfig};

    /// A half-precision teacher ([`compress_nn::half::HalfModel`]): in f16 its probe agrees with
    /// the f32 teacher's to half precision, every output is f32, and a loss on the outputs sends
    /// a non-zero gradient to the f32 input.
    #[test]
    fn a_half_teacher_probes_like_the_f32_one_and_passes_gradients() {
        let dev = Device::Cpu;
        let net = Network::<ResNetCifar>::new(ResNetCifarConfig::new(8, 10).unwrap().input(3, 16), 0, &dev).unwrap();
        let half = HalfModel::new(&net, DType::F16).unwrap();
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 3, 16, 16), &dev).unwrap()).unwrap();
        let (a, b) = (net.forward_probe(&x).unwrap(), half.forward_probe(&x).unwrap());
        assert_eq!(a.bn.len(), b.bn.len());
        let rel = |p: &Tensor, q: &Tensor| {
            assert_eq!(q.dtype(), DType::F32);
            let d = (p - q).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            d / p.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-3)
        };
        assert!(rel(&a.logits, &b.logits) < 0.02, "logits {}", rel(&a.logits, &b.logits));
        assert!(rel(&a.features, &b.features) < 0.02);
        for (p, q) in a.bn.iter().zip(&b.bn) {
            assert!(rel(&p.mean, &q.mean) < 0.02 && rel(&p.var, &q.var) < 0.02, "{}", p.prefix);
            assert_eq!(q.running_var.dtype(), DType::F32);
            assert_eq!(p.prefix, q.prefix);
        }
        let loss = (b.logits.sqr().unwrap().mean_all().unwrap() + b.bn[0].var.mean_all().unwrap()).unwrap();
        let g = loss.backward().unwrap();
        let gx = g.get(x.as_tensor()).expect("a gradient reaches the input");
        assert_eq!(gx.dtype(), DType::F32);
        assert!(gx.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
    }
}
