//! Tensor-level primitives shared by every compression method: the run's seeded randomness, the
//! cost formulas, the CPU ops candle lacks or runs slowly, quantizers, sparsity masks with the
//! packed 1xN format and its kernels, and benchmark timing.

pub mod atomic;
pub mod cost;
mod cpu;
pub mod gpu;
pub mod ops;
pub mod quant;
pub mod rng;
pub mod sparse;
pub mod timing;
