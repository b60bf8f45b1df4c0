//! 1xN pruning of any candle model's weights, by their names in its `VarMap` (a candle-nn or
//! candle-transformers model built through `VarBuilder::from_varmap`): the layers share the
//! variables, so masking them in place prunes the model.
//!
//! Weights alone carry no channel structure, so filter rearrangement (which permutes a layer's
//! outputs and its consumers' inputs) is refused here: it needs the network's channel groups
//! ([`crate::deploy::rearrange`] on a `compress_nn::Network`). Without it the blocks are the
//! layer's own consecutive output channels, as in the paper's "1xN w/o rearrangement" rows.

use crate::error::{OnexnError, Result};
use crate::pattern::{Pattern, layer_mask};
use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use compress_core::sparse::Bsr1xN;
use std::collections::BTreeMap;

/// The masks of a model's pruned weights, by variable name (`<layer>.weight`).
#[derive(Debug, Clone)]
pub struct WeightMasks {
    masks: BTreeMap<String, Tensor>,
}

fn var(varmap: &VarMap, name: &str) -> Result<Var> {
    let data = varmap.data().lock().map_err(|_| OnexnError::Poisoned)?;
    data.get(name).cloned().ok_or_else(|| {
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        let near: Vec<&String> = names.into_iter().filter(|n| n.ends_with(".weight")).take(8).collect();
        OnexnError::Config(format!("the VarMap has no variable {name:?} (weights there include {near:?})"))
    })
}

/// The names of the weights of `varmap` that a 1xN pattern of block height `n` can prune: conv
/// (`[C_out, C_in, k, k]`) and linear (`[C_out, C_in]`) weights with `C_out` a multiple of `n`
/// and more than one input channel, sorted; `exclude` drops names (e.g. the first conv and the
/// classifier, which the paper keeps dense).
pub fn prunable_weights(varmap: &VarMap, n: usize, exclude: &[&str]) -> Result<Vec<String>> {
    let data = varmap.data().lock().map_err(|_| OnexnError::Poisoned)?;
    let mut v: Vec<String> = data
        .iter()
        .filter(|(k, t)| {
            let d = t.dims();
            k.ends_with(".weight")
                && (d.len() == 2 || d.len() == 4)
                && n > 0
                && d[0].is_multiple_of(n)
                && d[1] > 1
                && !exclude.contains(&k.as_str())
        })
        .map(|(k, _)| k.clone())
        .collect();
    v.sort();
    Ok(v)
}

/// Prunes each named weight of `varmap` in place at `rate` with `pattern` (every layer the same
/// rate, as the paper does) and returns the masks. A rearranged 1xN pattern is refused (see the
/// module documentation).
pub fn prune_weights(varmap: &VarMap, names: &[String], pattern: Pattern, rate: f64) -> Result<WeightMasks> {
    if let Pattern::Block(b) = pattern
        && b.rearrange
    {
        return Err(OnexnError::Config(
            "filter rearrangement permutes channels across layers and needs the network's channel groups; \
             on weights alone use OneByN { rearrange: false, .. }"
                .into(),
        ));
    }
    let mut masks = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let v = var(varmap, name)?;
        let w = v.as_tensor();
        if w.rank() != 2 && w.rank() != 4 {
            return Err(OnexnError::Config(format!("{name} has shape {:?}: not a conv or linear weight", w.dims())));
        }
        let m = layer_mask(&w.to_dtype(DType::F32)?, pattern, rate, i)?.mask.to_dtype(w.dtype())?;
        masks.insert(name.clone(), m);
    }
    let out = WeightMasks { masks };
    out.apply(varmap)?;
    Ok(out)
}

impl WeightMasks {
    /// `W <- W (.) M` for every masked weight: after each optimizer step of a fine-tuning, this
    /// keeps the pruned entries at zero (momentum and decay cannot revive them).
    pub fn apply(&self, varmap: &VarMap) -> Result<()> {
        for (name, m) in &self.masks {
            let v = var(varmap, name)?;
            if v.dims() != m.dims() {
                return Err(OnexnError::Config(format!("{name} is {:?}, its mask {:?}", v.dims(), m.dims())));
            }
            v.set(&(v.as_tensor() * m)?)?;
        }
        Ok(())
    }

    /// The masks, by weight name.
    pub fn masks(&self) -> &BTreeMap<String, Tensor> {
        &self.masks
    }

    /// Fraction of the masked weights' entries that are kept.
    pub fn density(&self) -> Result<f64> {
        let (mut kept, mut all) = (0.0, 0usize);
        for m in self.masks.values() {
            kept += m.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
            all += m.elem_count();
        }
        Ok(kept / all.max(1) as f64)
    }

    /// Each masked weight packed in the 1xN format with blocks of `n` output channels (save one
    /// with [`Bsr1xN::save`]; run it with `compress_core::sparse::{PackedConv2d, PackedLinear}`).
    pub fn pack(&self, varmap: &VarMap, n: usize) -> Result<BTreeMap<String, Bsr1xN>> {
        self.masks
            .keys()
            .map(|name| {
                let w = var(varmap, name)?.as_tensor().to_dtype(DType::F32)?;
                Ok((name.clone(), Bsr1xN::from_dense(&w, n)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::OneByN;
    use candle_core::Device;

    fn varmap() -> VarMap {
        let vm = VarMap::new();
        let w: Vec<f32> = (0..8 * 6 * 9).map(|i| ((i * 29 % 97) as f32 - 48.0) / 50.0).collect();
        let t = Tensor::from_vec(w, (8, 6, 3, 3), &Device::Cpu).expect("w");
        vm.data().lock().expect("lock").insert("conv.weight".into(), Var::from_tensor(&t).expect("var"));
        let l = Tensor::ones((3, 8), DType::F32, &Device::Cpu).expect("l");
        vm.data().lock().expect("lock").insert("fc.weight".into(), Var::from_tensor(&l).expect("var"));
        vm
    }

    #[test]
    fn masks_in_place_are_whole_blocks_at_the_rate_and_pack_exactly() {
        let vm = varmap();
        let names = prunable_weights(&vm, 4, &[]).expect("names");
        assert_eq!(names, ["conv.weight"], "fc has 3 outputs: not a multiple of 4");
        let masks = prune_weights(&vm, &names, Pattern::Block(OneByN::l1(4, false)), 0.5).expect("prune");
        // floor(0.5 x (8/4 x 6)) = 6 of 12 blocks pruned, each 4 outputs x 9 taps.
        assert!((masks.density().expect("density") - 0.5).abs() < 1e-12);
        let w = var(&vm, "conv.weight").expect("w").as_tensor().copy().expect("copy");
        let zero_blocks = (0..2)
            .flat_map(|g| (0..6).map(move |j| (g, j)))
            .filter(|&(g, j)| {
                let b = w.narrow(0, 4 * g, 4).and_then(|t| t.narrow(1, j, 1)).expect("block");
                b.abs().and_then(|a| a.sum_all()).and_then(|s| s.to_scalar::<f32>()).expect("sum") == 0.0
            })
            .count();
        assert_eq!(zero_blocks, 6);
        let packed = masks.pack(&vm, 4).expect("pack");
        assert_eq!(packed["conv.weight"].nnzb(), 6);
        let back = packed["conv.weight"].to_dense(&Device::Cpu).expect("dense");
        assert_eq!(back.dims(), w.dims());
        let diff = (back - &w).expect("d").abs().expect("a").max_all().expect("m").to_scalar::<f32>().expect("s");
        assert_eq!(diff, 0.0);
    }

    #[test]
    fn rearrangement_and_unknown_names_are_refused_with_reasons() {
        let vm = varmap();
        let e = prune_weights(&vm, &["conv.weight".into()], Pattern::Block(OneByN::l1(4, true)), 0.5)
            .expect_err("rearrange");
        assert!(e.to_string().contains("channel groups"), "{e}");
        let e =
            prune_weights(&vm, &["conv1.weight".into()], Pattern::Block(OneByN::l1(4, false)), 0.5).expect_err("name");
        assert!(e.to_string().contains("no variable \"conv1.weight\""), "{e}");
    }
}
