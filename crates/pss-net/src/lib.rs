//! PSS-Net: prioritized subnet sampling for resource-adaptive supernet training (Chen et al.,
//! "Prioritized Subnet Sampling for Resource-Adaptive Supernet Training", IEEE TPAMI 2023,
//! arXiv 2109.05432; official code `chenbong/PSS-Net`).
//!
//! Not run here: latency-bucketed and multi-metric training (PSS-Net_G / _M); the paper's
//! ImageNet runs. Everything below is tested against the spec's section 8.
//!
//! A slimmable supernet ([`supernet`]: the zoo's MobileNetV1 / V2 or a network of your own
//! through [`supernet::SlimArch`]) runs any subnet `(r, m)` as the leading slice of itself.
//! Training ([`trainer`]) keeps a pool of good subnets per resource bucket ([`pool`],
//! [`sampler`], [`bucket`]) and trains, each iteration, the max net, one subnet (new, or drawn
//! from its bucket's pool by priority as [`schedule`]'s `p_e` falls) and the min net, the latter
//! two by in-place distillation. Each bucket deploys its best subnet ([`deploy`]) after the
//! BatchNorm recalibration of [`recalibrate`](mod@recalibrate).
//!
//! # Modules
//!
//! - [`space`]: `md`, subnet configs, the space and its draws; [`bucket`]: buckets;
//! - [`schedule`]: `p_e`, `tau_e`; [`pool`]: pools with EMA scores and priorities;
//! - [`sampler`]: the map and the conditional sampler; [`flops`]: slimmable MobileNetV1 / V2
//!   costs; [`latency`]: the block table measured here;
//! - [`supernet`], [`trainer`], [`recalibrate`](mod@recalibrate), [`deploy`]: the method;
//! - [`reproduce`]: the mini; [`paper`]: the paper profile.

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
