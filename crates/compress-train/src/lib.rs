//! The training engine of the compression toolkit: one loop for every method's baseline,
//! compression and fine-tuning runs.
//!
//! - [`optim`]: SGD (momentum, Nesterov, weight decay) and Adam/AdamW as PyTorch defines them,
//!   with parameter groups and state that checkpoints; [`schedule`]: step, multi-step, cosine,
//!   warm-up as functions of the step.
//! - [`loss`] and [`metrics`]: cross-entropy with label smoothing, L1, MSE, distillation,
//!   attention transfer; top-k, PSNR-Y and SSIM-Y.
//! - [`engine`], [`classify`], [`super_resolution`]: the loops, with hooks, gradient
//!   accumulation, a stop on non-finite loss, and exact resumption from [`checkpoint`]s.
//! - [`record`], [`report`] and [`plot`]: run folders, JSONL logs, reports and SVG plots.
//! - [`harness`]: the [`Reproduction`] trait every method crate implements and the
//!   [`RunContext`] its runs share.

pub mod baselines;
pub mod bench;
pub mod checkpoint;
pub mod choice;
pub mod classify;
pub mod engine;
pub mod error;
pub mod harness;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod parallel;
pub mod plot;
pub mod record;
pub mod report;
pub mod schedule;
pub mod super_resolution;

pub use engine::{Hooks, NoHooks, TrainConfig};
pub use error::{Result, TrainError};
pub use harness::{Info, Outcome, Reproduction, RunContext};
pub use record::Run;
pub use report::{Report, ReportRow, Rule, Spread, Verdict};
