//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the service; every variant names what and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A flag's value is invalid.
    #[error("--{flag} {value:?}: {message}")]
    Flag {
        /// The flag, without dashes.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        message: String,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        /// `tcp`, `relp`, `udp`.
        what: &'static str,
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A TLS certificate, key or CA file cannot be used.
    #[error("TLS {path}: {message}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A local file (spill, dead letters) cannot be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A spill file holds a damaged record.
    #[error("spill file {path}: {message}")]
    Spill {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The Kafka producer could not be created.
    #[error(transparent)]
    Kafka(#[from] kafka_seq::Error),
}

impl Error {
    /// Whether the error is the configuration's (flags, TLS files, addresses): exit status 2.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Error::Flag { .. } | Error::Tls { .. } | Error::Listen { .. } | Error::Kafka(_)
        )
    }
}

/// A shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
