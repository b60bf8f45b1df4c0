//! Errors of DDTB.

/// A failure to build, train or reproduce a DDTB model.
#[derive(Debug, thiserror::Error)]
pub enum DdtbError {
    /// An impossible configuration.
    #[error("invalid DDTB configuration: {0}")]
    Config(String),
    /// A quantizer failed.
    #[error(transparent)]
    Quant(#[from] compress_core::quant::QuantError),
    /// Tensor operations.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The training engine (checkpoints, non-finite loss, run folders).
    #[error(transparent)]
    Train(#[from] compress_train::TrainError),
    /// Datasets.
    #[error(transparent)]
    Data(#[from] compress_data::DataError),
    /// Models and weight files.
    #[error(transparent)]
    Nn(#[from] compress_nn::NnError),
}

/// Result with [`DdtbError`].
pub type Result<T> = std::result::Result<T, DdtbError>;
