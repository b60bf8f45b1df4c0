//! Errors of DDTB.

/// A failure to build or run a DDTB quantizer.
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
}

/// Result with [`DdtbError`].
pub type Result<T> = std::result::Result<T, DdtbError>;
