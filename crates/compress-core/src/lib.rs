//! Tensor-level primitives shared by every compression method: the run's seeded randomness and
//! the cost formulas (more arrive with the methods: quantizers, masks, packed kernels).

pub mod cost;
pub mod ops;
pub mod rng;
