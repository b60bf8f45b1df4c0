//! Tensor ops the toolkit owns because candle's CPU versions are slow or lack a backward.

pub mod batch_norm;
pub mod bias;
pub mod clamp;
pub mod conv2d;

pub use batch_norm::batch_norm_train;
pub use bias::bias_add_nchw;
pub use clamp::clamp_activation;
pub use conv2d::{Conv2dGeometry, conv2d, use_candle_conv};
