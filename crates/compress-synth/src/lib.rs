//! Data-free image synthesis from a full-precision network's BatchNorm statistics, the core that
//! IntraQ (and FDDA after it) build on: noise images optimised so that every BN layer's input
//! statistics match its running ones, with a method's own terms plugged in ([`SynthMethod`]:
//! IntraQ's soft inception loss, marginal distance constraint and crops live in `intraq`).
//!
//! - [`teacher`]: the probed eval-mode forward (logits, penultimate features, BN input
//!   statistics) of any zoo model, through `compress_nn::probe`.
//! - [`losses`]: the BN-statistics loss `L_BNS`.
//! - [`crop`]: differentiable random-resized crops and flips (a method's view hook uses them).
//! - [`plateau`]: the LR rule.
//! - [`generator`]: GDFQ's class-conditional generator (CIFAR / ImageNet variants) and its
//!   training step, which IntraQ calibrates with and FDDA trains throughout.
//! - [`synth`]: the loop, its configuration presets, the method hooks and the cache.

pub mod crop;
pub mod error;
pub mod generator;
pub mod losses;
pub mod plateau;
pub mod synth;
pub mod teacher;

pub use error::{Result, SynthError};
pub use generator::{CondGenerator, GdfqTrainer, GenConfig, generator_optimizer};
pub use synth::{BatchContext, BatchStats, BnsOnly, SynthConfig, SynthMethod, SyntheticSet, synthesize};
pub use teacher::{Teacher, TeacherOut};
