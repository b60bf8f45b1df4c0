//! Round-half-to-even and its straight-through estimator.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

/// `round(x)` with ties to even (PyTorch's `torch.round`, IEEE `roundTiesToEven`), no gradient.
pub fn round_half_even(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() {
        return x.contiguous()?.apply_op1_no_bwd(&RoundHalfEven);
    }
    round_half_even_composed(x)
}

/// [`round_half_even`] from candle's half-away `round` on any device: a tie that went to an odd
/// value steps back toward zero, `r - sign(x) [|r - x| = 0.5] [r / 2 not whole]`.
pub fn round_half_even_composed(x: &Tensor) -> candle_core::Result<Tensor> {
    let r = x.detach().round()?;
    let tie = (&r - &x.detach())?.abs()?.eq(0.5)?.to_dtype(x.dtype())?;
    let half = (&r * 0.5)?;
    let odd = (&half - half.floor()?)?.abs()?.ne(0.0)?.to_dtype(x.dtype())?;
    r - (x.detach().sign()? * tie * odd)?
}

/// `x + stopgrad(round_half_even(x) - x)`: the rounded value forward, gradient 1 backward.
pub fn ste_round(x: &Tensor) -> candle_core::Result<Tensor> {
    x + (round_half_even(x)? - x)?.detach()
}

/// Round-half-to-even of one `f32` without a libm call: below `2^22` in magnitude, adding and
/// subtracting `1.5 * 2^23` rounds in the FPU's default mode (to nearest, ties to even); larger
/// values have no fractional part to speak of and go through `round_ties_even`.
#[inline]
pub fn rne_f32(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    if v.abs() < 4_194_304.0 { (v + MAGIC) - MAGIC } else { v.round_ties_even() }
}

#[derive(Debug, Clone, Copy)]
struct RoundHalfEven;

impl CustomOp1 for RoundHalfEven {
    fn name(&self) -> &'static str {
        "round-half-even"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("round: not contiguous".into()))?;
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(v[a..b].iter().map(|x| rne_f32(*x)).collect()),
            CpuStorage::F64(v) => CpuStorage::F64(v[a..b].iter().map(|x| x.round_ties_even()).collect()),
            _ => candle_core::bail!("{}: f32 or f64 only", self.name()),
        };
        Ok((out, l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn the_fast_rounding_is_round_ties_even() {
        let mut v: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.25).collect();
        v.extend([4_194_303.5, -4_194_303.5, 4_194_304.5, 8_388_609.0, 1e9, -0.0, 0.49999997, f32::MIN_POSITIVE]);
        for x in v {
            assert_eq!(rne_f32(x).to_bits() & 0x7fff_ffff, x.round_ties_even().to_bits() & 0x7fff_ffff, "{x}");
        }
    }

    #[test]
    fn ties_go_to_even_and_the_gradient_passes_straight() {
        let v = [0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49, 2.51, 3.0];
        let x = Var::from_slice(&v, 9, &Device::Cpu).unwrap();
        let r: Vec<f32> = round_half_even(x.as_tensor()).unwrap().to_vec1().unwrap();
        assert_eq!(r, vec![0.0, 2.0, 2.0, -0.0, -2.0, -2.0, 0.0, 3.0, 3.0]);
        let y = ste_round(x.as_tensor()).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), r);
        let g = (y * 3.0).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), vec![3.0; 9]);
    }

    #[test]
    fn other_dtypes_are_refused_by_name() {
        let x = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
        let e = round_half_even(&x).unwrap_err().to_string();
        assert!(e.contains("round-half-even: f32 or f64 only"), "{e}");
    }

    #[test]
    fn the_composed_form_rounds_as_the_kernel() {
        // Ties on both sides of zero, odd and even, and values just off a tie.
        let mut v: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.25).collect();
        v.extend([0.49999997, -0.49999997, 2.5000002, -2.5000002, 1e7 + 1.0, -1e7 - 1.0]);
        let x = Tensor::new(v.as_slice(), &Device::Cpu).unwrap();
        let kernel: Vec<f32> = round_half_even(&x).unwrap().to_vec1().unwrap();
        let composed: Vec<f32> = round_half_even_composed(&x).unwrap().to_vec1().unwrap();
        for ((a, b), x) in composed.iter().zip(&kernel).zip(&v) {
            assert_eq!(a.abs().to_bits(), b.abs().to_bits(), "{x}: composed {a}, kernel {b}");
        }
        assert_eq!(&composed[..6], &[-10.0, -10.0, -10.0, -9.0, -9.0, -9.0]);
        assert_eq!(composed[40 - 2..40 + 3].to_vec(), vec![-0.0, -0.0, 0.0, 0.0, 0.0]);
        assert_eq!(composed[40 + 6], 2.0, "1.5 goes up to the even 2");
        assert_eq!(composed[40 + 10], 2.0, "2.5 goes down to the even 2");
        assert_eq!(composed[40 - 10], -2.0, "-2.5 goes up to the even -2");
    }
}
