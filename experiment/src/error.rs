//! The crate's error type.

/// Everything that can go wrong in this crate; every variant names what and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A line of a counts file does not parse.
    #[error("{source_name} line {line}: {message}")]
    Counts {
        /// The file (or `stdin`, or the SQL query).
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An arm's numbers are impossible (successes above trials, negative, not finite).
    #[error("arm {arm:?}: {message}")]
    Arm {
        /// The arm's label.
        arm: String,
        /// What is wrong.
        message: String,
    },
    /// The experiment as a whole is not usable (fewer than two arms, duplicate labels,
    /// several control arms, bad settings).
    #[error("{0}")]
    Experiment(String),
    /// A saved state could not be read back.
    #[error("state: {0}")]
    State(#[from] serde_json::Error),
    /// Writing a plot failed.
    #[error("plot {path}: {message}")]
    Plot {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
}

/// A shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
