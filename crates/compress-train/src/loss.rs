//! Losses: cross-entropy with label smoothing, L1, MSE, knowledge distillation and attention
//! transfer.

use candle_core::{D, DType, Result, Tensor};
use candle_nn::ops::log_softmax;

/// Cross-entropy of `[B, K]` logits against `u32` labels with label smoothing `eps`
/// (PyTorch): `-(1 - eps) log p_y - (eps / K) sum_k log p_k`, averaged over the batch.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, eps: f64) -> Result<Tensor> {
    logits.dims2()?;
    let logp = log_softmax(logits, D::Minus1)?;
    let nll = logp.gather(&labels.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    if eps == 0.0 {
        return nll.mean_all();
    }
    let smooth = logp.mean(D::Minus1)?.neg()?;
    ((nll * (1.0 - eps))? + (smooth * eps)?)?.mean_all()
}

/// Cross-entropy against target probabilities `[B, K]` (mixup / cutmix targets):
/// `-sum_k t_k log p_k`, averaged over the batch (timm's `SoftTargetCrossEntropy`).
pub fn soft_cross_entropy(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let b = logits.dims2()?.0 as f64;
    (log_softmax(logits, D::Minus1)? * target.detach())?.sum_all()?.neg()? / b
}

/// Mean absolute error.
pub fn l1(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a - b)?.abs()?.mean_all()
}

/// Mean squared error.
pub fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a - b)?.sqr()?.mean_all()
}

/// Distillation loss of Hinton et al.: `T^2 KL(softmax(t / T) || softmax(s / T))`, averaged over
/// the batch (PyTorch's `kl_div(..., reduction="batchmean") * T^2`).
pub fn distillation(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let b = student.dim(0)? as f64;
    let ls = log_softmax(&(student / temperature)?, D::Minus1)?;
    let lt = log_softmax(&(teacher.detach() / temperature)?, D::Minus1)?;
    let kl = (lt.exp()? * (lt - ls)?)?.sum_all()?;
    kl * (temperature * temperature / b)
}

/// Attention-transfer loss of Zagoruyko & Komodakis: the attention map of `[B, C, H, W]`
/// features is the L2-normalised `mean_c(F^2)`, and the loss is the mean squared difference of
/// the student's and the teacher's maps (their official code).
pub fn attention_transfer(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    let at = |f: &Tensor| -> Result<Tensor> {
        let a = f.sqr()?.mean(1)?.flatten_from(1)?;
        let n = (a.sqr()?.sum_keepdim(1)?.sqrt()? + 1e-12)?;
        a.broadcast_div(&n)
    };
    (at(student)? - at(&teacher.detach())?)?.sqr()?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn soft_cross_entropy_of_one_hot_smoothed_targets_is_smoothed_cross_entropy() {
        let logits = Tensor::new(&[[1f32, -0.5, 2.0], [0.0, 0.3, -1.0]], &Device::Cpu).expect("l");
        let labels = Tensor::new(&[2u32, 0], &Device::Cpu).expect("y");
        let eps = 0.1f32;
        let t = Tensor::new(
            &[[eps / 3.0, eps / 3.0, 1.0 - eps + eps / 3.0], [1.0 - eps + eps / 3.0, eps / 3.0, eps / 3.0]],
            &Device::Cpu,
        )
        .expect("t");
        let a = soft_cross_entropy(&logits, &t).expect("a").to_scalar::<f32>().expect("v");
        let b = cross_entropy(&logits, &labels, f64::from(eps)).expect("b").to_scalar::<f32>().expect("v");
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    #[test]
    fn cross_entropy_with_smoothing_by_hand() {
        let logits = Tensor::from_vec(vec![0f64, 0.0f64.ln_1p(), 2f64.ln()], (1, 3), &Device::Cpu).expect("l");
        // p = [1, 1, 2] / 4.
        let y = Tensor::from_vec(vec![2u32], 1, &Device::Cpu).expect("y");
        let ce = cross_entropy(&logits, &y, 0.0).expect("ce").to_scalar::<f64>().expect("v");
        assert!((ce - 2f64.ln()).abs() < 1e-12);
        let sm = cross_entropy(&logits, &y, 0.3).expect("ce").to_scalar::<f64>().expect("v");
        let want = 0.7 * 2f64.ln() + 0.3 * (4f64.ln() * 2.0 + 2f64.ln()) / 3.0;
        assert!((sm - want).abs() < 1e-12, "{sm} vs {want}");
    }

    #[test]
    fn distillation_is_zero_for_equal_logits_and_positive_otherwise() {
        let a = Tensor::from_vec(vec![1f64, 2.0, 3.0, 0.0, 0.0, 1.0], (2, 3), &Device::Cpu).expect("a");
        let b = Tensor::from_vec(vec![3f64, 2.0, 1.0, 1.0, 0.0, 0.0], (2, 3), &Device::Cpu).expect("b");
        assert!(distillation(&a, &a, 4.0).expect("kd").to_scalar::<f64>().expect("v").abs() < 1e-12);
        assert!(distillation(&a, &b, 4.0).expect("kd").to_scalar::<f64>().expect("v") > 0.0);
        let f = Tensor::ones((2, 3, 4, 4), DType::F64, &Device::Cpu).expect("f");
        assert!(
            attention_transfer(&f, &(&f * 3.0).expect("g")).expect("at").to_scalar::<f64>().expect("v").abs() < 1e-12
        );
        // |a - b| = (2, 0, 2, 1, 0, 1): mean 1; squares (4, 0, 4, 1, 0, 1): mean 10 / 6.
        assert_eq!(l1(&a, &b).expect("l1").to_scalar::<f64>().expect("v"), 1.0);
        assert!((mse(&a, &b).expect("mse").to_scalar::<f64>().expect("v") - 10.0 / 6.0).abs() < 1e-15);
        assert!(mse(&a, &a).expect("mse").to_scalar::<f64>().expect("v") == 0.0);
    }

    #[test]
    fn attention_transfer_worked_example_of_the_ddtb_spec() {
        // F_s: 1 x 2 x 1 x 2 with channels (1, 2) and (3, 4); F_t all ones: AT = 0.051317.
        let fs = Tensor::new(&[[[[1f32, 2.0]], [[3.0, 4.0]]]], &Device::Cpu).expect("fs");
        let ft = Tensor::ones((1, 2, 1, 2), candle_core::DType::F32, &Device::Cpu).expect("ft");
        let at = attention_transfer(&fs, &ft).expect("at").to_scalar::<f32>().expect("v");
        assert!((at - 0.051317).abs() < 1e-6, "{at}");
    }
}
