//! The crate's error type.

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
    /// The store cannot be opened from its URL and options.
    #[error(transparent)]
    Store(#[from] lifecycle::Error),
    /// A manifest names a warehouse (`:jdbc-url`) the operator does not allow: nothing was
    /// created or contacted.
    #[error(
        "directory {directory}: manifest {manifest} key :jdbc-url names warehouse {warehouse}: refused: {reason}"
    )]
    ManifestWarehouse {
        /// The directory.
        directory: String,
        /// The manifest's key.
        manifest: String,
        /// The warehouse named (password removed).
        warehouse: String,
        /// Why it is refused.
        reason: String,
    },
    /// Scanning, planning or loading failed.
    #[error(transparent)]
    Load(#[from] redshift_upsert::Error),
}

impl Error {
    /// Whether the error is the configuration's (flags, store URL): exit status 2.
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Flag { .. } | Error::Store(_))
    }
}

/// A shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
