//! Errors of OptG.

/// A failure to sparsify, train or export.
#[derive(Debug, thiserror::Error)]
pub enum OptgError {
    /// An impossible configuration or input.
    #[error("invalid OptG configuration: {0}")]
    Config(String),
    /// A lock of the variable map was poisoned by a panic elsewhere.
    #[error("the VarMap lock is poisoned")]
    Poisoned,
    /// Sparse formats and kernels.
    #[error(transparent)]
    Sparse(#[from] compress_core::sparse::SparseError),
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

/// Result with [`OptgError`].
pub type Result<T> = std::result::Result<T, OptgError>;

pub(crate) fn config_err(msg: impl Into<String>) -> OptgError {
    OptgError::Config(msg.into())
}
