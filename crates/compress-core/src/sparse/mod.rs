//! Sparsity patterns and the packed 1xN format.
//!
//! - [`mask`] computes masks from scores with exact counts and deterministic ties: unstructured
//!   (magnitude), filter, kernel, 1xN blocks (L1 block scores), N:M.
//! - [`bsr`] holds `Bsr1xN`, the block-sparse row format of 1xN pruning (N output channels
//!   contiguous per kept block, `K_h K_w` taps per block), built from a masked dense weight,
//!   validated on load, round-tripping exactly, saved to safetensors.
//! - [`kernel`] runs 1x1 convolutions over the packed format (NCHW and NHWC), SIMD picked at
//!   run time; [`packed`] wraps it as candle layers (`PackedConv2d` for any square kernel via
//!   im2col, `PackedLinear`);
//! - [`csr`] is the unstructured (weight pruning) baseline kernel.

pub mod bsr;
pub mod csr;
pub mod csr_layers;
pub mod kernel;
pub mod mask;
pub mod packed;

pub use bsr::Bsr1xN;
pub use csr::{Csr, csr_conv1x1_nchw, csr_conv1x1_nhwc};
pub use csr_layers::{CsrConv1x1, CsrLinear};
pub use kernel::{conv1x1_nchw, conv1x1_nhwc, simd_level};
pub use mask::{BlockOrder, block_mask, block_scores, filter_l1_perm, filter_mask, n_m_mask, weight_mask};
pub use packed::{PackedConv2d, PackedLinear};

/// An impossible sparsity request or malformed packed data.
#[derive(Debug, thiserror::Error)]
pub enum SparseError {
    /// A rate outside `[0, 1)`.
    #[error("sparsity {0} is not in [0, 1)")]
    Rate(f64),
    /// A block size that does not divide the output channels (or is 0).
    #[error("block size N = {n} does not divide {c_out} output channels")]
    BlockSize {
        /// N.
        n: usize,
        /// Output channels.
        c_out: usize,
    },
    /// A weight of an unexpected shape.
    #[error("expected a [C_out, C_in, K_h, K_w] (or [C_out, C_in]) weight, got {0:?}")]
    Shape(Vec<usize>),
    /// Packed data that is inconsistent.
    #[error("malformed 1xN data: {0}")]
    Malformed(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// Result with [`SparseError`].
pub type Result<T> = std::result::Result<T, SparseError>;

/// `(C_out, C_in, K_h K_w)` of a conv or linear weight.
pub(crate) fn dims(w: &candle_core::Tensor) -> Result<(usize, usize, usize)> {
    match w.dims() {
        [o, i] => Ok((*o, *i, 1)),
        [o, i, kh, kw] => Ok((*o, *i, kh * kw)),
        d => Err(SparseError::Shape(d.to_vec())),
    }
}

pub(crate) fn check_rate(rate: f64) -> Result<()> {
    if (0.0..1.0).contains(&rate) { Ok(()) } else { Err(SparseError::Rate(rate)) }
}

/// Indices of the `k` smallest scores (ties: lower index first).
pub(crate) fn smallest(scores: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    order.truncate(k);
    order
}
