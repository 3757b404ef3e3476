//! The crate's error type.

use std::io;

/// Everything that can go wrong reading or writing Baldr records.
///
/// Every variant about a bad record carries the byte offset where that record starts, counted
/// in the uncompressed record stream (for a `*.baldr.gz` file: after decompression). Records
/// before that offset were intact and have already been handed out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ended inside a record's 8-byte length header.
    #[error(
        "byte offset {offset}: truncated length header: input ends after {available} of 8 bytes"
    )]
    TruncatedHeader {
        /// Byte offset of the record's first header byte.
        offset: u64,
        /// How many header bytes were present (1 to 7).
        available: usize,
    },
    /// The input ended inside a record's payload.
    #[error(
        "byte offset {offset}: truncated payload: record of {length} bytes, input ends after {available}"
    )]
    TruncatedPayload {
        /// Byte offset of the record's header.
        offset: u64,
        /// The payload length the header announced.
        length: u64,
        /// How many payload bytes were present.
        available: u64,
    },
    /// A record's header holds a negative length.
    #[error("byte offset {offset}: negative record length {length}")]
    NegativeLength {
        /// Byte offset of the record's header.
        offset: u64,
        /// The (negative) length read.
        length: i64,
    },
    /// A record's header holds a length above the configured maximum.
    #[error("byte offset {offset}: record length {length} exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Byte offset of the record's header.
        offset: u64,
        /// The length read (or, when writing, the payload length).
        length: u64,
        /// The maximum in force.
        max: u64,
    },
    /// Reading or writing the underlying stream failed (this includes corrupt gzip or zstd data).
    #[error("{}I/O error: {source}", at(.offset))]
    Io {
        /// Byte offset of the record being read or written, when known.
        offset: Option<u64>,
        /// The underlying error.
        source: io::Error,
    },
}

fn at(offset: &Option<u64>) -> String {
    offset.map_or_else(String::new, |o| format!("byte offset {o}: "))
}

impl Error {
    /// The byte offset of the bad record, when known.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::TruncatedHeader { offset, .. }
            | Error::TruncatedPayload { offset, .. }
            | Error::NegativeLength { offset, .. }
            | Error::TooLarge { offset, .. } => Some(*offset),
            Error::Io { offset, .. } => *offset,
        }
    }

    /// Whether the input simply ended inside a record (a torn last record, as a crash while
    /// appending leaves it), as opposed to a corrupt header or an I/O failure.
    pub fn is_truncation(&self) -> bool {
        matches!(
            self,
            Error::TruncatedHeader { .. } | Error::TruncatedPayload { .. }
        )
    }
}

impl From<io::Error> for Error {
    fn from(source: io::Error) -> Self {
        Error::Io {
            offset: None,
            source,
        }
    }
}
