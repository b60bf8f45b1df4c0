//! Masks of the 1xN paper and its baselines (spec section 2), each with an exact count and
//! deterministic ties. A mask has the weight's shape, 1 where kept, 0 where pruned.

use super::{Result, SparseError, check_rate, dims, smallest};
use candle_core::{DType, Tensor};

/// How 1xN blocks are laid out when `C_out % N != 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum BlockOrder {
    /// Blocks are N consecutive outputs of one input channel; `C_out % N != 0` is an error.
    #[default]
    Strict,
    /// The official code's flat rows: W viewed as `[C_in][C_out][K]`, cut into rows of `N K`
    /// values, whatever `C_out % N` (rows may straddle two input channels).
    Compat,
}

fn values(w: &Tensor) -> Result<Vec<f32>> {
    Ok(w.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
}

fn to_mask(keep: Vec<f32>, w: &Tensor) -> Result<Tensor> {
    Ok(Tensor::from_vec(keep, w.shape(), w.device())?.to_dtype(w.dtype())?)
}

/// `s[g][j] = sum |W[gN..(g+1)N, j, :, :]|`, row-major `[C_out / N, C_in]` (Strict layout).
pub fn block_scores(w: &Tensor, n: usize) -> Result<Vec<f32>> {
    let (c_out, c_in, kk) = dims(w)?;
    if n == 0 || c_out % n != 0 {
        return Err(SparseError::BlockSize { n, c_out });
    }
    let v = values(w)?;
    let g_count = c_out / n;
    let mut s = vec![0f32; g_count * c_in];
    for o in 0..c_out {
        for j in 0..c_in {
            let base = (o * c_in + j) * kk;
            s[(o / n) * c_in + j] += v[base..base + kk].iter().map(|x| x.abs()).sum::<f32>();
        }
    }
    Ok(s)
}

/// The 1xN mask: the `floor(rate B)` blocks of lowest L1 score are zero. Ties prune the block
/// of lower flat row `r = j G + g` first (the official code's row order).
pub fn block_mask(w: &Tensor, n: usize, rate: f64, order: BlockOrder) -> Result<Tensor> {
    check_rate(rate)?;
    let (c_out, c_in, kk) = dims(w)?;
    if n == 0 {
        return Err(SparseError::BlockSize { n, c_out });
    }
    let v = values(w)?;
    let mut keep = vec![1f32; v.len()];
    match order {
        BlockOrder::Strict => {
            let s = block_scores(w, n)?;
            let g_count = c_out / n;
            // Score by flat row r = j G + g.
            let by_row: Vec<f32> = (0..s.len()).map(|r| s[(r % g_count) * c_in + r / g_count]).collect();
            let k = (rate * s.len() as f64).floor() as usize;
            for r in smallest(&by_row, k) {
                let (g, j) = (r % g_count, r / g_count);
                for o in g * n..(g + 1) * n {
                    keep[(o * c_in + j) * kk..(o * c_in + j + 1) * kk].fill(0.0);
                }
            }
        }
        BlockOrder::Compat => {
            // Entry (o, j, t) sits at flat position (j C_out + o) K + t of the [C_in][C_out][K] view.
            let row_len = n * kk;
            let total = c_in * c_out * kk;
            let rows = total.div_ceil(row_len);
            let pos = |o: usize, j: usize, t: usize| (j * c_out + o) * kk + t;
            let mut s = vec![0f32; rows];
            for o in 0..c_out {
                for j in 0..c_in {
                    for t in 0..kk {
                        s[pos(o, j, t) / row_len] += v[(o * c_in + j) * kk + t].abs();
                    }
                }
            }
            let k = (rate * rows as f64).floor() as usize;
            let pruned: std::collections::BTreeSet<usize> = smallest(&s, k).into_iter().collect();
            for o in 0..c_out {
                for j in 0..c_in {
                    for t in 0..kk {
                        if pruned.contains(&(pos(o, j, t) / row_len)) {
                            keep[(o * c_in + j) * kk + t] = 0.0;
                        }
                    }
                }
            }
        }
    }
    to_mask(keep, w)
}

/// Unstructured magnitude mask: the `floor(rate numel)` smallest `|w|` are zero.
pub fn weight_mask(w: &Tensor, rate: f64) -> Result<Tensor> {
    check_rate(rate)?;
    let v: Vec<f32> = values(w)?.iter().map(|x| x.abs()).collect();
    let mut keep = vec![1f32; v.len()];
    for i in smallest(&v, (rate * v.len() as f64).floor() as usize) {
        keep[i] = 0.0;
    }
    to_mask(keep, w)
}

/// Filter mask: the `floor(rate C_out)` filters of smallest L1 norm are zero.
pub fn filter_mask(w: &Tensor, rate: f64) -> Result<Tensor> {
    check_rate(rate)?;
    let (c_out, _, _) = dims(w)?;
    let v = values(w)?;
    let per = v.len() / c_out.max(1);
    let l1: Vec<f32> = (0..c_out).map(|o| v[o * per..(o + 1) * per].iter().map(|x| x.abs()).sum()).collect();
    let mut keep = vec![1f32; v.len()];
    for o in smallest(&l1, (rate * c_out as f64).floor() as usize) {
        keep[o * per..(o + 1) * per].fill(0.0);
    }
    to_mask(keep, w)
}

/// N:M mask along the input channels: in every run of `m` consecutive input channels of one
/// output channel (and tap), the `n` largest `|w|` are kept.
pub fn n_m_mask(w: &Tensor, n: usize, m: usize) -> Result<Tensor> {
    let (c_out, c_in, kk) = dims(w)?;
    if m == 0 || n > m || c_in % m != 0 {
        return Err(SparseError::BlockSize { n: m, c_out: c_in });
    }
    let v = values(w)?;
    let mut keep = vec![0f32; v.len()];
    for o in 0..c_out {
        for t in 0..kk {
            for start in (0..c_in).step_by(m) {
                let idx: Vec<usize> = (start..start + m).map(|j| (o * c_in + j) * kk + t).collect();
                let neg: Vec<f32> = idx.iter().map(|&i| -v[i].abs()).collect();
                for k in smallest(&neg, n) {
                    keep[idx[k]] = 1.0;
                }
            }
        }
    }
    to_mask(keep, w)
}

/// Output channels ordered by descending filter L1 norm (stable: ties keep the lower index first).
pub fn filter_l1_perm(w: &Tensor) -> Result<Vec<usize>> {
    let (c_out, _, _) = dims(w)?;
    let v = values(w)?;
    let per = v.len() / c_out.max(1);
    let l1: Vec<f32> = (0..c_out).map(|o| v[o * per..(o + 1) * per].iter().map(|x| x.abs()).sum()).collect();
    let mut order: Vec<usize> = (0..c_out).collect();
    order.sort_by(|&a, &b| l1[b].total_cmp(&l1[a]).then(a.cmp(&b)));
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Section 8: W in R^{8 x 3}.
    fn w() -> Tensor {
        let rows: [[f32; 3]; 8] = [
            [1., 4., -9.],
            [4., -1., 8.],
            [-9., -8., -1.],
            [4., -8., 8.],
            [4., 0., -8.],
            [-3., 3., 2.],
            [5., 4., 6.],
            [-7., 9., -7.],
        ];
        Tensor::new(&rows, &Device::Cpu).unwrap()
    }

    fn kept_l1(w: &Tensor, m: &Tensor) -> f32 {
        (w * m).unwrap().abs().unwrap().sum_all().unwrap().to_scalar().unwrap()
    }

    #[test]
    fn spec_block_example() {
        assert_eq!(block_scores(&w(), 4).unwrap(), vec![18., 21., 26., 19., 16., 23.]);
        let m = block_mask(&w(), 4, 0.5, BlockOrder::Strict).unwrap();
        let rows: Vec<Vec<f32>> = m.to_vec2().unwrap();
        for (o, row) in rows.iter().enumerate() {
            let want = if o < 4 { [0., 1., 1.] } else { [0., 0., 1.] };
            assert_eq!(row, &want, "row {o}");
        }
        assert_eq!(kept_l1(&w(), &m), 70.0);
    }

    #[test]
    fn spec_rearrangement() {
        let pi = filter_l1_perm(&w()).unwrap();
        assert_eq!(pi, vec![7, 3, 2, 6, 0, 1, 4, 5]);
        let idx = Tensor::new(pi.iter().map(|&p| p as u32).collect::<Vec<_>>().as_slice(), &Device::Cpu).unwrap();
        let wp = w().index_select(&idx, 0).unwrap();
        assert_eq!(block_scores(&wp, 4).unwrap(), vec![25., 29., 22., 12., 8., 27.]);
        let m = block_mask(&wp, 4, 0.5, BlockOrder::Strict).unwrap();
        assert_eq!(kept_l1(&wp, &m), 81.0);
    }

    #[test]
    fn general_mask_properties() {
        let v: Vec<f32> = (0..16 * 6 * 9).map(|i| ((i * 7919 % 613) as f32 - 300.0) / 100.0).collect();
        let w = Tensor::from_vec(v, (16, 6, 3, 3), &Device::Cpu).unwrap();
        for n in [1usize, 2, 4, 8, 16] {
            for rate in [0.0, 0.25, 0.5, 0.9] {
                let m = block_mask(&w, n, rate, BlockOrder::Strict).unwrap();
                let mv: Vec<f32> = m.flatten_all().unwrap().to_vec1().unwrap();
                let blocks = 16 / n * 6;
                let zeros = mv.iter().filter(|x| **x == 0.0).count();
                assert_eq!(zeros, (rate * blocks as f64).floor() as usize * n * 9, "n {n} rate {rate}");
                // Each block is all-zero or all-one.
                for g in 0..16 / n {
                    for j in 0..6 {
                        let vals: Vec<f32> = (g * n..(g + 1) * n)
                            .flat_map(|o| mv[(o * 6 + j) * 9..(o * 6 + j + 1) * 9].to_vec())
                            .collect();
                        assert!(vals.iter().all(|x| *x == vals[0]));
                    }
                }
            }
        }
        let wm = weight_mask(&w, 0.5).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(wm, (16 * 6 * 9 / 2) as f32);
        let fm: Vec<Vec<f32>> = filter_mask(&w, 0.25).unwrap().flatten_from(1).unwrap().to_vec2().unwrap();
        assert_eq!(fm.iter().filter(|r| r.iter().all(|x| *x == 0.0)).count(), 4);
        let nm = n_m_mask(&w, 2, 3).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(nm, (16 * 6 * 9 * 2 / 3) as f32);
    }

    #[test]
    fn compat_layout_handles_ragged_outputs_strict_refuses() {
        let w = Tensor::arange(0f32, 6.0 * 4.0, &Device::Cpu).unwrap().reshape((6, 4)).unwrap();
        assert!(matches!(block_mask(&w, 4, 0.5, BlockOrder::Strict), Err(SparseError::BlockSize { .. })));
        let m = block_mask(&w, 4, 0.5, BlockOrder::Compat).unwrap();
        let zeros = m.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().filter(|x| **x == 0.0).count();
        assert_eq!(zeros, 3 * 4, "6 rows of 4 values, 3 pruned");
        // With C_out % N == 0 the two layouts agree.
        assert_eq!(
            block_mask(&self::w(), 4, 0.5, BlockOrder::Compat).unwrap().to_vec2::<f32>().unwrap(),
            block_mask(&self::w(), 4, 0.5, BlockOrder::Strict).unwrap().to_vec2::<f32>().unwrap()
        );
    }

    /// Blocks of several taps: a score sums every tap, and the compat layout's rows run over the
    /// `[C_in][C_out][K]` view.
    #[test]
    fn kernels_of_several_taps_score_and_prune_whole_blocks() {
        let dev = &Device::Cpu;
        // [4 out, 2 in, 1 x 2], w[o, j, t] = +-((o 2 + j) 2 + t).
        let v: Vec<f32> = (0..16).map(|i| if i % 2 == 1 { -(i as f32) } else { i as f32 }).collect();
        let w = Tensor::from_vec(v, (4, 2, 1, 2), dev).unwrap();
        assert_eq!(block_scores(&w, 2).unwrap(), vec![10., 18., 42., 50.]);
        let m: Vec<f32> = block_mask(&w, 2, 0.5, BlockOrder::Strict).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(m, vec![0., 0., 0., 0., 0., 0., 0., 0., 1., 1., 1., 1., 1., 1., 1., 1.]);
        // Compat, [3 out, 2 in, 1 x 2], N = 2: rows of 4 values of the [C_in][C_out][K] view are
        // {(o0, j0), (o1, j0)}, {(o2, j0), (o0, j1)}, {(o1, j1), (o2, j1)}, L1 5.4, 4.1 and 8.0.
        let v = vec![0.3f32, -1.7, 2.9, 0.2, -1.1, 2.3, 3.1, -0.5, 0.4, 0.6, -2.5, 1.9];
        let w = Tensor::from_vec(v, (3, 2, 1, 2), dev).unwrap();
        for (rate, want) in [
            (0.34, [1., 1., 0., 0., 1., 1., 1., 1., 0., 0., 1., 1.]),
            (0.67, [0., 0., 0., 0., 0., 0., 1., 1., 0., 0., 1., 1.]),
        ] {
            let m: Vec<f32> =
                block_mask(&w, 2, rate, BlockOrder::Compat).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(m, want.to_vec(), "rate {rate}");
        }
    }

    #[test]
    fn filter_and_n_m_masks_keep_the_largest() {
        let dev = &Device::Cpu;
        // Filters of L1 norm 6, 2, 9, 1 (x 2 taps): at rate 0.5 filters 1 and 3 go.
        let w = Tensor::new(&[3f32, -3.0, 1.0, 1.0, -4.5, 4.5, 0.5, -0.5], dev).unwrap().reshape((4, 1, 1, 2)).unwrap();
        let m: Vec<f32> = filter_mask(&w, 0.5).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(m, vec![1., 1., 0., 0., 1., 1., 0., 0.]);
        // 2:4 along the inputs: the two largest |w| of each run of four.
        let w = Tensor::new(&[[0.1f32, -0.9, 0.5, -0.2, 3.0, 2.0, -1.0, 0.0]], dev).unwrap();
        assert_eq!(n_m_mask(&w, 2, 4).unwrap().to_vec2::<f32>().unwrap(), vec![vec![0., 1., 1., 0., 1., 1., 0., 0.]]);
        // N = M keeps everything; N > M, M = 0 and runs that do not tile C_in are refused.
        assert_eq!(n_m_mask(&w, 4, 4).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 8.0);
        for (n, m) in [(5usize, 4usize), (0, 0), (1, 3)] {
            assert!(matches!(n_m_mask(&w, n, m), Err(SparseError::BlockSize { .. })), "{n}:{m}");
        }
    }

    #[test]
    fn bad_requests_are_errors() {
        assert!(matches!(block_mask(&w(), 4, 1.0, BlockOrder::Strict).unwrap_err(), SparseError::Rate(1.0)));
        assert!(block_mask(&w(), 3, 0.5, BlockOrder::Strict).is_err());
        assert!(block_mask(&w(), 0, 0.5, BlockOrder::Strict).is_err());
        assert!(weight_mask(&w(), -0.1).is_err());
        let bad = Tensor::zeros((2, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(filter_mask(&bad, 0.5), Err(SparseError::Shape(_))));
    }
}
