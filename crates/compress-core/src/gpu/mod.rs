//! The CUDA kernels of `kernels/` (the 1xN block-sparse product, NCHW im2col, the fused fake
//! quantizers) and how they are launched. [`launch`] computes every grid and argument from the
//! shapes and is plain Rust, unit-tested on any machine; `cuda` (under the `cuda` feature)
//! embeds the PTX that `build.rs` compiles and runs the kernels on candle's CUDA device.

pub mod check;
pub mod launch;

#[cfg(feature = "cuda")]
pub(crate) mod cuda;

/// The devices present: the CPU, then `cuda:0` when the `cuda` feature is on and a GPU answers.
/// Op and kernel tests run on each and compare against the CPU reference, as candle's own suite
/// does.
pub fn test_devices() -> Vec<candle_core::Device> {
    let mut out = vec![candle_core::Device::Cpu];
    if let Ok(d) = candle_core::Device::cuda_if_available(0)
        && d.is_cuda()
    {
        out.push(d);
    }
    out
}
