//! Which filters to keep: top-k of scores, and the magnitude (L1) criterion of Li et al. (2017).

use crate::error::{Result, config_err};
use candle_core::{D, DType, Tensor};
use compress_nn::structure::Role;
use compress_nn::{ArchConfig, Architecture, Network};
use std::collections::BTreeMap;

/// Indices of the `k` largest scores, in ascending index order (stable channel positions).
/// Ties prefer the lower index; NaN scores rank last.
pub fn top_k(scores: &[f32], k: usize) -> Result<Vec<usize>> {
    if k == 0 || k > scores.len() {
        return Err(config_err(format!("cannot keep {k} of {} filters", scores.len())));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    let key = |i: usize| if scores[i].is_nan() { f32::NEG_INFINITY } else { scores[i] };
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    let mut kept = order[..k].to_vec();
    kept.sort_unstable();
    Ok(kept)
}

/// `||w_j||_1` of every filter `j` (row of axis 0) of a conv or linear weight.
pub fn filter_l1(weight: &Tensor) -> Result<Vec<f32>> {
    Ok(weight.flatten_from(1)?.abs()?.sum(D::Minus1)?.to_dtype(DType::F32)?.to_vec1()?)
}

/// For every prunable group whose width `target` lowers, the channels with the largest L1 norm,
/// summed over the group's producing conv and linear weights (a residual stage sums the filters
/// of every convolution that writes it).
pub fn magnitude_kept<A: Architecture>(net: &Network<A>, target: &A::Config) -> Result<BTreeMap<String, Vec<usize>>> {
    let tensors = net.tensors()?;
    let mut kept = BTreeMap::new();
    for g in net.config.groups() {
        let want = match target.widths().get(&g.name) {
            Some(&w) => w,
            // A fixed group a config does not list as a width (a declared network's output).
            None if !g.prunable => continue,
            None => return Err(config_err(format!("target lacks {}", g.name))),
        };
        if want == g.width {
            continue;
        }
        if !g.prunable || want > g.width {
            return Err(config_err(format!("group {} cannot go from {} to {want} channels", g.name, g.width)));
        }
        let mut score = vec![0f32; g.width];
        for m in g.members.iter().filter(|m| m.role == Role::Produce && m.tensor.ends_with(".weight")) {
            let t = tensors.get(&m.tensor).ok_or_else(|| config_err(format!("missing {}", m.tensor)))?;
            if t.rank() < 2 {
                continue; // a norm's scale, not a filter
            }
            let l1 = filter_l1(t)?;
            for (c, s) in score.iter_mut().enumerate() {
                *s += m.indices(c).map(|i| l1.get(i).copied().unwrap_or(0.0)).sum::<f32>();
            }
        }
        kept.insert(g.name.clone(), top_k(&score, want)?);
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_sorted_and_breaks_ties_low() {
        assert_eq!(top_k(&[0.1, 0.9, 0.5, 0.9], 2).unwrap(), vec![1, 3]);
        assert_eq!(top_k(&[1.0, 1.0, 1.0], 2).unwrap(), vec![0, 1]);
        assert_eq!(top_k(&[f32::NAN, 0.0, -1.0], 2).unwrap(), vec![1, 2]);
        assert!(top_k(&[1.0], 0).is_err() && top_k(&[1.0], 2).is_err());
    }

    #[test]
    fn l1_of_filters() {
        let w = Tensor::new(&[[[[1f32, -2.0]]], [[[0.5, 0.5]]]], &candle_core::Device::Cpu).unwrap();
        assert_eq!(filter_l1(&w).unwrap(), vec![3.0, 1.0]);
    }
}
