//! The joint training loss (section 2.7): `CE(y_f, target) + KL(sg(softmax(y_f)) || softmax(y_c))`,
//! the KL averaged over the batch.

use candle_core::{Result, Tensor};
use compress_train::loss::{cross_entropy, distillation, soft_cross_entropy};

/// The fine stage's target.
#[derive(Debug, Clone)]
pub enum Target<'a> {
    /// Class indices with label smoothing `eps`.
    Hard(&'a Tensor, f64),
    /// Probabilities `[B, K]` (mixup / cutmix / smoothing already applied).
    Soft(&'a Tensor),
}

/// `KL(sg(softmax(y_f)) || softmax(y_c))`, batch mean: the coarse stage distilled from the fine.
pub fn coarse_distillation(y_c: &Tensor, y_f: &Tensor) -> Result<Tensor> {
    distillation(y_c, &y_f.detach(), 1.0)
}

/// The CF-ViT loss.
pub fn cf_loss(y_c: &Tensor, y_f: &Tensor, target: Target) -> Result<Tensor> {
    let ce = match target {
        Target::Hard(labels, eps) => cross_entropy(y_f, labels, eps)?,
        Target::Soft(p) => soft_cross_entropy(y_f, p)?,
    };
    ce + coarse_distillation(y_c, y_f)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn kl_of_the_spec_example_and_the_exit_threshold() {
        let dev = Device::Cpu;
        let y_c = Tensor::new(&[[2f32, 0.0, -1.0]], &dev).expect("c");
        let y_f = Tensor::new(&[[3f32, 0.5, -2.0]], &dev).expect("f");
        let kl = coarse_distillation(&y_c, &y_f).expect("kl").to_scalar::<f32>().expect("v");
        assert!((kl - 0.034678).abs() < 2e-6, "{kl}");
        let p: Vec<f32> =
            candle_nn::ops::softmax_last_dim(&y_c).expect("p").flatten_all().expect("f").to_vec1().expect("v");
        for (a, b) in p.iter().zip([0.84379, 0.11420, 0.04201]) {
            assert!((a - b).abs() < 1e-5);
        }
        let pf: Vec<f32> =
            candle_nn::ops::softmax_last_dim(&y_f).expect("p").flatten_all().expect("f").to_vec1().expect("v");
        for (a, b) in pf.iter().zip([0.91842, 0.07539, 0.00619]) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn the_kl_gradient_reaches_only_the_coarse_logits() {
        let dev = Device::Cpu;
        let y_c = candle_core::Var::new(&[[2f32, 0.0, -1.0]], &dev).expect("c");
        let y_f = candle_core::Var::new(&[[3f32, 0.5, -2.0]], &dev).expect("f");
        let g = coarse_distillation(y_c.as_tensor(), y_f.as_tensor()).expect("kl").backward().expect("g");
        assert!(g.get(y_f.as_tensor()).is_none(), "the fine distribution is a constant target");
        // d KL / d y_c = p_c - p_f.
        let gc: Vec<f32> = g.get(y_c.as_tensor()).expect("gc").flatten_all().expect("f").to_vec1().expect("v");
        for (a, b) in gc.iter().zip([0.84379 - 0.91842, 0.11420 - 0.07539, 0.04201 - 0.00619]) {
            assert!((a - b).abs() < 2e-5, "{gc:?}");
        }
        let labels = Tensor::new(&[0u32], &dev).expect("l");
        let total = cf_loss(y_c.as_tensor(), y_f.as_tensor(), Target::Hard(&labels, 0.0)).expect("loss");
        let want = -0.91842f32.ln() + 0.034678;
        assert!((total.to_scalar::<f32>().expect("v") - want).abs() < 1e-4);
    }
}
