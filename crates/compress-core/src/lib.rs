//! Tensor-level primitives shared by every compression method: the run's seeded randomness, the
//! cost formulas, the CPU ops candle lacks or runs slowly, and quantizers (masks and packed
//! kernels arrive with their methods).

pub mod cost;
pub mod ops;
pub mod quant;
pub mod rng;
pub mod sparse;
