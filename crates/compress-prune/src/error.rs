//! Errors of the pruning machinery.

/// A failure to parse rates, build a compact config or select filters.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// A rate list or a pruning request is impossible.
    #[error("invalid pruning configuration: {0}")]
    Config(String),
    /// A rate expression does not parse.
    #[error("cannot parse rate list {expr:?} at character {at}: {msg}")]
    Parse {
        /// The expression.
        expr: String,
        /// Byte offset of the problem.
        at: usize,
        /// What was expected.
        msg: String,
    },
    /// The model zoo failed.
    #[error(transparent)]
    Nn(#[from] compress_nn::NnError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with [`PruneError`].
pub type Result<T> = std::result::Result<T, PruneError>;

pub(crate) fn config_err(msg: impl Into<String>) -> PruneError {
    PruneError::Config(msg.into())
}
