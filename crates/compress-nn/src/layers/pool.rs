//! Pooling: max pooling is `compress_core`'s op (correct gradient); global average pooling.

use candle_core::{Result, Tensor};
pub use compress_core::ops::max_pool2d;

/// Global average pooling `[N, C, H, W] -> [N, C]`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.mean((2, 3))
}
