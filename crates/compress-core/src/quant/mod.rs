//! Uniform fake quantization with straight-through estimators, the weight-range rules of the
//! quantization papers, and an integer export of any fake-quantized tensor.
//!
//! - [`round`] holds round-half-to-even (PyTorch's `torch.round`; candle's rounds half away
//!   from zero) and its straight-through form `x + stopgrad(round(x) - x)`.
//! - [`affine`] is the zero-anchored asymmetric quantizer with bounds `l < u` (DDTB's 2.1):
//!   both rounds straight-through, so gradients reach the bounds; per tensor, per channel or per
//!   sample by broadcasting the bounds.
//! - [`asym`] is GDFQ / IntraQ's asymmetric quantizer (codes clipped, identity straight-through,
//!   ranges from min/max or a running average without gradient), on the same fused CPU op.
//! - [`range`] keeps running activation ranges (the official double-bias-corrected average, a
//!   plain one, a singly corrected one), with freeze / unfreeze.
//! - [`symmetric`] quantizes on `[-alpha, alpha]` with `2^(b-1) - 1` positive levels (PAMS).
//! - [`weight`] chooses per-tensor weight ranges (percentile, min/max, symmetric max-abs) or
//!   ternary levels.
//! - [`export`] gives codes (packed for 1, 2 and 4 bits), scale and zero point; `dequantize`
//!   reproduces the fake-quantized values bit for bit.

pub mod affine;
pub mod asym;
pub mod export;
pub mod range;
pub mod round;
mod ste;
pub mod symmetric;
pub mod weight;

pub use affine::{AffineGrid, affine_fake_quant};
pub use asym::{asym_fake_quant, per_channel_minmax};
pub use export::QuantizedTensor;
pub use range::{RangeRule, RunningRange};
pub use round::{rne_f32, round_half_even, round_half_even_composed, ste_round};
pub use symmetric::symmetric_fake_quant;
pub use weight::{WeightQuantizer, percentile};

/// A quantizer configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// Bits outside `1..=8`.
    #[error("{0} bits: a quantizer needs 1 to 8 bits")]
    Bits(u32),
    /// `lower >= upper` (or a non-finite bound).
    #[error("quantizer bounds must satisfy lower < upper, got [{lower}, {upper}]")]
    Bounds {
        /// Lower bound.
        lower: f64,
        /// Upper bound.
        upper: f64,
    },
    /// A percentile outside `0..=100`, or `lo > hi`.
    #[error("percentiles must satisfy 0 <= lo <= hi <= 100, got ({lo}, {hi})")]
    Percentile {
        /// Lower percentile.
        lo: f64,
        /// Upper percentile.
        hi: f64,
    },
    /// An empty tensor has no range.
    #[error("cannot quantize an empty tensor")]
    Empty,
    /// Malformed export data.
    #[error("malformed quantized tensor: {0}")]
    Malformed(String),
    /// Operands whose shapes do not fit together.
    #[error("{0}")]
    Shape(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// Result with [`QuantError`].
pub type Result<T> = std::result::Result<T, QuantError>;

/// Checks `bits` is in `1..=8`.
pub fn check_bits(bits: u32) -> Result<()> {
    if (1..=8).contains(&bits) { Ok(()) } else { Err(QuantError::Bits(bits)) }
}

/// Whether `x` is half precision: the quantizers then compute in f32 and return `x`'s dtype
/// (their rounding grid must not depend on the activations' storage type).
pub(crate) fn is_half(x: &candle_core::Tensor) -> bool {
    matches!(x.dtype(), candle_core::DType::F16 | candle_core::DType::BF16)
}

/// `f(x, a, b)` in f32, the result back in `x`'s dtype (straight-through: casts pass gradients).
pub(crate) fn in_f32(
    x: &candle_core::Tensor,
    a: &candle_core::Tensor,
    b: Option<&candle_core::Tensor>,
    f: impl FnOnce(&candle_core::Tensor, &candle_core::Tensor, Option<&candle_core::Tensor>) -> Result<candle_core::Tensor>,
) -> Result<candle_core::Tensor> {
    let f32 = candle_core::DType::F32;
    let b = b.map(|t| t.to_dtype(f32)).transpose()?;
    Ok(f(&x.to_dtype(f32)?, &a.to_dtype(f32)?, b.as_ref())?.to_dtype(x.dtype())?)
}

#[cfg(test)]
mod half_tests {
    #![allow(clippy::unwrap_used)]
    use crate::quant::{affine_fake_quant, asym_fake_quant, symmetric_fake_quant};
    use candle_core::{DType, Device, Tensor};

    /// A half-precision input is quantized in f32: the values are the f32 quantizer's on the
    /// same (half-representable) inputs, returned in the input's dtype.
    #[test]
    fn half_inputs_quantize_in_f32() {
        let d = Device::Cpu;
        let x = Tensor::arange(-40f32, 40.0, &d).unwrap().affine(0.05, 0.0).unwrap();
        let (l, u) = (Tensor::new(-0.7f32, &d).unwrap(), Tensor::new(1.3f32, &d).unwrap());
        for dtype in [DType::F16, DType::BF16] {
            let xh = x.to_dtype(dtype).unwrap();
            let exact = xh.to_dtype(DType::F32).unwrap();
            let cases = [
                (affine_fake_quant(&xh, &l, &u, 3).unwrap(), affine_fake_quant(&exact, &l, &u, 3).unwrap()),
                (asym_fake_quant(&xh, &l, &u, 3).unwrap(), asym_fake_quant(&exact, &l, &u, 3).unwrap()),
                (symmetric_fake_quant(&xh, &u, 3).unwrap(), symmetric_fake_quant(&exact, &u, 3).unwrap()),
            ];
            for (got, want) in cases {
                assert_eq!(got.dtype(), dtype);
                let want: Vec<f32> = want.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap();
                assert_eq!(got.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(), want);
            }
        }
    }
}
