//! Errors of CF-ViT.

/// A failure to build, train, evaluate or reproduce a CF-ViT model.
#[derive(Debug, thiserror::Error)]
pub enum CfVitError {
    /// An impossible configuration.
    #[error("invalid CF-ViT configuration: {0}")]
    Config(String),
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

/// Result with [`CfVitError`].
pub type Result<T> = std::result::Result<T, CfVitError>;
