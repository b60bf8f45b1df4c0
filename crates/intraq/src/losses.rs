//! IntraQ's synthesis terms (spec 2.1), as pure functions of tensors: the soft inception loss and
//! the marginal distance constraint (the BN-statistics loss is `compress_synth`'s).

use candle_core::{D, Result, Tensor};

/// `L_SIL = (1/B) sum_i (p_{y_i} - s_i)^2`: only the target-class probability is pulled towards
/// its soft target `s_i`.
pub fn soft_inception_loss(logits: &Tensor, labels: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let p = candle_nn::ops::softmax(logits, D::Minus1)?;
    let py = p.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?;
    (py - targets)?.sqr()?.mean_all()
}

/// `d_i = 1 - cos(f_i, c_{y_i})` with `cos = a.b / max(|a||b|, 1e-6)`.
pub fn cosine_distance(f: &Tensor, c: &Tensor) -> Result<Tensor> {
    let dot = (f * c)?.sum(D::Minus1)?;
    let norms = (f.sqr()?.sum(D::Minus1)?.sqrt()? * c.sqr()?.sum(D::Minus1)?.sqrt()?)?.maximum(1e-6)?;
    (dot / norms)?.affine(-1.0, 1.0)
}

/// `L_MDC = (1/M) sum_i m_i max(l - d_i, 0) + (1/M) sum_i m_i max(d_i - u, 0)`,
/// `M = sum m_i + 1e-6`, for features `[B, D]`, their class centres `[B, D]` (constants) and the
/// mask `[B]` of images whose class has a centre. Returns `(lower, upper)` terms.
pub fn mdc_loss(f: &Tensor, centres: &Tensor, mask: &Tensor, lo: f64, hi: f64) -> Result<(Tensor, Tensor)> {
    let d = cosine_distance(f, &centres.detach())?;
    let m = (mask.sum_all()? + 1e-6)?;
    let lower = (d.affine(-1.0, lo)?.relu()? * mask)?.sum_all()?.broadcast_div(&m)?;
    let upper = (d.affine(1.0, -hi)?.relu()? * mask)?.sum_all()?.broadcast_div(&m)?;
    Ok((lower, upper))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn scalar(t: &Tensor) -> f64 {
        t.to_dtype(candle_core::DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn soft_inception_loss_value_gradient_and_batch() {
        let dev = Device::Cpu;
        let z = Var::new(&[[2f64, 0.0, 0.0]], &dev).unwrap();
        let y = Tensor::new(&[0u32], &dev).unwrap();
        let s = Tensor::new(&[0.95f64], &dev).unwrap();
        let l = soft_inception_loss(z.as_tensor(), &y, &s).unwrap();
        assert!((scalar(&l) - 0.0265736).abs() < 1e-7, "{}", scalar(&l));
        let g: Vec<f64> = l.backward().unwrap().get(z.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in g.iter().zip([-0.054655, 0.027328, 0.027328]) {
            assert!((a - b).abs() < 1e-6, "{g:?}");
        }
        let z2 = Tensor::new(&[[2f64, 0.0, 0.0], [0.0, 0.0, 0.0]], &dev).unwrap();
        let y2 = Tensor::new(&[0u32, 2], &dev).unwrap();
        let s2 = Tensor::new(&[0.95f64, 1.0], &dev).unwrap();
        assert!((scalar(&soft_inception_loss(&z2, &y2, &s2).unwrap()) - 0.235509).abs() < 1e-6);
        // eps = 1: L_SIL = mean (1 - p_y)^2.
        let ones = Tensor::new(&[1f64, 1.0], &dev).unwrap();
        let p = candle_nn::ops::softmax(&z2, D::Minus1).unwrap().to_vec2::<f64>().unwrap();
        let want = ((1.0 - p[0][0]).powi(2) + (1.0 - p[1][2]).powi(2)) / 2.0;
        assert!((scalar(&soft_inception_loss(&z2, &y2, &ones).unwrap()) - want).abs() < 1e-12);
    }

    #[test]
    fn mdc_of_the_spec_example() {
        let dev = Device::Cpu;
        let f = Tensor::new(&[[1f64, 0.0], [1.0, 0.0], [1.0, 0.0], [3.0, 4.0]], &dev).unwrap();
        let c = Tensor::new(&[[1f64, 0.1], [1.0, 1.0], [-1.0, 0.2], [0.0, 1.0]], &dev).unwrap();
        let mask = Tensor::new(&[1f64, 1.0, 1.0, 0.0], &dev).unwrap();
        let d: Vec<f64> = cosine_distance(&f, &c).unwrap().to_vec1().unwrap();
        for (a, b) in d.iter().zip([0.004963, 0.292893, 1.980581]) {
            assert!((a - b).abs() < 1e-6, "{d:?}");
        }
        let (lo, hi) = mdc_loss(&f, &c, &mask, 0.05, 0.8).unwrap();
        assert!((scalar(&lo) - 0.015012).abs() < 1e-6, "{}", scalar(&lo));
        assert!((scalar(&hi) - 0.393527).abs() < 1e-6, "{}", scalar(&hi));
        // lambda = (0, 2): both hinges are inactive for any cosine distance.
        let (lo, hi) = mdc_loss(&f, &c, &mask, 0.0, 2.0).unwrap();
        assert_eq!((scalar(&lo), scalar(&hi)), (0.0, 0.0));
    }
}
