//! Symmetric quantization on `[-alpha, alpha]` (PAMS): `qmax = 2^(b-1) - 1`,
//! `q = round(clamp(x, -alpha, alpha) qmax / alpha) alpha / qmax`, round straight-through, so
//! `alpha` (a `Var` for PAMS' trainable clip) gets the gradient of its clipping and scaling.

use super::round::ste_round;
use super::{QuantError, Result, check_bits};
use candle_core::Tensor;

/// `q(x; alpha, b)`; `alpha` is a positive scalar (or a tensor broadcasting to `x`).
pub fn symmetric_fake_quant(x: &Tensor, alpha: &Tensor, bits: u32) -> Result<Tensor> {
    check_bits(bits)?;
    if bits < 2 {
        return Err(QuantError::Bits(bits));
    }
    let a: Vec<f64> = alpha.detach().flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1()?;
    if let Some(&bad) = a.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        return Err(QuantError::Bounds { lower: -bad, upper: bad });
    }
    let qmax = f64::from((1u32 << (bits - 1)) - 1);
    let c = x.broadcast_maximum(&alpha.neg()?)?.broadcast_minimum(alpha)?;
    let scaled = c.broadcast_div(alpha)?.affine(qmax, 0.0)?;
    Ok(ste_round(&scaled)?.broadcast_mul(alpha)?.affine(1.0 / qmax, 0.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn pams_two_bits_has_three_levels() {
        let sweep: Vec<f32> = (0..=2000).map(|i| -5.0 + i as f32 * 0.005).collect();
        let x = Tensor::from_slice(&sweep, sweep.len(), &Device::Cpu).unwrap();
        let a = Tensor::new(1.2f32, &Device::Cpu).unwrap();
        let mut v: Vec<f32> = symmetric_fake_quant(&x, &a, 2).unwrap().to_vec1().unwrap();
        v.sort_by(f32::total_cmp);
        v.dedup();
        assert_eq!(v, vec![-1.2, 0.0, 1.2]);
        assert!(symmetric_fake_quant(&x, &a, 1).is_err());
        assert!(symmetric_fake_quant(&x, &Tensor::new(0f32, &Device::Cpu).unwrap(), 4).is_err());
    }
}
