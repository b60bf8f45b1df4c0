//! k-reciprocal nearest filters (RNF, section 2.3): every filter recommends its `k` nearest
//! filters; the kept set is the intersection of all recommendation lists, `k` grown from `m`
//! until it holds `m` filters. Filters near every other one ("hubs") are kept, outliers dropped.

use crate::error::{Result, config_err};
use candle_core::{DType, Tensor};

/// RNF's choice for one layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RnfResult {
    /// `m` distinct filter indices, ascending.
    pub kept: Vec<usize>,
    /// The `k` at which the intersection first held `m` filters (`m <= k <= C`).
    pub k: usize,
}

/// The rows of a `[C, ...]` weight, flattened, in f32.
pub fn filter_rows(weight: &Tensor) -> Result<Vec<Vec<f32>>> {
    if weight.rank() < 2 {
        return Err(config_err(format!("filters need a weight of rank >= 2, got {:?}", weight.dims())));
    }
    Ok(weight.flatten_from(1)?.to_dtype(DType::F32)?.to_vec2()?)
}

/// `D_ij = max(0, ||w_i||^2 + ||w_j||^2 - 2 <w_i, w_j>)` between the rows of `a` and of `b`, in
/// f64 (the expanded form the official code uses).
pub fn squared_distances(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<Vec<f64>> {
    let norm = |v: &Vec<f32>| v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>();
    let (na, nb): (Vec<f64>, Vec<f64>) = (a.iter().map(norm).collect(), b.iter().map(norm).collect());
    a.iter()
        .zip(&na)
        .map(|(u, &nu)| {
            b.iter()
                .zip(&nb)
                .map(|(v, &nv)| {
                    let dot: f64 = u.iter().zip(v).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
                    (nu + nv - 2.0 * dot).max(0.0)
                })
                .collect()
        })
        .collect()
}

/// Each filter's neighbours, nearest first (itself first: `D_ii = 0`); ties by ascending index.
pub fn neighbour_orders(rows: &[Vec<f32>]) -> Vec<Vec<usize>> {
    let mut d = squared_distances(rows, rows);
    for (i, r) in d.iter_mut().enumerate() {
        r[i] = 0.0;
    }
    d.iter()
        .enumerate()
        .map(|(i, r)| {
            let mut order: Vec<usize> = (0..r.len()).collect();
            // `i` first even when another filter is at distance 0 (a duplicate).
            order.sort_by(|&a, &b| r[a].total_cmp(&r[b]).then((a != i).cmp(&(b != i))).then(a.cmp(&b)));
            order
        })
        .collect()
}

/// RNF on the filters `rows`, keeping `m` of them.
///
/// `I_k = intersection over i of N_k(i)`: filter `j` is in `I_k` when its worst rank
/// `r_j = max_i rank_i(j)` is below `k`. From `k = m`: `|I_k| = m` returns `I_k`; `|I_k| > m`
/// returns `I_{k-1}` topped up from `I_k \ I_{k-1}` in ascending index; otherwise `k + 1`.
pub fn rnf_select_rows(rows: &[Vec<f32>], m: usize) -> Result<RnfResult> {
    let c = rows.len();
    if m == 0 || m > c {
        return Err(config_err(format!("RNF cannot keep {m} of {c} filters")));
    }
    if rows.iter().flatten().any(|x| !x.is_finite()) {
        return Err(config_err("RNF got a non-finite filter weight"));
    }
    let orders = neighbour_orders(rows);
    let mut worst = vec![0usize; c];
    for order in &orders {
        for (rank, &j) in order.iter().enumerate() {
            worst[j] = worst[j].max(rank);
        }
    }
    for k in m..=c {
        let size = worst.iter().filter(|&&r| r < k).count();
        if size < m {
            continue;
        }
        let mut kept: Vec<usize> = (0..c).filter(|&j| worst[j] < k - 1).collect();
        if size == m {
            kept = (0..c).filter(|&j| worst[j] < k).collect();
        } else {
            let fill = m - kept.len();
            kept.extend((0..c).filter(|&j| worst[j] == k - 1).take(fill));
            kept.sort_unstable();
        }
        return Ok(RnfResult { kept, k });
    }
    // I_C holds every filter, so the loop always returns.
    Err(config_err("RNF found no intersection (unreachable)"))
}

/// RNF on a conv or linear weight `[C, ...]`.
pub fn rnf_select(weight: &Tensor, m: usize) -> Result<RnfResult> {
    rnf_select_rows(&filter_rows(weight)?, m)
}

/// The official diagnostic: `A = rownorm(exp(-D(W, W)))`, `B = rownorm(exp(-D(W, W_K)))`,
/// `loss = ||A - B B^T||_1 / C^2` (row norms L2).
pub fn graph_loss(weight: &Tensor, kept: &[usize]) -> Result<f32> {
    let rows = filter_rows(weight)?;
    let c = rows.len();
    if kept.is_empty() || kept.iter().any(|&k| k >= c) {
        return Err(config_err(format!("kept set {kept:?} for {c} filters")));
    }
    let sub: Vec<Vec<f32>> = kept.iter().map(|&k| rows[k].clone()).collect();
    let rownorm = |d: Vec<Vec<f64>>| -> Vec<Vec<f64>> {
        d.into_iter()
            .map(|r| {
                let e: Vec<f64> = r.iter().map(|x| (-x).exp()).collect();
                let n = e.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
                e.into_iter().map(|x| x / n).collect()
            })
            .collect()
    };
    let a = rownorm(squared_distances(&rows, &rows));
    let b = rownorm(squared_distances(&rows, &sub));
    let mut loss = 0f64;
    for i in 0..c {
        for j in 0..c {
            let bb: f64 = b[i].iter().zip(&b[j]).map(|(x, y)| x * y).sum();
            loss += (a[i][j] - bb).abs();
        }
    }
    Ok((loss / (c * c) as f64) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use proptest::prelude::*;

    fn example() -> Vec<Vec<f32>> {
        vec![vec![0.0, 0.0], vec![1.0, 0.0], vec![0.0, 2.0], vec![1.5, 1.2], vec![6.0, 5.0]]
    }

    /// Section 8, RNF: neighbour orders and the four selections.
    #[test]
    fn the_worked_example() {
        let orders = neighbour_orders(&example());
        assert_eq!(
            orders,
            [[0, 1, 3, 2, 4], [1, 0, 3, 2, 4], [2, 3, 0, 1, 4], [3, 1, 2, 0, 4], [4, 3, 2, 1, 0]].map(|o| o.to_vec())
        );
        let sel = |m| rnf_select_rows(&example(), m).unwrap();
        assert_eq!(sel(1), RnfResult { kept: vec![3], k: 3 });
        assert_eq!(sel(2), RnfResult { kept: vec![1, 3], k: 4 }, "I_3 = {{3}} topped up from I_4, not I_4 cut");
        assert_eq!(sel(3), RnfResult { kept: vec![1, 2, 3], k: 4 });
        assert_eq!(sel(4), RnfResult { kept: vec![0, 1, 2, 3], k: 5 });
        assert_eq!(sel(5), RnfResult { kept: vec![0, 1, 2, 3, 4], k: 5 }, "the outlier only at m = 5");
        assert!(rnf_select_rows(&example(), 0).is_err() && rnf_select_rows(&example(), 6).is_err());
    }

    #[test]
    fn tensor_input_and_graph_loss() {
        let w = Tensor::new(&[[0f32, 0.0], [1.0, 0.0]], &Device::Cpu).unwrap();
        assert_eq!(rnf_select(&w, 1).unwrap().kept.len(), 1);
        // Two filters at squared distance 1: A = rownorm([[1, e^-1], [e^-1, 1]]); keeping filter
        // 0, B = rownorm([[1], [e^-1]]) = [[1], [1]], so B B^T is all ones.
        let e = (-1f64).exp();
        let n = (1.0 + e * e).sqrt();
        let expect = (2.0 * (1.0 - 1.0 / n) + 2.0 * (1.0 - e / n)) / 4.0;
        let got = graph_loss(&w, &[0]).unwrap();
        assert!((f64::from(got) - expect).abs() < 1e-6, "{got} vs {expect}");
        assert!(graph_loss(&w, &[2]).is_err() && graph_loss(&w, &[]).is_err());
        let bad = Tensor::new(&[[f32::NAN, 0.0], [1.0, 0.0]], &Device::Cpu).unwrap();
        assert!(rnf_select(&bad, 1).is_err());
    }

    proptest! {
        /// m distinct sorted indices, m <= k <= C, everything at m = C, and the kept set is
        /// always a superset of I_{k-1} inside I_k.
        #[test]
        fn selections_are_well_formed(c in 1usize..12, d in 1usize..5, seed in any::<u64>(), frac in 0.0f64..1.0) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let rows: Vec<Vec<f32>> = (0..c).map(|_| (0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect();
            let m = ((c as f64 * frac) as usize).clamp(1, c);
            let r = rnf_select_rows(&rows, m).unwrap();
            prop_assert_eq!(r.kept.len(), m);
            prop_assert!(r.kept.windows(2).all(|w| w[0] < w[1]) && r.kept.iter().all(|&k| k < c));
            prop_assert!(m <= r.k && r.k <= c);
            let orders = neighbour_orders(&rows);
            let inter = |k: usize| -> Vec<usize> { (0..c).filter(|j| orders.iter().all(|o| o[..k].contains(j))).collect() };
            let (lo, hi) = (inter(r.k - 1), inter(r.k));
            prop_assert!(lo.len() < m && hi.len() >= m);
            prop_assert!(lo.iter().all(|j| r.kept.contains(j)) && r.kept.iter().all(|j| hi.contains(j)));
            prop_assert_eq!(rnf_select_rows(&rows, c).unwrap().kept, (0..c).collect::<Vec<_>>());
        }
    }
}
