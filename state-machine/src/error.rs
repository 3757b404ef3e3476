//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong around a run: everything here is about the journal (the executor itself
/// never fails: failed steps end as retries or dead letters).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening, reading, truncating or syncing the journal file failed.
    #[error("journal {}: {action}: {source}", path.display())]
    JournalIo {
        /// The journal file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A journal record could not be read (corrupt, not merely torn at the end) or written.
    #[error("journal {}: {source}", path.display())]
    JournalRecord {
        /// The journal file.
        path: PathBuf,
        /// The Baldr error, naming the byte offset.
        source: baldr::Error,
    },
    /// A complete journal record does not hold a valid entry for this machine's states.
    #[error("journal {}: record at byte offset {offset}: {source}", path.display())]
    JournalDecode {
        /// The journal file.
        path: PathBuf,
        /// Byte offset of the record.
        offset: u64,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// A unit's state could not be encoded for the journal.
    #[error("journal {}: unit {id:?}: cannot encode the state: {source}", path.display())]
    JournalEncode {
        /// The journal file.
        path: PathBuf,
        /// The unit.
        id: String,
        /// The encoding error.
        source: serde_json::Error,
    },
    /// The journal writer stopped without saying why (its thread panicked).
    #[error("journal {}: the writer thread stopped unexpectedly", path.display())]
    JournalWriterGone {
        /// The journal file.
        path: PathBuf,
    },
}
