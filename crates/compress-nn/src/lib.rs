//! The model zoo of the compression toolkit, with each network's structure declared as data.
//!
//! A model is an [`network::Architecture`] built from an [`network::ArchConfig`] that names every
//! prunable width and lists the [`structure::ChannelGroup`]s that tie tensors together. A
//! [`network::Network`] holds a built model with its variables and implements structured surgery
//! (physically smaller model), masking (same size, removed channels silenced), cost (analytic and
//! counted) and checked safetensors I/O.

pub mod count;
pub mod error;
pub mod fake_quant;
pub mod half;
pub mod init;
pub mod layers;
pub mod network;
pub mod pretrained;
pub mod probe;
pub mod pytorchcv;
mod scope;
pub mod slim;
pub mod stack;
pub mod structure;
pub mod tap;
pub mod weights;
pub mod zoo;

pub use error::{NnError, Result};
pub use network::{
    AnalyticCost, ArchConfig, Architecture, Model, Network, is_buffer, is_running_statistic, model_tensors,
    trainable_vars,
};
