//! Informative regions (section 2.4): the global class attention accumulated across blocks, the
//! ranking of coarse patches by it, their 2 x 2 children on the fine grid, and the token order
//! of the fine sequence (section 2.6).

use candle_core::{D, Result, Tensor};

/// The four fine-grid children of coarse patch `j = r n + c` on an `n x n` grid:
/// `(2r)(2n) + 2c`, `+1`, `+2n`, `+2n + 1` (top-left, top-right, bottom-left, bottom-right).
pub fn child_indices(j: usize, n: usize) -> [usize; 4] {
    let (r, c) = (j / n, j % n);
    let tl = 2 * r * 2 * n + 2 * c;
    [tl, tl + 1, tl + 2 * n, tl + 2 * n + 1]
}

/// The EMA weight of each of `layers` blocks in `G <- beta G + (1 - beta) A_l` started from 0:
/// block `i` (of the target blocks, in order) weighs `(1 - beta) beta^(layers - 1 - i)`.
pub fn ema_weights(beta: f64, layers: usize) -> Vec<f64> {
    (0..layers).map(|i| (1.0 - beta) * beta.powi((layers - 1 - i) as i32)).collect()
}

/// Global class attention `G` (section 2.2): an EMA over target blocks of the class token's
/// attention row, per head. Detached: the selection is not differentiable.
#[derive(Debug, Clone)]
pub struct ClassAttention {
    beta: f64,
    g: Option<Tensor>,
}

impl ClassAttention {
    /// An empty accumulator (`G = 0`).
    pub fn new(beta: f64) -> Self {
        Self { beta, g: None }
    }

    /// `G <- beta G + (1 - beta) A[:, :, 0, :]` for a post-softmax map `A` of `[B, H, T, T]`.
    pub fn update(&mut self, attn: &Tensor) -> Result<()> {
        let row = (attn.detach().narrow(2, 0, 1)?.squeeze(2)? * (1.0 - self.beta))?;
        self.g = Some(match self.g.take() {
            None => row,
            Some(g) => ((g * self.beta)? + row)?,
        });
        Ok(())
    }

    /// `[B, H, T]` accumulated rows (None before any update).
    pub fn global(&self) -> Option<&Tensor> {
        self.g.as_ref()
    }

    /// Patch scores `s_j = mean_h G[h, 0, j]`, `j = 1..T-1` (the class token excluded): `[B, T-1]`.
    pub fn scores(&self) -> Result<Option<Tensor>> {
        let Some(g) = &self.g else { return Ok(None) };
        let t = g.dim(D::Minus1)?;
        Ok(Some(g.mean(1)?.narrow(1, 1, t - 1)?.contiguous()?))
    }
}

/// Indices of `scores` in descending order (ties: lower index first).
pub fn rank_descending(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}

/// Which coarse patches the fine stage re-splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Selection {
    /// No selection: the whole fine grid (training before the selection epoch).
    Off,
    /// The `k` highest-scoring patches (CF-ViT).
    Informative,
    /// The `k` lowest-scoring patches (the motivation experiment's control).
    Uninformative,
}

/// Positions of the fine sequence in the concatenation `[fine tokens (1 + 4 N_c); coarse input
/// tokens (1 + N_c)]`, for one image whose patches rank as `order` (descending score): the class
/// token; the top-left children of all of S in score order, then top-right, bottom-left,
/// bottom-right; then the coarse tokens of U in score order (the official code's order).
pub fn fine_sequence(order: &[usize], k: usize, n: usize, selection: Selection) -> Vec<usize> {
    let nc = n * n;
    let nf = 4 * nc;
    let (s, u): (Vec<usize>, Vec<usize>) = match selection {
        Selection::Off => return (0..=nf).collect(),
        Selection::Informative => (order[..k].to_vec(), order[k..].to_vec()),
        Selection::Uninformative => {
            let rev: Vec<usize> = order.iter().rev().copied().collect();
            (rev[..k].to_vec(), rev[k..].to_vec())
        }
    };
    let mut seq = Vec::with_capacity(1 + 4 * k + nc - k);
    seq.push(0);
    for q in 0..4 {
        seq.extend(s.iter().map(|&j| 1 + child_indices(j, n)[q]));
    }
    seq.extend(u.iter().map(|&j| 1 + nf + 1 + j));
    seq
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_match_the_spec_table_and_partition_the_fine_grid() {
        assert_eq!(child_indices(0, 7), [0, 1, 14, 15]);
        assert_eq!(child_indices(8, 7), [30, 31, 44, 45]);
        assert_eq!(child_indices(48, 7), [180, 181, 194, 195]);
        assert_eq!(child_indices(10, 9), [38, 39, 56, 57]);
        assert_eq!(child_indices(80, 9), [304, 305, 322, 323]);
        for n in [1, 4, 7, 9] {
            let mut all: Vec<usize> = (0..n * n).flat_map(|j| child_indices(j, n)).collect();
            all.sort_unstable();
            assert_eq!(all, (0..4 * n * n).collect::<Vec<_>>(), "n = {n}");
            // Closed form 4j - 2c.
            for j in 0..n * n {
                assert_eq!(child_indices(j, n)[0], 4 * j - 2 * (j % n));
            }
        }
    }

    #[test]
    fn ema_weights_over_deit_layers_3_to_11() {
        let w = ema_weights(0.99, 9);
        assert!((w[0] - 0.009227).abs() < 5e-7, "{}", w[0]);
        assert!((w[7] - 0.0099).abs() < 1e-12);
        assert!((w[8] - 0.01).abs() < 1e-12);
        assert!((w.iter().sum::<f64>() - 0.086483).abs() < 5e-7);
    }

    #[test]
    fn toy_class_attention_and_its_order() {
        let dev = candle_core::Device::Cpu;
        // One image, one head, three tokens; only row 0 (the class token) matters.
        let map = |row: [f32; 3]| {
            let mut v = vec![0f32; 9];
            v[..3].copy_from_slice(&row);
            Tensor::from_vec(v, (1, 1, 3, 3), &dev).expect("t")
        };
        for (beta, want) in [(0.99, [0.00798, 0.00595, 0.00597]), (0.5, [0.35, 0.175, 0.225])] {
            let mut g = ClassAttention::new(beta);
            g.update(&map([0.2, 0.5, 0.3])).expect("u");
            g.update(&map([0.6, 0.1, 0.3])).expect("u");
            let got: Vec<f32> = g.global().expect("g").flatten_all().expect("f").to_vec1().expect("v");
            for (a, b) in got.iter().zip(want) {
                assert!((f64::from(*a) - b).abs() < 1e-6, "{got:?} vs {want:?}");
            }
            assert_eq!(rank_descending(&got), vec![0, 2, 1]);
            let s: Vec<f32> = g.scores().expect("s").expect("some").flatten_all().expect("f").to_vec1().expect("v");
            assert_eq!(s.len(), 2);
        }
    }

    #[test]
    fn fine_sequence_lengths_and_order() {
        for (n, k, len) in [(7, 25, 125), (9, 41, 205), (4, 8, 41)] {
            let order: Vec<usize> = (0..n * n).rev().collect();
            let seq = fine_sequence(&order, k, n, Selection::Informative);
            assert_eq!(seq.len(), len);
            let mut dedup = seq.clone();
            dedup.sort_unstable();
            dedup.dedup();
            assert_eq!(dedup.len(), len, "no token twice");
        }
        // n = 2, k = 2, ranking [3, 0, 1, 2]: S = {3, 0}, U = [1, 2].
        let seq = fine_sequence(&[3, 0, 1, 2], 2, 2, Selection::Informative);
        let fine = |i: usize| 1 + i;
        let coarse = |j: usize| 1 + 16 + 1 + j;
        let want =
            vec![0, fine(10), fine(0), fine(11), fine(1), fine(14), fine(4), fine(15), fine(5), coarse(1), coarse(2)];
        assert_eq!(seq, want);
        let low = fine_sequence(&[3, 0, 1, 2], 2, 2, Selection::Uninformative);
        assert_eq!(&low[1..3], &[fine(8), fine(2)]);
        assert_eq!(&low[9..], &[coarse(0), coarse(3)]);
        assert_eq!(fine_sequence(&[0, 1, 2, 3], 2, 2, Selection::Off), (0..=16).collect::<Vec<_>>());
    }
}
