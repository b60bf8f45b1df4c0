//! The weights of any candle model under one global sparsity budget, by their names in its
//! `VarMap` (a candle-nn model built through `VarBuilder::from_varmap`, or the zoo's): the
//! model's own variable holds the effective weight `W_eff = W (.) M` it reads in its forward
//! pass, and beside it in the same map live
//! - `optg.<name>.dense`: `W`, every entry (pruned values kept, so they can re-enter);
//! - `optg.<name>.score`: the score `S`, initialised to 0, in f32;
//! - `optg.<name>.buffer_mask`: `M`, a buffer;
//! - `optg.buffer_state`: the epoch the masks were assigned in and how many entries changed.
//!
//! After each backward pass [`Sparsified::route`] replaces the model variable's gradient `G` by
//! `G (.) M` on `W` and `G (.) W` on `S` ([`crate::ste`]); after each optimizer step
//! [`Sparsified::write_effective`] writes `W (.) M` back. Checkpoints of the map hold all of it.

use crate::error::{OptgError, Result, config_err};
use crate::global::Masks;
use crate::ste::routed_gradients;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use compress_core::sparse::Csr;
use std::collections::BTreeMap;

/// One sparsified weight.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The model's variable name (`<layer>.weight`).
    pub name: String,
    /// The model's variable: `W (.) M`.
    pub model: Var,
    /// `W`.
    pub dense: Var,
    /// `S`.
    pub score: Var,
    /// `M` (the weight's dtype).
    pub mask: Var,
}

/// Every sparsified weight of a model, in name order (the global ranking's layer order).
#[derive(Debug, Clone)]
pub struct Sparsified {
    slots: Vec<Slot>,
    state: Var,
}

const STATE: &str = "optg.buffer_state";

fn is_own(name: &str) -> bool {
    name.starts_with("optg.")
}

/// The conv (`[C_out, C_in, k, k]`) and linear (`[C_out, C_in]`) weights of `varmap` (rank 2 or
/// 4, named `*weight`, not buffers), sorted, minus `exclude`: OptG sparsifies every one, the
/// first conv and the classifier included.
pub fn sparsifiable_weights(varmap: &VarMap, exclude: &[&str]) -> Result<Vec<String>> {
    let data = varmap.data().lock().map_err(|_| OptgError::Poisoned)?;
    let mut v: Vec<String> = data
        .iter()
        .filter(|(k, t)| {
            k.ends_with("weight")
                && (t.rank() == 2 || t.rank() == 4)
                && !is_own(k)
                && !compress_nn::network::is_buffer(k)
                && !exclude.contains(&k.as_str())
        })
        .map(|(k, _)| k.clone())
        .collect();
    v.sort();
    Ok(v)
}

fn get(varmap: &VarMap, name: &str) -> Result<Var> {
    let data = varmap.data().lock().map_err(|_| OptgError::Poisoned)?;
    data.get(name).cloned().ok_or_else(|| config_err(format!("the VarMap has no variable {name:?}")))
}

fn insert(varmap: &VarMap, name: String, t: &Tensor) -> Result<Var> {
    let mut data = varmap.data().lock().map_err(|_| OptgError::Poisoned)?;
    if data.contains_key(&name) {
        return Err(config_err(format!("{name} exists: these weights are already sparsified")));
    }
    let v = Var::from_tensor(t)?;
    data.insert(name, v.clone());
    Ok(v)
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
}

impl Sparsified {
    /// Sparsifies the weights `names` of `varmap` (each a rank-2 or rank-4 variable): adds `W`
    /// (a copy of the current weight), `S = 0` and `M = 1` beside each. Nothing is pruned yet.
    pub fn new(varmap: &VarMap, names: &[String]) -> Result<Self> {
        if names.is_empty() {
            return Err(config_err("no weight to sparsify"));
        }
        let mut sorted = names.to_vec();
        sorted.sort();
        sorted.dedup();
        let mut slots = Vec::with_capacity(sorted.len());
        for name in sorted {
            let model = get(varmap, &name)?;
            let w = model.as_tensor();
            if w.rank() != 2 && w.rank() != 4 {
                return Err(config_err(format!("{name} has shape {:?}: not a conv or linear weight", w.dims())));
            }
            if is_own(&name) || compress_nn::network::is_buffer(&name) {
                return Err(config_err(format!("{name} is not a weight of the model")));
            }
            let dense = insert(varmap, format!("optg.{name}.dense"), &w.copy()?)?;
            let score = insert(varmap, format!("optg.{name}.score"), &w.zeros_like()?.to_dtype(DType::F32)?)?;
            let mask = insert(varmap, format!("optg.{name}.buffer_mask"), &w.ones_like()?)?;
            slots.push(Slot { name, model, dense, score, mask });
        }
        let device = slots[0].model.device().clone();
        let state = insert(varmap, STATE.into(), &Tensor::new(&[-1f64, 0.0], &device)?)?;
        Ok(Self { slots, state })
    }

    /// The sparsified weights, in name order.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Whether `name` is one of the model variables this holds (the optimizer must not update
    /// them: they are written from `W` and `M`).
    pub fn is_model_var(&self, name: &str) -> bool {
        self.slots.iter().any(|s| s.name == name)
    }

    /// `T`: entries under the budget.
    pub fn total(&self) -> usize {
        self.slots.iter().map(|s| s.model.elem_count()).sum()
    }

    /// Every slot's scores, flattened.
    pub fn scores(&self) -> Result<Vec<Vec<f32>>> {
        self.slots.iter().map(|s| values(s.score.as_tensor())).collect()
    }

    /// `|W (.) M|` of every slot, flattened (the magnitude baseline's criterion).
    pub fn magnitudes(&self) -> Result<Vec<Vec<f32>>> {
        self.slots.iter().map(|s| values(&s.model.as_tensor().abs()?)).collect()
    }

    /// The masks, flattened.
    pub fn masks(&self) -> Result<Masks> {
        self.slots.iter().map(|s| values(s.mask.as_tensor())).collect()
    }

    /// Sets the masks (one per slot, flattened) and returns how many entries changed.
    pub fn set_masks(&self, masks: &Masks) -> Result<usize> {
        if masks.len() != self.slots.len() {
            return Err(config_err(format!("{} masks for {} weights", masks.len(), self.slots.len())));
        }
        let mut changed = 0;
        for (s, m) in self.slots.iter().zip(masks) {
            let old = s.mask.as_tensor();
            if m.len() != old.elem_count() {
                return Err(config_err(format!("{}: mask of {} entries for {:?}", s.name, m.len(), old.dims())));
            }
            changed += values(old)?.iter().zip(m).filter(|(a, b)| a != b).count();
            let t = Tensor::from_slice(m, old.shape(), old.device())?.to_dtype(old.dtype())?;
            s.mask.set(&t)?;
        }
        Ok(changed)
    }

    /// `model <- W (.) M` for every slot; with `zero_pruned`, also `W <- W (.) M` (the baselines:
    /// pruned weights are zero for good).
    pub fn write_effective(&self, zero_pruned: bool) -> Result<()> {
        for s in &self.slots {
            let eff = (s.dense.as_tensor() * s.mask.as_tensor())?;
            if zero_pruned {
                s.dense.set(&eff)?;
            }
            s.model.set(&eff)?;
        }
        Ok(())
    }

    /// Replaces each model variable's gradient `G` by `G (.) M` on `W` and, with `scores`,
    /// `G (.) W` on `S` (section 2's straight-through estimator). A weight the loss did not
    /// reach is left without gradients.
    pub fn route(&self, grads: &mut GradStore, scores: bool) -> Result<()> {
        for s in &self.slots {
            let Some(g) = grads.remove(s.model.as_tensor()) else { continue };
            let g = g.detach();
            let (gw, gs) = routed_gradients(&g, &s.dense.as_tensor().detach(), s.mask.as_tensor())?;
            grads.insert(s.dense.as_tensor(), gw);
            if scores {
                grads.insert(s.score.as_tensor(), gs.to_dtype(DType::F32)?);
            }
        }
        Ok(())
    }

    /// `(name, kept, entries)` of every slot, counting non-zeros of `W (.) M`.
    pub fn kept(&self) -> Result<Vec<(String, usize, usize)>> {
        self.slots
            .iter()
            .map(|s| {
                let v = values(s.model.as_tensor())?;
                Ok((s.name.clone(), v.iter().filter(|x| **x != 0.0).count(), v.len()))
            })
            .collect()
    }

    /// The realised sparsity: zeros of `W (.) M` over the sparsified weights (biases and norms
    /// excluded, as the official count does).
    pub fn sparsity(&self) -> Result<f64> {
        let k = self.kept()?;
        let (kept, all) = k.iter().fold((0, 0), |(a, b), x| (a + x.1, b + x.2));
        Ok(1.0 - kept as f64 / all.max(1) as f64)
    }

    /// The epoch the current masks were assigned in (`None` before the first assignment).
    pub fn assigned_epoch(&self) -> Result<Option<usize>> {
        let v: Vec<f64> = self.state.as_tensor().to_vec1()?;
        Ok(if v[0] < 0.0 { None } else { Some(v[0] as usize) })
    }

    /// Entries whose mask changed at the last assignment.
    pub fn last_changes(&self) -> Result<usize> {
        let v: Vec<f64> = self.state.as_tensor().to_vec1()?;
        Ok(v[1] as usize)
    }

    /// Records an assignment in `epoch` that changed `changed` entries.
    pub fn record_assignment(&self, epoch: usize, changed: usize) -> Result<()> {
        let dev = self.state.device().clone();
        self.state.set(&Tensor::new(&[epoch as f64, changed as f64], &dev)?)?;
        Ok(())
    }

    /// Every slot's `W (.) M` in CSR over `[C_out, C_in k k]` (a KxK conv's im2col columns; a
    /// linear or 1x1 weight is its matrix): run linear ones with [`crate::deploy::CsrLinear`].
    pub fn export_csr(&self) -> Result<BTreeMap<String, Csr>> {
        self.slots
            .iter()
            .map(|s| {
                let w = s.model.as_tensor();
                let rows = w.dim(0)?;
                Ok((s.name.clone(), Csr::from_dense(&w.reshape((rows, w.elem_count() / rows.max(1)))?)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;

    fn varmap() -> VarMap {
        let vm = VarMap::new();
        let dev = Device::Cpu;
        let mut d = vm.data().lock().unwrap();
        let w = Tensor::new(&[[0.5f32, -1.0], [2.0, 0.0]], &dev).unwrap();
        d.insert("fc.weight".into(), Var::from_tensor(&w).unwrap());
        d.insert("fc.bias".into(), Var::from_tensor(&Tensor::zeros(2, DType::F32, &dev).unwrap()).unwrap());
        let c = Tensor::ones((3, 2, 3, 3), DType::F32, &dev).unwrap();
        d.insert("conv.weight".into(), Var::from_tensor(&c).unwrap());
        d.insert("bn.weight".into(), Var::from_tensor(&Tensor::ones(3, DType::F32, &dev).unwrap()).unwrap());
        drop(d);
        vm
    }

    #[test]
    fn every_conv_and_linear_weight_is_found_and_bookkeeping_is_kept_apart() {
        let vm = varmap();
        let names = sparsifiable_weights(&vm, &[]).unwrap();
        assert_eq!(names, ["conv.weight", "fc.weight"], "BN weights and biases stay dense");
        let s = Sparsified::new(&vm, &names).unwrap();
        assert_eq!(s.total(), 54 + 4);
        assert_eq!(
            sparsifiable_weights(&vm, &["conv.weight"]).unwrap(),
            ["fc.weight"],
            "own variables are not weights"
        );
        assert!(Sparsified::new(&vm, &names).unwrap_err().to_string().contains("already sparsified"));
        assert!(Sparsified::new(&vm, &["fc.bias".into()]).unwrap_err().to_string().contains("not a conv or linear"));
        assert!(Sparsified::new(&vm, &["nope.weight".into()]).unwrap_err().to_string().contains("no variable"));
        assert_eq!(s.assigned_epoch().unwrap(), None);
        s.record_assignment(3, 17).unwrap();
        assert_eq!((s.assigned_epoch().unwrap(), s.last_changes().unwrap()), (Some(3), 17));
        // The mask is a buffer (no optimizer touches it), W and S are parameters.
        let trainable: Vec<String> =
            compress_nn::network::trainable_vars(&vm).unwrap().into_iter().map(|(k, _)| k).collect();
        assert!(trainable.contains(&"optg.fc.weight.score".to_string()));
        assert!(!trainable.iter().any(|k| k.contains("buffer")));
    }

    #[test]
    fn masks_write_effective_weights_and_routes_follow_the_estimator() {
        let vm = varmap();
        let s = Sparsified::new(&vm, &["fc.weight".into()]).unwrap();
        let changed = s.set_masks(&vec![vec![1.0, 0.0, 1.0, 0.0]]).unwrap();
        assert_eq!(changed, 2);
        s.write_effective(false).unwrap();
        let model = get(&vm, "fc.weight").unwrap();
        assert_eq!(model.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(), [0.5, 0.0, 2.0, 0.0]);
        assert_eq!(s.slots()[0].dense.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()[1], -1.0);
        assert_eq!(s.sparsity().unwrap(), 0.5);
        // L = sum(G (.) model): G = [0.2, 0.3, -0.1, 0.4].
        let g = Tensor::new(&[[0.2f32, 0.3], [-0.1, 0.4]], &Device::Cpu).unwrap();
        let mut grads = (model.as_tensor() * &g).unwrap().sum_all().unwrap().backward().unwrap();
        s.route(&mut grads, true).unwrap();
        assert!(grads.get(model.as_tensor()).is_none(), "the model variable is not updated by the optimizer");
        let gw = grads.get(s.slots()[0].dense.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let gs = grads.get(s.slots()[0].score.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(gw, [0.2, 0.0, -0.1, 0.0]);
        assert!(gs.iter().zip([0.1f32, -0.3, -0.2, 0.0]).all(|(a, b)| (a - b).abs() < 1e-7), "{gs:?}");
        // The baselines zero pruned weights for good.
        s.write_effective(true).unwrap();
        assert_eq!(s.slots()[0].dense.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()[1], 0.0);
        let csr = s.export_csr().unwrap();
        assert_eq!((csr["fc.weight"].nnz(), csr["fc.weight"].rows, csr["fc.weight"].cols), (2, 2, 2));
    }
}
