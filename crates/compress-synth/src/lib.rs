//! Data-free image synthesis from a full-precision network's BatchNorm statistics, the core that
//! IntraQ (and FDDA after it) build on: noise images optimised so that every BN layer's input
//! statistics match its running ones, with the classification and diversity terms of the
//! method plugged in.
//!
//! - [`teacher`]: the probed eval-mode forward (logits, penultimate features, BN input
//!   statistics) of any zoo model, through `compress_nn::probe`.
//! - [`losses`]: `L_BNS`, the soft inception loss, the marginal distance constraint.
//! - [`crop`]: local object reinforcement (differentiable random-resized crop and flip).
//! - [`centres`]: class centres of the images finished before; [`plateau`]: the LR rule.
//! - [`generator`]: GDFQ's class-conditional generator (CIFAR / ImageNet variants) and its
//!   training step, which IntraQ calibrates with and FDDA trains throughout.
//! - [`synth`]: the loop, its configuration presets, extra terms ([`SynthTerm`]) and the cache.

pub mod centres;
pub mod crop;
pub mod error;
pub mod generator;
pub mod losses;
pub mod plateau;
pub mod synth;
pub mod teacher;

pub use centres::ClassCentres;
pub use error::{Result, SynthError};
pub use generator::{CondGenerator, GdfqTrainer, GenConfig};
pub use synth::{BatchContext, BatchStats, SynthConfig, SynthTerm, SyntheticSet, synthesize};
pub use teacher::{Teacher, TeacherOut};
