//! The crate's error type, and the marker that makes an error exit with status 2.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong in this crate; every variant names what and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `--config` file could not be read.
    #[error("config file {path}: {source}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML.
    #[error("config file {path}: {message}")]
    ConfigSyntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A key of the `--config` file is not a flag of the program, or its value does not fit.
    #[error("config file {path}: key `{key}`: {message}")]
    ConfigKey {
        /// The file.
        path: PathBuf,
        /// The key as written.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// A store URL is malformed or names a scheme this build cannot open.
    #[error("store {url}: {message}")]
    StoreUrl {
        /// The URL as given.
        url: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// A `--store-option` is not `key=value` or not a key the store knows.
    #[error("store {url}: option {option:?}: {message}")]
    StoreOption {
        /// The store URL.
        url: String,
        /// The option as given.
        option: String,
        /// What is wrong.
        message: String,
    },
    /// The object-store client refused its configuration.
    #[cfg(feature = "store")]
    #[error("store {url}: {source}")]
    Store {
        /// The store URL.
        url: String,
        /// The client's error.
        source: object_store::Error,
    },
    /// A local directory for a `file://` store could not be created.
    #[error("store {url}: cannot create directory {path}: {source}")]
    StoreDirectory {
        /// The store URL.
        url: String,
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Wraps an error that means "the configuration is wrong" (flags, environment, config file,
/// an unreachable setting): [`run`](crate::run) exits with status 2 instead of 1 when the
/// service's error is (or contains) one.
///
/// ```
/// let e = lifecycle::BadConfig::wrap(anyhow::anyhow!("--store: no such bucket"));
/// assert!(lifecycle::BadConfig::is_in(&e));
/// assert_eq!(e.to_string(), "--store: no such bucket");
/// ```
pub struct BadConfig(anyhow::Error);

impl BadConfig {
    /// Marks `error` as a configuration error.
    pub fn wrap(error: impl Into<anyhow::Error>) -> anyhow::Error {
        anyhow::Error::new(BadConfig(error.into()))
    }

    /// Whether `error`'s chain holds a [`BadConfig`].
    pub fn is_in(error: &anyhow::Error) -> bool {
        error.chain().any(|e| e.is::<BadConfig>())
    }
}

impl fmt::Debug for BadConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for BadConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for BadConfig {}
