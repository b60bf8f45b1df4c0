//! PSS-Net: prioritized subnet sampling for resource-adaptive supernet training (Chen et al.,
//! "Prioritized Subnet Sampling for Resource-Adaptive Supernet Training", IEEE TPAMI 2023,
//! arXiv 2109.05432; official code `chenbong/PSS-Net`).
//!
//! **In progress** (issue 30): the structure space, channel rounding, buckets, schedules,
//! subnet pools, the conditional sampler and the FLOPs model are here and tested against the
//! spec's section 8; the slimmable forward pass on the zoo's networks, the sandwich trainer, BN
//! recalibration, the latency table, deployment and the reproductions are not yet.
//!
//! # Modules
//!
//! - [`space`]: `md`, subnet configs, the space and its draws; [`bucket`]: buckets;
//! - [`schedule`]: `p_e`, `tau_e`; [`pool`]: pools with EMA scores and priorities;
//! - [`sampler`]: the map and the conditional sampler; [`flops`]: slimmable MobileNetV1 / V2
//!   costs.

pub mod bucket;
pub mod deploy;
pub mod error;
pub mod flops;
pub mod latency;
pub mod paper;
pub mod pool;
pub mod recalibrate;
pub mod reproduce;
pub mod sampler;
pub mod schedule;
pub mod space;
pub mod supernet;
pub mod trainer;

pub use bucket::Bucketizer;
pub use deploy::{Budget, Deployed, extract, select};
pub use error::{PssError, Result};
pub use flops::{SlimMobileNetV1, SlimMobileNetV2};
pub use latency::{BlockKey, LatencyTable};
pub use pool::{SubnetPool, priorities};
pub use recalibrate::recalibrate;
pub use sampler::ConditionalSampler;
pub use schedule::PssSchedule;
pub use space::{StructureSpace, SubnetConfig, make_divisible};
pub use supernet::Supernet;
pub use trainer::{PssSettings, PssState, Sandwich};
