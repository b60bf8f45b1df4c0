//! Errors of the model zoo: every weight error names the tensor.

/// A failure to build, transform, save or load a model.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// A tensor the model needs is absent from the weights.
    #[error("missing tensor {name:?}{}", context.as_deref().map(|c| format!(" in {c}")).unwrap_or_default())]
    MissingTensor {
        /// The tensor's name.
        name: String,
        /// The file or repository searched.
        context: Option<String>,
    },
    /// A tensor has another shape than the model needs.
    #[error("tensor {name:?} has shape {found:?}, the model needs {expected:?}")]
    ShapeMismatch {
        /// The tensor's name.
        name: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A tensor has another dtype than the model needs.
    #[error("tensor {name:?} has dtype {found:?}, the model needs {expected:?}")]
    DtypeMismatch {
        /// The tensor's name.
        name: String,
        /// The dtype the model needs.
        expected: candle_core::DType,
        /// The dtype found.
        found: candle_core::DType,
    },
    /// A configuration or pruning request is impossible.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    File {
        /// The file concerned.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A method's own computation failed behind a zoo interface (a `Model` forward).
    #[error(transparent)]
    Method(Box<dyn std::error::Error + Send + Sync>),
    /// The Hugging Face Hub could not deliver a file.
    #[error(
        "hub repository {repo}, file {file}: {source} (offline: place the file in hf-hub's cache layout under the cache folder)"
    )]
    Hub {
        /// The repository id.
        repo: String,
        /// The file asked for.
        file: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias of the model zoo.
pub type Result<T> = std::result::Result<T, NnError>;

/// Shorthand for a [`NnError::Config`].
pub fn config_err(msg: impl Into<String>) -> NnError {
    NnError::Config(msg.into())
}
