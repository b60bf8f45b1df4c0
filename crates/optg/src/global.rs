//! One global budget over every sparsified layer (spec section 2, "Mask assignment"):
//! `keep = floor(T (1 - p))` of the `T` concatenated scores survive.
//!
//! - OptG ([`threshold_masks`]): `tau` is the `keep`-th largest raw score; a layer prunes its
//!   `k_l` scores strictly below `tau` (ties at `tau` are all kept, so with all-zero scores
//!   nothing is pruned), the first `k_l` of its stable ascending order.
//! - The baselines ([`exact_masks`]): exactly `T - keep` lowest scores pruned, ties broken by
//!   position (layer order, then index), so the realised sparsity is the rate's.

use crate::error::{Result, config_err};

/// How a layer's pruned count follows from `tau`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Counting {
    /// `k_l` = the number of its scores strictly below `tau`.
    #[default]
    Exact,
    /// The official code's round trip `int((k_l / n_l) n_l)` (a float rate stored and
    /// re-multiplied), which sometimes prunes `k_l - 1` (`k_l = 15, n_l = 22` gives 14).
    OfficialRounding,
}

impl Counting {
    /// The pruned count of a layer of `n` scores with `k` below `tau`.
    pub fn pruned(self, k: usize, n: usize) -> usize {
        match self {
            Counting::Exact => k,
            Counting::OfficialRounding if n > 0 => ((k as f64 / n as f64) * n as f64) as usize,
            Counting::OfficialRounding => 0,
        }
    }
}

/// `keep = floor(T (1 - p))`.
pub fn keep_count(total: usize, rate: f64) -> Result<usize> {
    if !(0.0..=1.0).contains(&rate) {
        return Err(config_err(format!("sparsity {rate} is not in [0, 1]")));
    }
    Ok((total as f64 * (1.0 - rate)).floor() as usize)
}

fn check(scores: &[Vec<f32>]) -> Result<usize> {
    if let Some(l) = scores.iter().position(|s| s.iter().any(|v| v.is_nan())) {
        return Err(config_err(format!("layer {l} has NaN scores")));
    }
    Ok(scores.iter().map(Vec::len).sum())
}

/// The `keep`-th largest of all scores; the largest when `keep = 0` (a budget below one weight
/// keeps the top score and its ties, so all-zero scores prune nothing at any `p`).
pub fn threshold(scores: &[Vec<f32>], keep: usize) -> f32 {
    let mut all: Vec<f32> = scores.iter().flatten().copied().collect();
    if all.is_empty() {
        return f32::INFINITY;
    }
    let k = keep.clamp(1, all.len()) - 1;
    *all.select_nth_unstable_by(k, |a, b| b.total_cmp(a)).1
}

/// A mask per layer (1 kept, 0 pruned), in the layers' order.
pub type Masks = Vec<Vec<f32>>;

/// Ascending stable order of a layer's scores: position `i` of the result is the index of its
/// `i`-th lowest score, ties in index order.
fn ascending(s: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..s.len()).collect();
    order.sort_by(|&a, &b| s[a].total_cmp(&s[b]));
    order
}

/// OptG's assignment at rate `rate`: per layer, the first `counting.pruned(k_l, n_l)` entries of
/// its stable ascending order are pruned, `k_l` its scores strictly below `tau`.
pub fn threshold_masks(scores: &[Vec<f32>], rate: f64, counting: Counting) -> Result<Masks> {
    let total = check(scores)?;
    let tau = threshold(scores, keep_count(total, rate)?);
    Ok(scores
        .iter()
        .map(|s| {
            let below = s.iter().filter(|&&v| v < tau).count();
            let mut m = vec![1f32; s.len()];
            for &i in ascending(s).iter().take(counting.pruned(below, s.len())) {
                m[i] = 0.0;
            }
            m
        })
        .collect())
}

/// Exactly `T - floor(T (1 - p))` lowest scores pruned, ties by (layer, index).
pub fn exact_masks(scores: &[Vec<f32>], rate: f64) -> Result<Masks> {
    let total = check(scores)?;
    let prune = total - keep_count(total, rate)?;
    let mut all: Vec<(f32, usize, usize)> =
        scores.iter().enumerate().flat_map(|(l, s)| s.iter().enumerate().map(move |(i, &v)| (v, l, i))).collect();
    if prune < all.len() {
        all.select_nth_unstable_by(prune, |a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    }
    let mut masks: Masks = scores.iter().map(|s| vec![1f32; s.len()]).collect();
    for &(_, l, i) in &all[..prune] {
        masks[l][i] = 0.0;
    }
    Ok(masks)
}

/// Entries pruned per layer.
pub fn pruned_per_layer(masks: &Masks) -> Vec<usize> {
    masks.iter().map(|m| m.iter().filter(|&&v| v == 0.0).count()).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_global_example_of_section_8() {
        let a = vec![0.5, -0.2, 0.9, 0.1, 0.3, -0.4];
        let b = vec![0.05, 0.7, -0.1, 0.2];
        let scores = vec![a, b];
        assert_eq!(keep_count(10, 0.5).unwrap(), 5);
        assert_eq!(threshold(&scores, 5), 0.2);
        let m = threshold_masks(&scores, 0.5, Counting::Exact).unwrap();
        assert_eq!(m[0], [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        assert_eq!(m[1], [0.0, 1.0, 0.0, 1.0], "B's 0.2 equals tau and is kept");
        assert_eq!(pruned_per_layer(&m), [3, 2]);
        assert_eq!(exact_masks(&scores, 0.5).unwrap(), m, "distinct scores: both rules agree");
    }

    #[test]
    fn all_zero_scores_prune_nothing_and_ties_at_tau_are_kept() {
        let zeros = vec![vec![0f32; 7], vec![0f32; 5]];
        for p in [0.1, 0.5, 0.9, 0.999, 1.0] {
            let m = threshold_masks(&zeros, p, Counting::Exact).unwrap();
            assert!(m.iter().flatten().all(|&v| v == 1.0), "p = {p}");
        }
        // Three scores tie at tau = 0.5: all kept, so 4 survive where keep = 3.
        let tied = vec![vec![0.5, 0.5, 0.5, 0.1, 0.9, 0.0]];
        assert_eq!(keep_count(6, 0.5).unwrap(), 3);
        assert_eq!(threshold(&tied, 3), 0.5);
        let m = threshold_masks(&tied, 0.5, Counting::Exact).unwrap();
        assert_eq!(m[0], [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]);
        // The baselines' exact rule prunes exactly T - keep: ties broken by index.
        let e = exact_masks(&tied, 0.7).unwrap();
        assert_eq!(e[0], [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        let e = exact_masks(&tied, 0.5).unwrap();
        assert_eq!(e[0], [0.0, 1.0, 1.0, 0.0, 1.0, 0.0], "the first of the tied 0.5s goes");
    }

    #[test]
    fn the_official_rounding_prunes_one_fewer_where_the_float_round_trip_truncates() {
        assert_eq!(Counting::OfficialRounding.pruned(15, 22), 14);
        assert_eq!(Counting::Exact.pruned(15, 22), 15);
        assert_eq!(Counting::OfficialRounding.pruned(11, 22), 11);
        // A 22-entry layer with 15 scores below tau keeps its 15th-lowest in compat mode.
        let s: Vec<f32> = (0..22).map(|i| i as f32).collect();
        let other: Vec<f32> = vec![100.0; 10];
        // T = 32, keep = floor(32 x 0.53125) = 17: tau = 15, the 15 scores 0..14 are below it.
        let rate = 15.0 / 32.0;
        let exact = threshold_masks(&[s.clone(), other.clone()], rate, Counting::Exact).unwrap();
        let compat = threshold_masks(&[s, other], rate, Counting::OfficialRounding).unwrap();
        assert_eq!(pruned_per_layer(&exact), [15, 0]);
        assert_eq!(pruned_per_layer(&compat), [14, 0]);
        assert_eq!(compat[0][14], 1.0, "the highest of the below-tau scores survives");
    }

    #[test]
    fn bad_rates_and_nan_scores_are_refused() {
        assert!(keep_count(10, 1.5).is_err() && keep_count(10, -0.1).is_err() && keep_count(10, f64::NAN).is_err());
        let e = threshold_masks(&[vec![0.1, f32::NAN]], 0.5, Counting::Exact).unwrap_err();
        assert!(e.to_string().contains("NaN"), "{e}");
        // p = 1 keeps the top score (and its ties) under OptG's rule, nothing under the exact one; p = 0
        // prunes nothing.
        let s = vec![vec![0.3, -0.1], vec![0.2]];
        assert_eq!(threshold_masks(&s, 1.0, Counting::Exact).unwrap(), [vec![1.0, 0.0], vec![0.0]]);
        assert!(exact_masks(&s, 1.0).unwrap().iter().flatten().all(|&v| v == 0.0));
        assert!(exact_masks(&s, 0.0).unwrap().iter().flatten().all(|&v| v == 1.0));
    }

    proptest! {
        /// Counting (section 8): with distinct scores, total zeros = T - keep, and every layer's
        /// zeros are its lowest-scored entries.
        #[test]
        fn distinct_scores_prune_exactly_t_minus_keep_lowest(sizes in proptest::collection::vec(1usize..40, 1..5),
                                                              rate in 0.0f64..1.0, seed in 0u64..1000) {
            let mut k = seed;
            let scores: Vec<Vec<f32>> = sizes.iter().enumerate().map(|(l, &n)| (0..n).map(|i| {
                k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                // distinct: a unique offset per entry
                ((k >> 40) as f32 / 16_777_216.0 - 0.5) + (l * 64 + i) as f32 * 1e-4
            }).collect()).collect();
            let total: usize = sizes.iter().sum();
            let keep = keep_count(total, rate).unwrap();
            let m = threshold_masks(&scores, rate, Counting::Exact).unwrap();
            let zeros: usize = pruned_per_layer(&m).iter().sum();
            prop_assert_eq!(zeros, total - keep.max(1));
            if keep > 0 {
                prop_assert_eq!(&m, &exact_masks(&scores, rate).unwrap());
            }
            for (s, mk) in scores.iter().zip(&m) {
                let max_pruned = s.iter().zip(mk).filter(|p| *p.1 == 0.0).map(|p| *p.0).fold(f32::MIN, f32::max);
                let min_kept = s.iter().zip(mk).filter(|p| *p.1 == 1.0).map(|p| *p.0).fold(f32::MAX, f32::min);
                prop_assert!(max_pruned < min_kept);
            }
        }
    }
}
