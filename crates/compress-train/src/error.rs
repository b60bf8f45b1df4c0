//! Errors of the training engine.

/// A failure while training, evaluating or recording a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss (or, at a checkpoint, a weight) became NaN or infinite. The run stops; the
    /// newest checkpoint, written before it with finite weights only, is kept.
    #[error("non-finite {what} at step {step} (epoch {epoch}); {}", kept(checkpoint.as_deref()))]
    NonFinite {
        /// Global optimizer step.
        step: u64,
        /// Epoch.
        epoch: usize,
        /// What was not finite: `loss NaN`, `weights`.
        what: String,
        /// The newest checkpoint, if any.
        checkpoint: Option<std::path::PathBuf>,
    },
    /// An impossible configuration.
    #[error("invalid training configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A method's own step failed inside the loop (a hook, an objective).
    #[error(transparent)]
    Method(Box<dyn std::error::Error + Send + Sync>),
    /// The run was stopped on purpose (`stop_after_steps`), to test resuming.
    #[error("stopped after step {0} as requested")]
    Stopped(u64),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Writing a report or a bench's output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    /// The model zoo failed.
    #[error(transparent)]
    Nn(#[from] compress_nn::NnError),
    /// The data pipeline failed.
    #[error(transparent)]
    Data(#[from] compress_data::DataError),
}

/// Result alias of the training engine.
pub type Result<T> = std::result::Result<T, TrainError>;

/// A [`TrainError::File`] keeping `e` as its source (an error, or a message).
pub fn file_err(path: &std::path::Path, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> TrainError {
    TrainError::File { path: path.to_path_buf(), source: e.into() }
}

/// A method's error surfacing through the loop ([`TrainError::Method`]), its source kept.
pub fn method_err(e: impl std::error::Error + Send + Sync + 'static) -> TrainError {
    TrainError::Method(Box::new(e))
}

fn kept(checkpoint: Option<&std::path::Path>) -> String {
    match checkpoint {
        Some(c) => format!("the last checkpoint with finite weights is kept at {}", c.display()),
        None => "no checkpoint had been written yet".into(),
    }
}
