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
/// does. With `COMPRESS_REQUIRE_CUDA` set (the GPU check), a missing GPU panics instead of
/// leaving the tests to pass on the CPU alone.
pub fn test_devices() -> Vec<candle_core::Device> {
    let mut out = vec![candle_core::Device::Cpu];
    match candle_core::Device::cuda_if_available(0) {
        Ok(d) if d.is_cuda() => out.push(d),
        other => {
            if std::env::var_os("COMPRESS_REQUIRE_CUDA").is_some() {
                panic!("COMPRESS_REQUIRE_CUDA is set but no CUDA device answered: {other:?}");
            }
        }
    }
    out
}
