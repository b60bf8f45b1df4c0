//! Errors of FDDA.

/// A failure to compute centres, synthesise or train.
#[derive(Debug, thiserror::Error)]
pub enum FddaError {
    /// An impossible configuration or input.
    #[error("invalid FDDA configuration: {0}")]
    Config(String),
    /// Synthesis (teacher probe, generator).
    #[error(transparent)]
    Synth(#[from] compress_synth::SynthError),
    /// The training engine.
    #[error(transparent)]
    Train(#[from] compress_train::TrainError),
    /// Data.
    #[error(transparent)]
    Data(#[from] compress_data::DataError),
    /// Models.
    #[error(transparent)]
    Nn(#[from] compress_nn::NnError),
    /// Tensor operations.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with [`FddaError`].
pub type Result<T> = std::result::Result<T, FddaError>;

pub(crate) fn config_err(msg: impl Into<String>) -> FddaError {
    FddaError::Config(msg.into())
}
