//! Errors of White-Box.

/// A failure to train masks, vote or prune.
#[derive(Debug, thiserror::Error)]
pub enum WhiteBoxError {
    /// An impossible configuration or input.
    #[error("invalid White-Box configuration: {0}")]
    Config(String),
    /// Pruning machinery.
    #[error(transparent)]
    Prune(#[from] compress_prune::PruneError),
    /// Model zoo.
    #[error(transparent)]
    Nn(#[from] compress_nn::NnError),
    /// Training engine.
    #[error(transparent)]
    Train(#[from] compress_train::TrainError),
    /// Data.
    #[error(transparent)]
    Data(#[from] compress_data::DataError),
    /// Tensor operations.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Writing a record.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Result with [`WhiteBoxError`].
pub type Result<T> = std::result::Result<T, WhiteBoxError>;

pub(crate) fn config_err(msg: impl Into<String>) -> WhiteBoxError {
    WhiteBoxError::Config(msg.into())
}
