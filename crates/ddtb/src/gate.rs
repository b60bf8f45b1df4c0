//! The dynamic gate (spec 2.2): `g = avgpool(stopgrad(x))`, then
//! `A2 -> W1 (1x1, C -> 32, ternary) -> BN(32) -> ReLU -> A2 -> W2 (1x1, 32 -> 2, ternary)` gives
//! per-sample logits `(z_u, z_l)` and factors `f = 2 sigmoid(z)` in `(0, 2)` that rescale the
//! bounds. `A2` is the 2-bit affine quantizer on the per-tensor min/max of its detached input;
//! in the official code its output carries no gradient, so only `W2` trains (`W1` and the BN
//! affine stay at their initialisation; BN statistics still update). `train_first_layer` lets
//! gradients pass `A2` straight through instead.

use crate::error::Result;
use candle_core::{D, ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_core::quant::{WeightQuantizer, affine_fake_quant};
use compress_nn::layers::BatchNorm2d;

/// The gate of one dynamic quantizer.
#[derive(Debug, Clone)]
pub struct DynamicGate {
    w1: Tensor,
    bn: BatchNorm2d,
    w2: Tensor,
    train_first_layer: bool,
}

/// `A2`: 2-bit affine quantization on the detached input's min/max. The official code divides
/// by zero on a constant input (one sample of one channel, or a hidden layer ReLU left
/// constant); a span below `1e-6 max(|min|, 1)` is widened to that, which `min + span` still
/// resolves in f32 (a fixed 1e-8 vanishes next to a minimum of 0.5).
fn a2(x: &Tensor, straight_through: bool) -> Result<Tensor> {
    let d = x.detach();
    let lo = d.min_all()?;
    let floor = (lo.abs()?.maximum(1.0)? * 1e-6)?;
    let span = (d.max_all()? - &lo)?.maximum(&floor)?;
    let q = affine_fake_quant(&d, &lo, &(&lo + span)?, 2)?;
    Ok(if straight_through { (x + (q - x)?.detach())? } else { q.detach() })
}

impl DynamicGate {
    /// A gate over `channels` inputs with `hidden` (official: 32) units; weights `U(+-1/sqrt(fan_in))`.
    pub fn new(channels: usize, hidden: usize, train_first_layer: bool, vb: VarBuilder) -> Result<Self> {
        let u = |fan_in: usize| {
            let b = 1.0 / (fan_in as f64).sqrt();
            candle_nn::Init::Uniform { lo: -b, up: b }
        };
        let w1 = vb.get_with_hints((hidden, channels), "w1", u(channels))?;
        let bn = BatchNorm2d::new(hidden, vb.pp("bn"))?;
        let w2 = vb.get_with_hints((2, hidden), "w2", u(hidden))?;
        Ok(Self { w1, bn, w2, train_first_layer })
    }

    /// Logits `[N, 2]`: column 0 is `z_u`, column 1 is `z_l`.
    pub fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let g = x.detach().mean(D::Minus1)?.mean(D::Minus1)?; // [N, C]
        let ternary = |w: &Tensor| WeightQuantizer::Ternary.quantize(w, 2);
        let h = a2(&g, self.train_first_layer)?.matmul(&ternary(&self.w1)?.t()?)?;
        let h = compress_nn::layers::Activation::Relu.apply(&self.bn.forward_t(&h, train)?)?;
        Ok(a2(&h, self.train_first_layer)?.matmul(&ternary(&self.w2)?.t()?)?)
    }

    /// Factors `f = 2 sigmoid(z)` of `[N, 2]` logits, as `(f_u, f_l)` each `[N]`.
    pub fn factors(logits: &Tensor) -> Result<(Tensor, Tensor)> {
        let f = ((logits.neg()?.exp()? + 1.0)?.recip()? * 2.0)?;
        Ok((f.narrow(1, 0, 1)?.squeeze(1)?, f.narrow(1, 1, 1)?.squeeze(1)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn spec_factors() {
        let z = Tensor::new(&[[0.5f32, -1.0], [0.0, 0.0]], &Device::Cpu).unwrap();
        let (fu, fl) = DynamicGate::factors(&z).unwrap();
        let (fu, fl): (Vec<f32>, Vec<f32>) = (fu.to_vec1().unwrap(), fl.to_vec1().unwrap());
        assert!((fu[0] - 1.24492).abs() < 1e-5 && (fl[0] - 0.53788).abs() < 1e-5);
        assert!((fu[0] * 1.2 - 1.49390).abs() < 1e-5 && (fl[0] * -0.3 + 0.16136).abs() < 1e-5);
        assert_eq!((fu[1], fl[1]), (1.0, 1.0), "zero logits leave the bounds exactly as they are");
    }

    fn grads_reach(train_first_layer: bool) -> (bool, bool) {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let gate = DynamicGate::new(8, 32, train_first_layer, vb).unwrap();
        let v: Vec<f32> = (0..4 * 8 * 3 * 3).map(|i| ((i * 37 % 53) as f32 - 26.0) / 9.0).collect();
        let x = Tensor::from_vec(v, (4, 8, 3, 3), &Device::Cpu).unwrap();
        let g = gate.logits(&x, true).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let data = map.data().lock().unwrap();
        let has = |k: &str| {
            g.get(data[k].as_tensor())
                .is_some_and(|t| t.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0)
        };
        (has("w1"), has("w2"))
    }

    #[test]
    fn only_the_second_layer_trains_by_default() {
        assert_eq!(grads_reach(false), (false, true));
        assert_eq!(grads_reach(true), (true, true));
    }

    /// `A2` on four evenly spaced values is exact (levels at min + k span / 3); a span below
    /// `1e-6 max(|min|, 1)` is widened to exactly that, so a 5e-7 step still maps to a level
    /// above the minimum; the straight-through form passes the gradient unchanged.
    #[test]
    fn a2_levels_and_the_span_floor() {
        let x = Tensor::new(&[1f32, 2.0, 3.0, 4.0], &Device::Cpu).unwrap();
        assert_eq!(a2(&x, false).unwrap().to_vec1::<f32>().unwrap(), [1.0, 2.0, 3.0, 4.0]);
        let y = Tensor::new(&[1f32, 1.4, 2.6, 4.0], &Device::Cpu).unwrap();
        assert_eq!(a2(&y, false).unwrap().to_vec1::<f32>().unwrap(), [1.0, 1.0, 3.0, 4.0]);
        let tiny = Tensor::new(&[0.5f32, 0.5 + 5e-7], &Device::Cpu).unwrap();
        let q = a2(&tiny, false).unwrap().to_vec1::<f32>().unwrap();
        // Levels 1e-6 / 3 apart (f32 near 0.5 resolves 6e-8): the step lands on the second or
        // third, not on the minimum's.
        assert!((q[0] - 0.5).abs() < 2e-7 && q[1] - q[0] > 2.5e-7 && q[1] - q[0] < 8e-7, "{q:?}");
        let v = candle_core::Var::from_tensor(&y).unwrap();
        let st = a2(v.as_tensor(), true).unwrap();
        assert_eq!(st.to_vec1::<f32>().unwrap(), [1.0, 1.0, 3.0, 4.0], "the quantized values, forward");
        let g = st.sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), [1.0; 4]);
    }
}
