//! Errors of DCFF.

/// A failure to build, train or extract a fused network.
#[derive(Debug, thiserror::Error)]
pub enum DcffError {
    /// An impossible configuration.
    #[error("invalid DCFF configuration: {0}")]
    Config(String),
    /// A variable the fused network needs is absent.
    #[error("the fused network lacks variable {0:?}")]
    Missing(String),
    /// A lock was poisoned by a panic elsewhere.
    #[error("VarMap lock poisoned")]
    Poisoned,
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

/// Result with [`DcffError`].
pub type Result<T> = std::result::Result<T, DcffError>;
