//! Errors of the synthesis core.

/// A failure to synthesise images.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// An impossible configuration.
    #[error("invalid synthesis configuration: {0}")]
    Config(String),
    /// The teacher does not expose what synthesis needs.
    #[error("teacher: {0}")]
    Teacher(String),
    /// A cached batch does not belong to this configuration, or cannot be read.
    #[error("synthesis cache {path}: {source}")]
    Cache {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Tensor operations.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The optimizer.
    #[error(transparent)]
    Train(#[from] compress_train::TrainError),
    /// Weight files.
    #[error(transparent)]
    Nn(#[from] compress_nn::NnError),
}

/// Result with [`SynthError`].
pub type Result<T> = std::result::Result<T, SynthError>;
