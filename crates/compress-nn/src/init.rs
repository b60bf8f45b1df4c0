//! Seeded initialisation: a `VarBuilder` whose new variables are drawn from the run's
//! [`SeededRng`], keyed by the variable's name.
//!
//! candle's CPU RNG cannot be seeded, so `VarMap`'s own initialisation is not reproducible. Here
//! each variable is sampled from the stream `(seed, name)`: the same seed gives the same weights
//! whatever the order in which layers are built. The `Init` hints of candle-nn are honoured
//! (constant, normal, uniform, Kaiming with fan-in/fan-out and gain).

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use compress_core::rng::SeededRng;
use rand::Rng;
use rand_distr::{Distribution, Normal};

/// A `VarMap` that creates missing variables from a seed.
#[derive(Clone)]
pub struct SeededVarMap {
    map: VarMap,
    rng: SeededRng,
}

impl std::fmt::Debug for SeededVarMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeededVarMap").field("seed", &self.rng.seed()).finish()
    }
}

impl SeededVarMap {
    /// Wraps `map`; variables it lacks are created from `seed`.
    pub fn new(map: VarMap, seed: u64) -> Self {
        Self { map, rng: SeededRng::new(seed).child("init") }
    }

    fn sample(&self, shape: &Shape, name: &str, init: Init) -> Vec<f64> {
        let n = shape.elem_count();
        let mut rng = self.rng.stream(name, 0);
        let normal = |std: f64, rng: &mut rand::rngs::StdRng| -> Vec<f64> {
            match Normal::new(0.0, std) {
                Ok(d) => (0..n).map(|_| d.sample(rng)).collect(),
                Err(_) => vec![0.0; n],
            }
        };
        match init {
            Init::Const(v) => vec![v; n],
            Init::Randn { mean, stdev } => normal(stdev, &mut rng).into_iter().map(|x| x + mean).collect(),
            Init::Uniform { lo, up } => (0..n).map(|_| if up > lo { rng.random_range(lo..up) } else { lo }).collect(),
            Init::Kaiming { dist, fan, non_linearity } => {
                let fan = fan_of(fan, shape.dims());
                let std = non_linearity.gain() / (fan as f64).sqrt();
                match dist {
                    NormalOrUniform::Normal => normal(std, &mut rng),
                    NormalOrUniform::Uniform => {
                        let b = 3f64.sqrt() * std;
                        (0..n).map(|_| rng.random_range(-b..b)).collect()
                    }
                }
            }
        }
    }
}

/// Fan-in (`dims[1] * receptive field`) or fan-out (`dims[0] * receptive field`), as PyTorch.
fn fan_of(fan: FanInOut, dims: &[usize]) -> usize {
    let rf: usize = dims.iter().skip(2).product();
    let f = match fan {
        FanInOut::FanIn => dims.get(1).copied().unwrap_or(dims.first().copied().unwrap_or(1)) * rf,
        FanInOut::FanOut => dims.first().copied().unwrap_or(1) * rf,
    };
    f.max(1)
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut data = self.map.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", v.shape())
            }
            return Ok(v.as_tensor().clone());
        }
        let values = self.sample(&s, name, h);
        let t = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("get_unchecked({name}) is not supported by SeededVarMap, use get")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map.data().lock().map(|d| d.contains_key(name)).unwrap_or(false)
    }
}

/// A `VarMap` holding `tensors` as f32 variables on `device`. Tensors already f32 on `device`
/// share their storage with the new variables (copy them first for an independent model).
pub fn varmap_from(
    tensors: &std::collections::HashMap<String, Tensor>,
    device: &Device,
) -> candle_core::Result<VarMap> {
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        for (k, t) in tensors {
            // f64 stays f64 (exact comparisons); every other dtype trains in f32.
            let dtype = if t.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
            data.insert(k.clone(), Var::from_tensor(&t.to_device(device)?.to_dtype(dtype)?)?);
        }
    }
    Ok(varmap)
}

/// Every variable of `map` by name (sharing storage with the variables).
pub fn varmap_tensors(map: &VarMap) -> candle_core::Result<std::collections::HashMap<String, Tensor>> {
    let data = map.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
    Ok(data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect())
}

/// A `VarBuilder` over `map` that initialises missing variables from `seed`.
pub fn seeded_builder(map: &VarMap, seed: u64, dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(SeededVarMap::new(map.clone(), seed)), dtype, device.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights_any_order() {
        let (a, b) = (VarMap::new(), VarMap::new());
        let va = seeded_builder(&a, 5, DType::F32, &Device::Cpu);
        let vb = seeded_builder(&b, 5, DType::F32, &Device::Cpu);
        let x = va.get_with_hints((4, 3), "x", candle_nn::init::DEFAULT_KAIMING_NORMAL).expect("x");
        let _y = va.get_with_hints(2, "y", Init::Const(1.0)).expect("y");
        let _y2 = vb.get_with_hints(2, "y", Init::Const(1.0)).expect("y");
        let x2 = vb.get_with_hints((4, 3), "x", candle_nn::init::DEFAULT_KAIMING_NORMAL).expect("x");
        let d = (x - x2).expect("d").abs().expect("a").sum_all().expect("s").to_scalar::<f32>().expect("v");
        assert_eq!(d, 0.0);
        let c = VarMap::new();
        let vc = seeded_builder(&c, 6, DType::F32, &Device::Cpu);
        let x3 = vc.get_with_hints((4, 3), "x", candle_nn::init::DEFAULT_KAIMING_NORMAL).expect("x");
        let x1 = a.data().lock().expect("lock")["x"].as_tensor().clone();
        assert!((x1 - x3).expect("d").abs().expect("a").sum_all().expect("s").to_scalar::<f32>().expect("v") > 0.0);
    }

    #[test]
    fn kaiming_normal_has_the_fan_in_std() {
        let m = VarMap::new();
        let vb = seeded_builder(&m, 1, DType::F32, &Device::Cpu);
        let w = vb.get_with_hints((64, 32, 3, 3), "w", candle_nn::init::DEFAULT_KAIMING_NORMAL).expect("w");
        let std = w.sqr().expect("s").mean_all().expect("m").to_scalar::<f32>().expect("v").sqrt();
        let want = (2.0f32 / (32.0 * 9.0)).sqrt();
        assert!((std / want - 1.0).abs() < 0.03, "{std} vs {want}");
    }
}
