//! The Baldr record file format.
//!
//! A Baldr file is a sequence of records, each an 8-byte big-endian signed length followed
//! by that many payload bytes. There is no file header and no checksum; a zero-length record
//! is valid. Files are usually gzip-compressed as a whole (`*.baldr.gz`); zstd is supported
//! too. This crate is byte-compatible with the original implementation.
//!
//! - Writing: [`Writer`] over any `std::io::Write` (buffer reused across records), [`encode`]
//!   into a [`bytes::BytesMut`], and [`Compressor`] for gzip/zstd output.
//! - Reading: [`Reader`] over any `std::io::Read`, yielding [`bytes::Bytes`] payloads split
//!   off one reusable buffer; [`Records`] and [`SliceRecords`] iterate in-memory data without
//!   copying; [`open`] / [`open_reader`] detect gzip/zstd from the magic bytes.
//! - Async (feature `tokio`): [`Codec`] is a `tokio_util::codec` `Decoder`/`Encoder`, so
//!   `FramedRead`/`FramedWrite` give a `Stream`/`Sink` of records.
//!
//! Damaged input is a typed [`Error`] carrying the byte offset of the bad record: truncated
//! header, truncated payload, negative length, or a length above the configured maximum
//! (default 256 MiB, checked before anything is allocated). A stream ending exactly at a
//! record boundary ends cleanly.
//!
//! # Example
//!
//! ```
//! use baldr::{Compression, Compressor, Writer};
//!
//! // Write two records to a gzip-compressed file in memory.
//! let mut writer = Writer::new(Compressor::new(Vec::new(), Compression::Gzip)?);
//! writer.write_record(b"first")?;
//! writer.write_record(b"")?; // empty records are fine
//! let file: Vec<u8> = writer.finish()?.finish()?;
//!
//! // Read them back, compression detected from the magic bytes.
//! let records = baldr::open_reader(&file[..])?.collect::<Result<Vec<_>, _>>()?;
//! assert_eq!(records, [&b"first"[..], &b""[..]]);
//!
//! // Damage is reported with the offset of the bad record.
//! let mut plain = Writer::new(Vec::new());
//! plain.write_record(b"abc")?;
//! let mut plain = plain.finish()?;
//! plain.truncate(plain.len() - 1);
//! let err = baldr::Reader::new(&plain[..]).next().unwrap().unwrap_err();
//! assert_eq!(err.offset(), Some(0));
//! assert_eq!(
//!     err.to_string(),
//!     "byte offset 0: truncated payload: record of 3 bytes, input ends after 2"
//! );
//! # Ok::<(), baldr::Error>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod compress;
mod error;
mod frame;
mod read;
mod write;

pub use compress::{
    Compression, Compressor, Decompressor, Prefixed, compressed_writer, open, open_reader,
};
pub use error::Error;
pub use frame::{Codec, encode, encoded_len};
pub use read::{Reader, Records, SliceRecords};
pub use write::Writer;

/// The length of a record's header: an 8-byte big-endian signed integer.
pub const HEADER_LEN: usize = 8;

/// The default largest payload length accepted when reading: 256 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 256 * 1024 * 1024;
