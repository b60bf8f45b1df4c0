//! What to prune in one layer (spec sections 2 and 3): the 1xN block pattern with its
//! criterion and filter rearrangement, and the baselines (weight, filter, kernel = 1x1 blocks,
//! random blocks). Every prunable layer gets the same rate (layer-wise, never global).

use crate::error::{OnexnError, Result};
use candle_core::{DType, Tensor};
use compress_core::rng::SeededRng;
use compress_core::sparse::{self, BlockOrder};
use rand::Rng;

/// How 1xN blocks are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BlockCriterion {
    /// The `k = floor(p B)` blocks of smallest L1 norm are pruned (ties: lower flat index first).
    L1,
    /// `k` block indices drawn uniformly *with replacement* (the official random baseline), so
    /// the realised rate is below `p`.
    Random {
        /// Seed of the draw (each layer draws its own stream).
        seed: u64,
    },
}

/// The 1xN pattern (spec section 7's `OneByNConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OneByN {
    /// Block height: N consecutive output channels (1: kernel pruning).
    pub n: usize,
    /// Block ranking.
    pub criterion: BlockCriterion,
    /// Rank blocks on the weight with its output channels sorted by filter L1 (descending), then
    /// map the mask back (training); deployment permutes the layer physically.
    pub rearrange: bool,
    /// `Strict` refuses `C_out % N != 0`; `Compat` reproduces the official flat-row rule.
    pub order: BlockOrder,
}

impl OneByN {
    /// L1 blocks of `n`, with or without rearrangement, strict layout.
    pub fn l1(n: usize, rearrange: bool) -> Self {
        Self { n, criterion: BlockCriterion::L1, rearrange, order: BlockOrder::Strict }
    }
}

/// A pruning pattern for one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Pattern {
    /// Unstructured: the `floor(p numel)` smallest `|w|`.
    Weight,
    /// Filters: the `floor(p C_out)` output channels of smallest L1, masked only (a following
    /// BatchNorm still outputs its shift on the zeroed channel, as in the official code).
    Filter,
    /// 1xN blocks.
    Block(OneByN),
}

impl Pattern {
    /// A short label (`weight`, `filter`, `1x4`, `1x4+rearr`, `1x4-random`).
    pub fn label(&self) -> String {
        match self {
            Pattern::Weight => "weight".into(),
            Pattern::Filter => "filter".into(),
            Pattern::Block(b) => {
                let base = if b.n == 1 { "kernel".to_string() } else { format!("1x{}", b.n) };
                let crit = if matches!(b.criterion, BlockCriterion::Random { .. }) { "-random" } else { "" };
                let re = if b.rearrange { "+rearr" } else { "" };
                format!("{base}{crit}{re}")
            }
        }
    }
}

/// A layer's mask, in its original channel order, and the rearrangement used to compute it.
#[derive(Debug, Clone)]
pub struct LayerMask {
    /// 0/1 of the weight's shape.
    pub mask: Tensor,
    /// `pi`: position `i` of the rearranged layer holds original channel `pi[i]` (rearranged
    /// 1xN only).
    pub perm: Option<Vec<usize>>,
}

/// The mask of weight `w` (`[C_out, C_in]` or `[C_out, C_in, k, k]`) at rate `p` for `pattern`.
/// `layer` indexes the layer (for per-layer random streams).
pub fn layer_mask(w: &Tensor, pattern: Pattern, rate: f64, layer: usize) -> Result<LayerMask> {
    let mask = |m: Tensor| LayerMask { mask: m, perm: None };
    match pattern {
        Pattern::Weight => Ok(mask(sparse::weight_mask(w, rate)?)),
        Pattern::Filter => Ok(mask(sparse::filter_mask(w, rate)?)),
        Pattern::Block(b) => {
            if !b.rearrange {
                return Ok(mask(block_mask(w, b, rate, layer)?));
            }
            // Section 2, "Filter rearrangement": mask W[pi], then M[pi[i]] = M'[i].
            let pi = sparse::filter_l1_perm(w)?;
            let idx = Tensor::from_vec(pi.iter().map(|&p| p as u32).collect::<Vec<_>>(), pi.len(), w.device())?;
            let m_perm = block_mask(&w.index_select(&idx, 0)?, b, rate, layer)?;
            let mut inverse = vec![0u32; pi.len()];
            for (i, &p) in pi.iter().enumerate() {
                inverse[p] = i as u32;
            }
            let inv = Tensor::from_vec(inverse, pi.len(), w.device())?;
            Ok(LayerMask { mask: m_perm.index_select(&inv, 0)?, perm: Some(pi) })
        }
    }
}

fn block_mask(w: &Tensor, b: OneByN, rate: f64, layer: usize) -> Result<Tensor> {
    match b.criterion {
        BlockCriterion::L1 => Ok(sparse::block_mask(w, b.n, rate, b.order)?),
        BlockCriterion::Random { seed } => random_block_mask(w, b, rate, seed, layer),
    }
}

/// `floor(p B)` block indices drawn with replacement; the drawn blocks are zero.
fn random_block_mask(w: &Tensor, b: OneByN, rate: f64, seed: u64, layer: usize) -> Result<Tensor> {
    if !(0.0..1.0).contains(&rate) {
        return Err(sparse::SparseError::Rate(rate).into());
    }
    let dims = w.dims().to_vec();
    let (c_out, c_in) = (dims[0], *dims.get(1).ok_or_else(|| OnexnError::Config(format!("weight {dims:?}")))?);
    let kk: usize = dims.iter().skip(2).product();
    if b.n == 0 || (b.order == BlockOrder::Strict && !c_out.is_multiple_of(b.n)) {
        return Err(sparse::SparseError::BlockSize { n: b.n, c_out }.into());
    }
    let groups = c_out.div_ceil(b.n);
    let blocks = groups * c_in;
    let k = (rate * blocks as f64).floor() as usize;
    let mut rng = SeededRng::new(seed).stream("onexn-random-blocks", layer as u64);
    let mut m = vec![1f32; c_out * c_in * kk];
    for _ in 0..k {
        let r = rng.random_range(0..blocks);
        // Block r = (g, j) with the official row order: r = j G + g.
        let (g, j) = (r % groups, r / groups);
        for o in g * b.n..((g + 1) * b.n).min(c_out) {
            m[(o * c_in + j) * kk..(o * c_in + j + 1) * kk].fill(0.0);
        }
    }
    Ok(Tensor::from_vec(m, dims, w.device())?.to_dtype(DType::F32)?)
}

/// `sum |W ⊙ M|`.
pub fn kept_l1(w: &Tensor, mask: &Tensor) -> Result<f64> {
    Ok(f64::from((w * mask)?.abs()?.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?))
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;

    /// Section 8's W in R^{8 x 3}.
    pub(crate) fn spec_w() -> Tensor {
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

    #[test]
    fn spec_rearranged_mask_maps_back_to_the_original_channels() {
        let w = spec_w();
        let plain = layer_mask(&w, Pattern::Block(OneByN::l1(4, false)), 0.5, 0).unwrap();
        assert_eq!(kept_l1(&w, &plain.mask).unwrap(), 70.0);
        let re = layer_mask(&w, Pattern::Block(OneByN::l1(4, true)), 0.5, 0).unwrap();
        assert_eq!(re.perm.as_deref(), Some(&[7, 3, 2, 6, 0, 1, 4, 5][..]));
        assert_eq!(kept_l1(&w, &re.mask).unwrap(), 81.0);
        // j0 and j1 kept on channels {2, 3, 6, 7}; j2 on {0, 1, 4, 5}.
        let m: Vec<Vec<f32>> = re.mask.to_vec2().unwrap();
        for (o, row) in m.iter().enumerate() {
            let hi = [2, 3, 6, 7].contains(&o);
            assert_eq!(row, &if hi { vec![1., 1., 0.] } else { vec![0., 0., 1.] }, "channel {o}");
        }
        // An ascending order gives the same groups, hence the same mask.
        let mut asc = re.perm.clone().unwrap();
        asc.reverse();
        let idx = Tensor::from_vec(asc.iter().map(|&p| p as u32).collect::<Vec<_>>(), 8, &Device::Cpu).unwrap();
        let m_asc = sparse::block_mask(&w.index_select(&idx, 0).unwrap(), 4, 0.5, BlockOrder::Strict).unwrap();
        let mut back = vec![vec![0f32; 3]; 8];
        for (i, row) in m_asc.to_vec2::<f32>().unwrap().into_iter().enumerate() {
            back[asc[i]] = row;
        }
        assert_eq!(back, m);
    }

    #[test]
    fn baselines_and_labels() {
        let w = spec_w();
        let wm = layer_mask(&w, Pattern::Weight, 0.5, 0).unwrap().mask;
        assert_eq!(wm.sum_all().unwrap().to_scalar::<f32>().unwrap(), 12.0);
        let fm: Vec<Vec<f32>> = layer_mask(&w, Pattern::Filter, 0.5, 0).unwrap().mask.to_vec2().unwrap();
        // Filter L1 [14,13,18,20,12,8,15,23]: the 4 smallest are 5, 4, 1, 0.
        for (o, row) in fm.iter().enumerate() {
            assert_eq!(row.iter().all(|x| *x == 0.0), [0, 1, 4, 5].contains(&o));
        }
        // N = 1 is kernel pruning: the 12 smallest |w| kernels of a 1x1 layer are its weights.
        let km = layer_mask(&w, Pattern::Block(OneByN::l1(1, false)), 0.5, 0).unwrap().mask;
        assert_eq!(km.sum_all().unwrap().to_scalar::<f32>().unwrap(), 12.0);
        assert_eq!(Pattern::Block(OneByN::l1(4, true)).label(), "1x4+rearr");
        assert_eq!(Pattern::Block(OneByN::l1(1, false)).label(), "kernel");
    }

    #[test]
    fn random_blocks_are_drawn_with_replacement_and_seeded() {
        let v: Vec<f32> = (0..64 * 40).map(|i| (i % 17) as f32 - 8.0).collect();
        let w = Tensor::from_vec(v, (64, 40), &Device::Cpu).unwrap();
        let pat = |seed| Pattern::Block(OneByN { criterion: BlockCriterion::Random { seed }, ..OneByN::l1(4, false) });
        let a = layer_mask(&w, pat(1), 0.5, 0).unwrap().mask;
        let b = layer_mask(&w, pat(1), 0.5, 0).unwrap().mask;
        let c = layer_mask(&w, pat(2), 0.5, 0).unwrap().mask;
        assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
        assert_ne!(a.to_vec2::<f32>().unwrap(), c.to_vec2::<f32>().unwrap());
        let zeros_blocks = (64 * 40) as f32 - a.sum_all().unwrap().to_scalar::<f32>().unwrap();
        let pruned = zeros_blocks / 4.0;
        // 320 draws among 640 blocks with replacement: about 640 (1 - e^-0.5) = 252 distinct.
        assert!(pruned < 320.0 && pruned > 200.0, "{pruned}");
        assert!(layer_mask(&w, pat(1), 1.0, 0).is_err());
    }
}
