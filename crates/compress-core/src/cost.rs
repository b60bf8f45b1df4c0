//! Cost formulas: multiply-accumulates (MACs), FLOPs and parameters.
//!
//! Convention: **FLOPs = 2 x MACs** (one multiply and one add). Papers mix the two: ResNet-50's
//! "4.1 GFLOPs" are MACs, DeiT-S's "4.6 GFLOPs" are MACs too. Every figure this toolkit prints says
//! which one it is. Only convolutions and fully connected layers (and attention's matrix products)
//! count; normalisation, activations, pooling and additions are left out, as in the papers.

use std::ops::{Add, AddAssign};

/// MACs and parameters of a network or a layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Multiply-accumulates of one forward pass on one sample.
    pub macs: u64,
    /// Trainable parameters (BatchNorm running statistics excluded).
    pub params: u64,
    /// Per-sample element-wise operations of conv/linear biases (one per output) and BatchNorm
    /// (scale and shift: two per element). Only the counting forward pass records them; analytic
    /// config costs leave them 0.
    pub elementwise: u64,
}

impl Cost {
    /// FLOPs, defined as 2 x MACs.
    pub fn flops(&self) -> u64 {
        2 * self.macs
    }

    /// "FLOPs" as the filter-pruning papers' counter (HRank, DCFF, CLR-RNF) reports them: MACs
    /// plus bias and BatchNorm element-wise operations (`macs + elementwise`). It reproduces their
    /// VGG-16 314.04 M and ResNet-56 126.56 M exactly.
    pub fn pruning_flops(&self) -> u64 {
        self.macs + self.elementwise
    }
}

impl Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost { macs: self.macs + o.macs, params: self.params + o.params, elementwise: self.elementwise + o.elementwise }
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(it: I) -> Cost {
        it.fold(Cost::default(), Add::add)
    }
}

/// Output side of a convolution: `floor((n + 2p - d(k - 1) - 1) / s) + 1`.
pub fn conv_out(n: usize, k: usize, stride: usize, pad: usize, dilation: usize) -> usize {
    (n + 2 * pad).saturating_sub(dilation * (k - 1) + 1) / stride + 1
}

/// A `k x k` convolution from `cin` to `cout` channels in `groups` groups on an `oh x ow` output:
/// MACs `= oh * ow * cout * (cin / groups) * k * k`, params `= cout * (cin / groups) * k * k (+ cout)`.
pub fn conv2d(cin: usize, cout: usize, k: usize, groups: usize, oh: usize, ow: usize, bias: bool) -> Cost {
    let per_out = (cin / groups * k * k) as u64;
    let params = cout as u64 * per_out + if bias { cout as u64 } else { 0 };
    Cost { macs: (oh * ow * cout) as u64 * per_out, params, elementwise: 0 }
}

/// A fully connected layer applied to `tokens` rows: MACs `= tokens * fin * fout`.
pub fn linear(fin: usize, fout: usize, tokens: usize, bias: bool) -> Cost {
    Cost {
        macs: (tokens * fin * fout) as u64,
        params: (fin * fout + if bias { fout } else { 0 }) as u64,
        elementwise: 0,
    }
}

/// `n` element-wise operations (bias additions, norm scale and shift) of one sample.
pub fn elementwise(n: u64) -> Cost {
    Cost { macs: 0, params: 0, elementwise: n }
}

/// Parameters of a BatchNorm or LayerNorm with affine weight and bias over `c` channels.
pub fn norm(c: usize) -> Cost {
    Cost { macs: 0, params: 2 * c as u64, elementwise: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas() {
        assert_eq!(conv_out(32, 3, 1, 1, 1), 32);
        assert_eq!(conv_out(224, 7, 2, 3, 1), 112);
        assert_eq!(conv_out(112, 3, 2, 1, 1), 56);
        let c = conv2d(16, 32, 3, 1, 8, 8, false);
        assert_eq!((c.macs, c.params), (8 * 8 * 32 * 16 * 9, 32 * 16 * 9));
        let dw = conv2d(32, 32, 3, 32, 4, 4, true);
        assert_eq!((dw.macs, dw.params), (4 * 4 * 32 * 9, 32 * 9 + 32));
        assert_eq!(linear(64, 10, 1, true).params, 650);
        assert_eq!(Cost { macs: 3, params: 1, elementwise: 0 }.flops(), 6);
    }
}
