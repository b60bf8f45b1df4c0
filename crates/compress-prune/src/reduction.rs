//! Cost of a pruned model against its base, as the filter-pruning papers report it.

use crate::error::Result;
use candle_core::Device;
use compress_core::cost::Cost;
use compress_nn::{Architecture, Network};

/// The cost a counting forward pass measures on a model of `cfg` (freshly initialised weights:
/// the cost does not depend on them). Its `pruning_flops()` is the papers' "FLOPs".
pub fn measured_cost<A: Architecture>(cfg: &A::Config) -> Result<Cost> {
    Ok(Network::<A>::new(cfg.clone(), 0, &Device::Cpu)?.counted_cost()?)
}

/// A pruned model's cost next to its base's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reduction {
    /// The unpruned model.
    pub base: Cost,
    /// The pruned model.
    pub pruned: Cost,
}

impl Reduction {
    /// FLOPs reduction in percent, FLOPs counted as the pruning papers do
    /// ([`Cost::pruning_flops`]).
    pub fn flops_percent(&self) -> f64 {
        100.0 * (1.0 - self.pruned.pruning_flops() as f64 / self.base.pruning_flops().max(1) as f64)
    }

    /// Parameter reduction in percent.
    pub fn params_percent(&self) -> f64 {
        100.0 * (1.0 - self.pruned.params as f64 / self.base.params.max(1) as f64)
    }
}
