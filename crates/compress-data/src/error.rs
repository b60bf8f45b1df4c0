//! The one error type of the data crate: every variant names the file it concerns.

use std::path::PathBuf;

/// A failure to read, validate or fetch a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file was read but its content is not what the format requires.
    #[error("{path}: {msg}")]
    Format {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong, in words.
        msg: String,
    },
    /// The file's SHA-256 is not the expected one.
    #[error("{path}: checksum mismatch: expected sha256 {expected}, found {actual}")]
    Checksum {
        /// The file concerned.
        path: PathBuf,
        /// The expected hex digest.
        expected: String,
        /// The digest of the file as found.
        actual: String,
    },
    /// A dataset, folder or split holds no samples.
    #[error("{path}: {msg}")]
    Empty {
        /// The folder or file concerned.
        path: PathBuf,
        /// What was looked for.
        msg: String,
    },
    /// A download failed; the message says how to place the files by hand.
    #[error("fetching {dataset} from {source_desc} failed: {msg}")]
    Fetch {
        /// The dataset's name.
        dataset: String,
        /// Where it was fetched from.
        source_desc: String,
        /// What went wrong and what to do.
        msg: String,
    },
    /// A requested configuration is impossible (e.g. a patch larger than the image).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias of the data crate.
pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    /// An [`DataError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// A [`DataError::Format`] for `path`.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Format { path: path.into(), msg: msg.into() }
    }
}
