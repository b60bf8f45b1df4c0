//! The mask-training sparsity term (spec 2.2): `lambda sum_l || sum_k M_l[k, :] ||_2`, one plain
//! L2 norm per mask tensor over its class-summed vector `s_l`, applied or not. Its gradient
//! `lambda s_l[c] / ||s_l||` is the same for every class row.

use crate::error::{Result, config_err};
use candle_core::Tensor;

/// `lambda sum_l ||sum_k M_l[k, :]||_2` over `masks` (a scalar tensor). At `lambda = 0` it is
/// `sum_l 0 M_l`: zero, with a zero gradient on every mask, as the official `lambda * term` has,
/// so the optimizer's weight decay still reaches masks that no forward pass uses (an optimizer
/// skips a variable without a gradient, in PyTorch as here).
pub fn mask_penalty(masks: &[&Tensor], lambda: f64) -> Result<Tensor> {
    let first = masks.first().ok_or_else(|| config_err("the penalty needs at least one mask"))?;
    let mut total = first.zeros_like()?.sum_all()?;
    if lambda == 0.0 {
        // A product with a zero tensor (candle drops a node multiplied by the constant 0).
        for m in masks {
            total = (total + m.broadcast_mul(&m.zeros_like()?)?.sum_all()?)?;
        }
        return Ok(total);
    }
    for m in masks {
        let s = m.sum(0)?;
        total = (total + s.sqr()?.sum_all()?.sqrt()?)?;
    }
    Ok((total * lambda)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Section 8: `M = [[1, 2], [2, 2]]` gives `s = [3, 4]`, penalty `5 lambda`, gradient
    /// `lambda [0.6, 0.8]` on both rows.
    #[test]
    fn worked_penalty() {
        let m = Var::from_tensor(&Tensor::new(&[[1f32, 2.0], [2.0, 2.0]], &Device::Cpu).unwrap()).unwrap();
        let lambda = 0.01;
        let p = mask_penalty(&[m.as_tensor()], lambda).unwrap();
        assert!((p.to_scalar::<f32>().unwrap() - 0.05).abs() < 1e-7);
        let g = p.backward().unwrap().get(m.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        for row in g {
            assert!((row[0] - 0.006).abs() < 1e-8 && (row[1] - 0.008).abs() < 1e-8, "{row:?}");
        }
        let two = mask_penalty(&[m.as_tensor(), m.as_tensor()], lambda).unwrap().to_scalar::<f32>().unwrap();
        assert!((two - 0.1).abs() < 1e-7, "one norm per tensor, summed");
        let zero = mask_penalty(&[m.as_tensor()], 0.0).unwrap();
        assert_eq!(zero.to_scalar::<f32>().unwrap(), 0.0);
        let g = zero.backward().unwrap().get(m.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(g, [[0.0, 0.0], [0.0, 0.0]], "a zero gradient, present, so weight decay applies");
    }
}
