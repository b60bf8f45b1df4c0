//! Datasets for the compression toolkit.
//!
//! Every loader returns images as NCHW `f32` candle tensors and labels as `u32`, validates what it
//! reads (magic numbers, counts, sizes, label ranges, SHA-256) and names the file and the problem
//! in its error. Nothing here panics on bad input.

pub mod batch;
pub mod bicubic;
pub mod checksum;
pub mod cifar;
pub mod decode;
pub mod embedded;
pub mod error;
pub mod fetch;
pub mod image_folder;
pub mod manifest;
pub mod mnist;
pub mod sr;
pub use sr::{SrBatch, SrPairs};
pub mod ycbcr;

pub use batch::{Batch, Batcher, ImageDataset};
pub use error::{DataError, Result};
