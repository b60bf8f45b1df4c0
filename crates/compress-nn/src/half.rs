//! Half-precision inference: a network's forward passes in bf16 (GPUs) or f16, its outputs in
//! f32, for a GPU user's deployed model and for the teacher passes of the distillation-based
//! methods (IntraQ, FDDA). What consumes the outputs stays f32: the logits come back cast, a
//! probe records BatchNorm statistics and classifier inputs in f32
//! ([`crate::probe`]), and the quantizers compute in f32 whatever their input.

use crate::error::Result;
use crate::network::{Architecture, Model, Network};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

/// The precision of a network's forward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Precision {
    /// f32 (the default; training always runs in f32).
    #[default]
    F32,
    /// bfloat16 (GPUs: candle's CPU matmul has no bf16).
    Bf16,
    /// IEEE half (GPUs, and the CPU).
    F16,
}

impl Precision {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }
}

/// A copy of a network in half precision that reads and returns f32: a [`Model`] (so also a
/// synthesis `Teacher`) that any method takes where it takes a frozen network. Inference only:
/// its variables are copies, not trained.
#[derive(Debug)]
pub struct HalfModel<A: Architecture> {
    net: Network<A>,
    dtype: DType,
}

impl<A: Architecture> HalfModel<A> {
    /// `net` cast to `dtype` ([`Network::to_dtype`]).
    pub fn new(net: &Network<A>, dtype: DType) -> Result<Self> {
        Ok(Self { net: net.to_dtype(dtype)?, dtype })
    }

    /// The half-precision network.
    pub fn network(&self) -> &Network<A> {
        &self.net
    }
}

impl<A: Architecture> Model for HalfModel<A> {
    fn varmap(&self) -> &VarMap {
        self.net.varmap()
    }
    fn device(&self) -> &Device {
        self.net.device()
    }
    /// The pass in half precision; `x` and the result in f32 (gradients pass the casts).
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.net.forward_t(&x.to_dtype(self.dtype)?, train)?.to_dtype(DType::F32)?)
    }
}
