//! Tensor ops the toolkit owns because candle's CPU versions are slow or lack a backward:
//! convolution, training-mode BatchNorm, ReLU/ReLU6, bias adds, max pooling, and the
//! transformer's LayerNorm, softmax and GELU; the SGD update in one pass. Every kernel runs on
//! f32 and f64 through one element trait (`scalar`).

pub mod batch_norm;
pub mod bias;
pub mod clamp;
pub mod conv2d;
pub mod conv_bn;
pub mod gelu;
pub mod layer_norm;
pub mod max_pool;
pub mod profile;
#[macro_use]
mod residual_op;
mod scalar;
pub mod sgd;
pub mod softmax;

pub use batch_norm::{batch_norm_act_eval, batch_norm_act_train, batch_norm_train};
pub use bias::{bias_add_last, bias_add_nchw};
pub use clamp::clamp_activation;
pub use conv_bn::conv_bn_act_train;
pub use conv2d::{Conv2dGeometry, conv2d};
pub use gelu::gelu_erf;
pub use layer_norm::layer_norm;
pub use max_pool::max_pool2d;
pub use sgd::{SgdStep, sgd_step};
pub use softmax::softmax_last;

use std::sync::atomic::{AtomicBool, Ordering};

static CANDLE_ONLY: AtomicBool = AtomicBool::new(false);

/// Routes the toolkit's CPU kernels (convolution, BatchNorm with its residual and activation,
/// ReLU / ReLU6, the SGD update) to candle's own ops (`true`) or to the kernels (`false`, the
/// default): benchmarks compare stock candle with the toolkit in one process.
pub fn use_candle_ops(on: bool) {
    CANDLE_ONLY.store(on, Ordering::Relaxed);
}

/// Whether [`use_candle_ops`] is on.
pub fn candle_only() -> bool {
    CANDLE_ONLY.load(Ordering::Relaxed)
}
