//! Errors of PSS-Net.

/// A failure to build the space, the sampler or the pools, or to train.
#[derive(Debug, thiserror::Error)]
pub enum PssError {
    /// An impossible configuration or input.
    #[error("invalid PSS-Net configuration: {0}")]
    Config(String),
    /// Model zoo.
    #[error(transparent)]
    Nn(#[from] compress_nn::NnError),
    /// Data.
    #[error(transparent)]
    Data(#[from] compress_data::DataError),
    /// Training engine.
    #[error(transparent)]
    Train(#[from] compress_train::TrainError),
    /// Tensor operations.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with [`PssError`].
pub type Result<T> = std::result::Result<T, PssError>;

pub(crate) fn config_err(msg: impl Into<String>) -> PssError {
    PssError::Config(msg.into())
}
