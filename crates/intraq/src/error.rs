//! Errors of IntraQ.

/// A failure to synthesise, quantize, fine-tune or reproduce.
#[derive(Debug, thiserror::Error)]
pub enum IntraqError {
    /// An impossible configuration.
    #[error("invalid IntraQ configuration: {0}")]
    Config(String),
    /// A file or folder could not be read, written or removed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A quantizer failed.
    #[error(transparent)]
    Quant(#[from] compress_core::quant::QuantError),
    /// Synthesis.
    #[error(transparent)]
    Synth(#[from] compress_synth::SynthError),
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

/// Result with [`IntraqError`].
pub type Result<T> = std::result::Result<T, IntraqError>;
