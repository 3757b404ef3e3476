//! The crate's error type.

/// Everything that can go wrong in bifrost; every variant names what and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A flag's value is invalid (exit status 2).
    #[error("--{flag} {value:?}: {message}")]
    Flag {
        /// The flag, without dashes.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        message: String,
    },
    /// The store cannot be opened from its URL and options (exit status 2).
    #[error(transparent)]
    Store(Box<lifecycle::Error>),
    /// The store cannot create objects only when they are absent, which exactly-once
    /// archiving needs (e.g. S3 with `aws_conditional_put=disabled`).
    #[error("store {url}: create-only puts are not supported: {source}")]
    CreateOnlyUnsupported {
        /// The store URL.
        url: String,
        /// The client's error.
        source: Box<object_store::Error>,
    },
    /// An object-store request failed.
    #[error("store {url}: {op} {key}: {source}")]
    Object {
        /// The store URL.
        url: String,
        /// What was done (`put`, `get`, `list`, ...).
        op: &'static str,
        /// The key.
        key: String,
        /// The client's error.
        source: Box<object_store::Error>,
    },
    /// An archived object is not what bifrost writes (its range header is missing or
    /// damaged, or its records do not decode).
    #[error("object {key}: {message}")]
    BadObject {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A token object is not `<topic> <partition> <next-offset>`.
    #[error("token {key}: {message}")]
    BadToken {
        /// The token's key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A message is a tombstone (no value) and `--tombstones fail` was given.
    #[error("{topic} [{partition}] offset {offset}: tombstone (null value) and --tombstones fail")]
    Tombstone {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The message's offset.
        offset: i64,
    },
    /// The Kafka consumer failed.
    #[error(transparent)]
    Kafka(#[from] kafka_seq::Error),
    /// Local spool I/O failed.
    #[error("spool {path}: {source}")]
    Spool {
        /// The spool file or directory.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A background task of the service ended unexpectedly.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<lifecycle::Error> for Error {
    fn from(e: lifecycle::Error) -> Error {
        Error::Store(Box::new(e))
    }
}

impl Error {
    /// Whether the error is the configuration's (flags, store URL, a store that cannot
    /// create-only): exit status 2.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Error::Flag { .. } | Error::Store(_) | Error::CreateOnlyUnsupported { .. }
        )
    }
}

/// A shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
