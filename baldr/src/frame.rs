//! The framing itself: one 8-byte big-endian signed length, then the payload.

use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{DEFAULT_MAX_RECORD_BYTES, Error, HEADER_LEN};

/// Where the next record lies in a buffer that starts at a record boundary.
pub(crate) enum Frame {
    /// A whole record: its payload is `payload` within the buffer.
    Complete { payload: Range<usize> },
    /// The buffer holds only part of the record; `needed` bytes in all make it whole.
    Incomplete { needed: usize },
}

/// Validates a length header read at `offset`, before anything is allocated for it.
#[inline]
pub(crate) fn check_length(
    header: [u8; HEADER_LEN],
    offset: u64,
    max: u64,
) -> Result<usize, Error> {
    let length = i64::from_be_bytes(header);
    if length < 0 {
        return Err(Error::NegativeLength { offset, length });
    }
    let length = length.unsigned_abs();
    if length > max {
        return Err(Error::TooLarge {
            offset,
            length,
            max,
        });
    }
    // Only reachable on 32-bit targets with a maximum above usize::MAX.
    usize::try_from(length).map_err(|_| Error::TooLarge {
        offset,
        length,
        max: usize::MAX as u64,
    })
}

/// Looks at the record at the start of `data` (which lies at stream offset `offset`).
#[inline]
pub(crate) fn peek(data: &[u8], offset: u64, max: u64) -> Result<Frame, Error> {
    let Some(header) = data.first_chunk::<HEADER_LEN>() else {
        return Ok(Frame::Incomplete { needed: HEADER_LEN });
    };
    let length = check_length(*header, offset, max)?;
    let end = HEADER_LEN.saturating_add(length);
    if data.len() < end {
        Ok(Frame::Incomplete { needed: end })
    } else {
        Ok(Frame::Complete {
            payload: HEADER_LEN..end,
        })
    }
}

/// The error for input that ends with the partial record `rest` at stream offset `offset`.
pub(crate) fn truncated(rest: &[u8], offset: u64) -> Error {
    match rest.first_chunk::<HEADER_LEN>() {
        None => Error::TruncatedHeader {
            offset,
            available: rest.len(),
        },
        Some(header) => Error::TruncatedPayload {
            offset,
            length: i64::from_be_bytes(*header).unsigned_abs(),
            available: (rest.len() - HEADER_LEN) as u64,
        },
    }
}

/// The length header for a payload of `len` bytes.
#[inline]
pub(crate) fn header_for(len: usize, offset: u64) -> Result<[u8; HEADER_LEN], Error> {
    i64::try_from(len)
        .map(i64::to_be_bytes)
        .map_err(|_| Error::TooLarge {
            offset,
            length: len as u64,
            max: i64::MAX.unsigned_abs(),
        })
}

/// Appends one encoded record (header and payload) to `dst`.
///
/// ```
/// let mut buf = bytes::BytesMut::new();
/// baldr::encode(&[1, 2, 3], &mut buf);
/// assert_eq!(&buf[..], &[0, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3]);
/// ```
#[inline]
pub fn encode(payload: &[u8], dst: &mut BytesMut) {
    dst.reserve(HEADER_LEN + payload.len());
    // A slice never exceeds isize::MAX bytes, so the cast is lossless.
    dst.put_i64(payload.len() as i64);
    dst.put_slice(payload);
}

/// The number of bytes a record of `payload_len` bytes takes once encoded.
pub const fn encoded_len(payload_len: usize) -> usize {
    HEADER_LEN + payload_len
}

/// An incremental record decoder over a [`BytesMut`] that input is appended to.
///
/// It tracks the stream offset for error messages and enforces the maximum record length
/// before reserving room for a record. [`Reader`](crate::Reader) uses it over any
/// `std::io::Read`; with the `tokio` feature it is a `tokio_util::codec` `Decoder` and
/// `Encoder`, so `FramedRead`/`FramedWrite` give a `Stream`/`Sink` of records.
///
/// ```
/// use bytes::BytesMut;
/// let mut codec = baldr::Codec::new();
/// let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 0, 0, 0, 2, 7][..]);
/// assert!(codec.decode_record(&mut buf)?.is_none()); // needs one more byte
/// buf.extend_from_slice(&[8]);
/// assert_eq!(&codec.decode_record(&mut buf)?.unwrap()[..], &[7, 8]);
/// # Ok::<(), baldr::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Codec {
    offset: u64,
    max: u64,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec {
    /// A decoder at stream offset 0 with the default maximum record length (256 MiB).
    pub fn new() -> Self {
        Codec {
            offset: 0,
            max: DEFAULT_MAX_RECORD_BYTES,
        }
    }

    /// Sets the largest payload length accepted; longer records are a [`Error::TooLarge`].
    pub fn with_max_record_bytes(mut self, max: u64) -> Self {
        self.max = max;
        self
    }

    /// The largest payload length accepted.
    pub fn max_record_bytes(&self) -> u64 {
        self.max
    }

    /// The stream offset of the next record to decode.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Splits the next whole record off the front of `buf`, without copying its payload.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a record; room for the rest of it is
    /// then reserved in `buf` (only after its length passed the checks).
    #[inline]
    pub fn decode_record(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match peek(buf, self.offset, self.max)? {
            Frame::Incomplete { needed } => {
                buf.reserve(needed - buf.len());
                Ok(None)
            }
            Frame::Complete { payload } => {
                buf.advance(HEADER_LEN);
                let record = buf.split_to(payload.len()).freeze();
                self.offset += payload.end as u64;
                Ok(Some(record))
            }
        }
    }

    /// Like [`decode_record`](Self::decode_record) at the end of the input: a partial record
    /// left in `buf` is a truncation error, an empty `buf` the clean end of the stream.
    pub fn decode_record_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.decode_record(buf)? {
            Some(record) => Ok(Some(record)),
            None if buf.is_empty() => Ok(None),
            None => Err(truncated(buf, self.offset)),
        }
    }
}

#[cfg(feature = "tokio")]
mod tokio_codec {
    use super::*;

    impl tokio_util::codec::Decoder for Codec {
        type Item = Bytes;
        type Error = Error;

        fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
            self.decode_record(src)
        }

        fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
            self.decode_record_eof(src)
        }
    }

    impl<T: AsRef<[u8]>> tokio_util::codec::Encoder<T> for Codec {
        type Error = Error;

        fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), Error> {
            encode(item.as_ref(), dst);
            Ok(())
        }
    }
}
