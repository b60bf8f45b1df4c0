//! Errors of 1xN pruning.

/// A failure to mask, fine-tune or deploy.
#[derive(Debug, thiserror::Error)]
pub enum OnexnError {
    /// An impossible configuration.
    #[error("invalid 1xN configuration: {0}")]
    Config(String),
    /// A lock was poisoned by a panic elsewhere.
    #[error("VarMap lock poisoned")]
    Poisoned,
    /// Masks, packed format, kernels.
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

/// Result with [`OnexnError`].
pub type Result<T> = std::result::Result<T, OnexnError>;
