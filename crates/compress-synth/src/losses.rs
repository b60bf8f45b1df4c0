//! The BatchNorm-statistics loss that every data-free synthesis shares (intraq spec 2.1), as a
//! pure function of tensors. A method's own terms live in its crate.

use candle_core::{Result, Tensor};
use compress_nn::probe::BnInput;

/// `L_BNS = (1/L) sum_l [MSE(mu_l, running_mean_l) + MSE(var_l, running_var_l)]` (biased batch
/// variance; gradients through the batch statistics).
pub fn bns_loss(bn: &[BnInput]) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for s in bn {
        let t = ((&s.mean - &s.running_mean)?.sqr()?.mean_all()? + (&s.var - &s.running_var)?.sqr()?.mean_all()?)?;
        total = Some(match total {
            None => t,
            Some(a) => (a + t)?,
        });
    }
    match total {
        Some(t) => t / bn.len() as f64,
        None => candle_core::bail!("bns_loss: no BatchNorm statistics"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn scalar(t: &Tensor) -> f64 {
        t.to_dtype(candle_core::DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn bns_of_the_spec_example() {
        let dev = Device::Cpu;
        let s = BnInput {
            mean: Tensor::new(&[0.5f64, -0.5], &dev).unwrap(),
            var: Tensor::new(&[2f64, 1.0], &dev).unwrap(),
            running_mean: Tensor::new(&[0f64, 0.0], &dev).unwrap(),
            running_var: Tensor::new(&[1f64, 1.0], &dev).unwrap(),
            count: 2,
            prefix: "bn".into(),
        };
        assert!((scalar(&bns_loss(&[s]).unwrap()) - 0.75).abs() < 1e-12);
    }
}
