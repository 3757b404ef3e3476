//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in this crate; every variant names what and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A manifest file could not be parsed (syntax), with the file and the position.
    #[error("manifest {file}: syntax error at {position}: {message}")]
    ManifestSyntax {
        /// The manifest's key or path.
        file: String,
        /// Where in the file (line:column or byte offset).
        position: String,
        /// What was wrong.
        message: String,
    },
    /// A manifest parsed but a key is missing, unknown or has a bad value.
    #[error("manifest {file}: key {key}: {message}")]
    ManifestKey {
        /// The manifest's key or path.
        file: String,
        /// The offending key (as written, e.g. `:pk-columns`).
        key: String,
        /// What was wrong and what is allowed.
        message: String,
    },
    /// A COPY option is not on the allow-list or is malformed.
    #[error("manifest {file}: key :options: COPY option {option:?}: {message}")]
    CopyOption {
        /// The manifest's key or path.
        file: String,
        /// The option as written.
        option: String,
        /// What was wrong and what is allowed.
        message: String,
    },
    /// A manifest key's value is valid but cannot be honoured by the warehouse loaded into
    /// (e.g. the `BZIP2` COPY option outside Redshift).
    #[error("manifest {manifest}: key {key}: {message} (loading into table {table})")]
    ManifestUnsupported {
        /// The manifest's key or path.
        manifest: String,
        /// The manifest key (as written in EDN, e.g. `:options`).
        key: String,
        /// The target table.
        table: String,
        /// What cannot be honoured and what would be.
        message: String,
    },
    /// The plan cannot be made for this manifest and warehouse.
    #[error("plan for table {table}: {message}")]
    Plan {
        /// The target table.
        table: String,
        /// What was wrong.
        message: String,
    },
    /// A data file could not be read or shaped into rows.
    #[error("data file {file}, record {record}: {message}")]
    Data {
        /// The object key of the data file.
        file: String,
        /// The 1-based record (line) number in the file (0: before the first record).
        record: u64,
        /// What was wrong.
        message: String,
    },
    /// A warehouse URL or connection setting is invalid.
    #[error("warehouse {url}: {message}")]
    Warehouse {
        /// The URL (passwords removed).
        url: String,
        /// What was wrong.
        message: String,
    },
    /// A database statement failed.
    #[error("table {table}{}: database error in {context}: {source}", file_part(.file))]
    Database {
        /// The table the statement was for: the target table, or the load-history table.
        table: String,
        /// The data file (object key) whose rows the statement was loading, if any.
        file: Option<String>,
        /// What was being done (statement or step).
        context: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// An object-store operation failed.
    #[error("object store error at {location}: {source}")]
    Store {
        /// The key or prefix involved.
        location: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// A local I/O operation failed.
    #[error("I/O error at {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A listing returned more objects than a scan may hold.
    #[error("more than {max} objects under {location}: narrow the prefix")]
    TooManyObjects {
        /// The store and prefix listed.
        location: String,
        /// The limit.
        max: usize,
    },
    /// An object read whole (a manifest) is larger than allowed.
    #[error("{key}: {size} bytes, more than the {max} allowed")]
    ObjectTooLarge {
        /// The object's key.
        key: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: usize,
    },
    /// A Redshift load lacks what COPY needs (an S3 store, an IAM role).
    #[error("Redshift load into {table}: {message}")]
    RedshiftSetup {
        /// The target table.
        table: String,
        /// What is missing.
        message: String,
    },
}

fn file_part(file: &Option<String>) -> String {
    file.as_ref()
        .map(|f| format!(", file {f}"))
        .unwrap_or_default()
}

impl Error {
    /// Whether this error is a serialization conflict worth retrying: PostgreSQL SQLSTATE
    /// `40001` (serialization failure) or `40P01` (deadlock), Redshift's `1023`
    /// ("Serializable isolation violation"), or SQLite's busy/locked errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Database { source, .. } => is_retryable_sqlx(source),
            _ => false,
        }
    }
}

/// Whether a driver error is a retryable serialization conflict.
pub(crate) fn is_retryable_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            is_retryable_code(code, db.message())
        }
        _ => false,
    }
}

/// Whether an SQLSTATE / driver code and message name a retryable conflict.
pub(crate) fn is_retryable_code(code: &str, message: &str) -> bool {
    matches!(code, "40001" | "40P01")
        // SQLite: SQLITE_BUSY (5), SQLITE_LOCKED (6) and their extended codes.
        || matches!(code, "5" | "6" | "261" | "517" | "262")
        || message.contains("1023")
            && message.to_ascii_lowercase().contains("serializable isolation violation")
}

/// A shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_codes() {
        assert!(is_retryable_code("40001", "could not serialize access"));
        assert!(is_retryable_code("40P01", "deadlock detected"));
        assert!(is_retryable_code(
            "XX000",
            "1023: Serializable isolation violation on table - 123, transactions forming the cycle are: 1, 2"
        ));
        assert!(is_retryable_code("5", "database is locked"));
        assert!(!is_retryable_code(
            "22P02",
            "invalid input syntax for type bigint"
        ));
        assert!(!is_retryable_code("XX000", "1023 rows"));
        assert!(
            !Error::Plan {
                table: "t".into(),
                message: "x".into()
            }
            .is_retryable()
        );
    }
}
