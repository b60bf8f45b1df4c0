//! PAMS' activation quantizer, the baseline DDTB is compared with: symmetric `[-alpha, alpha]`,
//! `qmax = 2^(b-1) - 1`, trainable `alpha` initialised on the first batch to the batch mean of
//! the per-sample `max|x|`.

use crate::error::{DdtbError, Result};
use candle_core::{D, Tensor, Var};
use candle_nn::VarBuilder;
use compress_core::quant::symmetric_fake_quant;
use std::sync::Mutex;

/// A PAMS activation quantizer (`alpha` under `<prefix>.alpha`).
#[derive(Debug)]
pub struct PamsActQuant {
    /// The clip.
    pub alpha: Var,
    /// Bits (at least 2).
    pub bits: u32,
    initialised: Mutex<bool>,
}

impl PamsActQuant {
    /// A quantizer whose `alpha` is set by its first batch.
    pub fn new(bits: u32, vb: VarBuilder) -> Result<Self> {
        if !(2..=8).contains(&bits) {
            return Err(DdtbError::Config(format!("PAMS needs 2 to 8 bits, not {bits}")));
        }
        let a = vb.get_with_hints((), "alpha", candle_nn::Init::Const(1.0))?;
        Ok(Self { alpha: Var::from_tensor(&a)?, bits, initialised: Mutex::new(false) })
    }

    /// Marks `alpha` as set (a resumed run restores it from its checkpoint).
    pub fn mark_initialised(&self) -> Result<()> {
        *self.initialised.lock().map_err(|_| DdtbError::Config("PAMS state poisoned".into()))? = true;
        Ok(())
    }

    /// Quantizes `x`; the first call sets `alpha`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut init = self.initialised.lock().map_err(|_| DdtbError::Config("PAMS state poisoned".into()))?;
        if !*init {
            let per_sample = x.detach().abs()?.flatten_from(1)?.max(D::Minus1)?;
            let a = per_sample.mean_all()?.maximum(1e-8)?;
            self.alpha.set(&a)?;
            *init = true;
        }
        Ok(symmetric_fake_quant(x, self.alpha.as_tensor(), self.bits)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn alpha_starts_at_the_mean_per_sample_max() {
        let map = VarMap::new();
        let q = PamsActQuant::new(2, VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu)).unwrap();
        let x = Tensor::new(&[[1.5f32, -3.0], [0.5, 1.2]], &Device::Cpu).unwrap();
        let y: Vec<f32> = q.forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!((q.alpha.as_tensor().to_scalar::<f32>().unwrap() - 2.1).abs() < 1e-6, "(3 + 1.2) / 2");
        for (a, b) in y.iter().zip([2.1, -2.1, 0.0, 2.1]) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
        assert!(PamsActQuant::new(1, VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu)).is_err());
    }
}
