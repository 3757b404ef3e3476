//! Reading records: from any `std::io::Read`, or zero-copy from memory.

use std::io::{self, Read};

use bytes::{Bytes, BytesMut};

use crate::frame::{self, Frame};
use crate::{Codec, DEFAULT_MAX_RECORD_BYTES, Error};

/// How many bytes one `read` call asks for.
const READ_CHUNK: usize = 64 * 1024;

/// Reads records from any [`Read`], yielding each payload as [`Bytes`].
///
/// Input is read in 64 KiB chunks into one reusable buffer and records are split off it
/// without copying, so small records cost no allocation each: once the records handed out
/// are dropped, the buffer's memory is reused. Memory stays bounded by the largest record
/// (at worst about three times it, while the buffer grows, plus a 64 KiB chunk), whatever
/// the input size. Records longer than the maximum (default
/// 256 MiB) are an error before anything is allocated for them.
///
/// After an error the reader yields nothing more. A stream that ends exactly at a record
/// boundary ends cleanly; one that ends inside a record yields a truncation error.
///
/// ```
/// let data = [0u8, 0, 0, 0, 0, 0, 0, 1, 42, 0, 0, 0, 0, 0, 0, 0, 0];
/// let records: Vec<_> = baldr::Reader::new(&data[..]).collect::<Result<_, _>>()?;
/// assert_eq!(records, vec![bytes::Bytes::from_static(&[42]), bytes::Bytes::new()]);
/// # Ok::<(), baldr::Error>(())
/// ```
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    buf: BytesMut,
    codec: Codec,
    done: bool,
}

impl<R: Read> Reader<R> {
    /// A reader over `inner` with the default maximum record length.
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            buf: BytesMut::with_capacity(READ_CHUNK),
            codec: Codec::new(),
            done: false,
        }
    }

    /// Sets the largest payload length accepted; longer records are a [`Error::TooLarge`].
    pub fn with_max_record_bytes(mut self, max: u64) -> Self {
        self.codec = self.codec.with_max_record_bytes(max);
        self
    }

    /// The stream offset of the next record: after an error, where the bad record starts.
    pub fn offset(&self) -> u64 {
        self.codec.offset()
    }

    /// The bytes of memory the reader's buffer holds: one read chunk (64 KiB) plus the
    /// largest record in flight, whatever the input's size.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The underlying reader, mutably. Reading from it directly loses the reader's place.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The underlying reader; input already buffered but not yet decoded is dropped.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reads the next record: `Ok(None)` at the clean end of the input.
    pub fn read_record(&mut self) -> Result<Option<Bytes>, Error> {
        self.next().transpose()
    }

    /// Appends up to one chunk of input to the buffer; 0 means end of input.
    fn fill(&mut self) -> io::Result<usize> {
        let start = self.buf.len();
        if self.buf.capacity() - start < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        let room = (self.buf.capacity() - start).min(READ_CHUNK);
        self.buf.resize(start + room, 0);
        let read = loop {
            match self.inner.read(&mut self.buf[start..]) {
                Ok(n) => break Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            }
        };
        self.buf.truncate(start + *read.as_ref().unwrap_or(&0));
        read
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<Bytes, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            match self.codec.decode_record(&mut self.buf) {
                Ok(Some(record)) => return Some(Ok(record)),
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            match self.fill() {
                Ok(0) => {
                    self.done = true;
                    return match self.codec.decode_record_eof(&mut self.buf) {
                        Ok(None) => None,
                        // decode_record found no whole record, so decode_record_eof cannot.
                        Ok(Some(record)) => Some(Ok(record)),
                        Err(e) => Some(Err(e)),
                    };
                }
                Ok(_) => {}
                Err(source) => {
                    self.done = true;
                    return Some(Err(Error::Io {
                        offset: Some(self.codec.offset()),
                        source,
                    }));
                }
            }
        }
    }
}

impl<R: Read> std::iter::FusedIterator for Reader<R> {}

/// Finds the next record in `data` from `*pos`, advancing `*pos` past it.
#[inline]
fn next_in(
    data: &[u8],
    pos: &mut usize,
    max: u64,
) -> Option<Result<std::ops::Range<usize>, Error>> {
    let rest = data.get(*pos..).filter(|rest| !rest.is_empty())?;
    let offset = *pos as u64;
    let result = match frame::peek(rest, offset, max) {
        Ok(Frame::Complete { payload }) => {
            let range = *pos + payload.start..*pos + payload.end;
            *pos = range.end;
            return Some(Ok(range));
        }
        Ok(Frame::Incomplete { .. }) => frame::truncated(rest, offset),
        Err(e) => e,
    };
    *pos = data.len(); // fused after an error
    Some(Err(result))
}

/// A zero-copy iterator over the records of an in-memory [`Bytes`]: each payload is a
/// slice sharing the input's memory.
///
/// ```
/// let mut buf = bytes::BytesMut::new();
/// baldr::encode(b"hello", &mut buf);
/// let records: Vec<_> = baldr::Records::new(buf.freeze()).collect::<Result<_, _>>()?;
/// assert_eq!(records, vec![bytes::Bytes::from_static(b"hello")]);
/// # Ok::<(), baldr::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Records {
    data: Bytes,
    pos: usize,
    max: u64,
}

impl Records {
    /// Records of `data`, with the default maximum record length.
    pub fn new(data: Bytes) -> Self {
        Records {
            data,
            pos: 0,
            max: DEFAULT_MAX_RECORD_BYTES,
        }
    }

    /// Sets the largest payload length accepted.
    pub fn with_max_record_bytes(mut self, max: u64) -> Self {
        self.max = max;
        self
    }

    /// The offset of the next record in the input.
    pub fn offset(&self) -> u64 {
        self.pos as u64
    }
}

impl Iterator for Records {
    type Item = Result<Bytes, Error>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        next_in(&self.data, &mut self.pos, self.max).map(|r| r.map(|range| self.data.slice(range)))
    }
}

impl std::iter::FusedIterator for Records {}

/// A zero-copy iterator over the records of a byte slice, yielding borrowed payloads.
///
/// ```
/// let data = [0u8, 0, 0, 0, 0, 0, 0, 2, 1, 2];
/// let mut records = baldr::SliceRecords::new(&data);
/// assert_eq!(records.next().unwrap()?, &[1, 2]);
/// assert!(records.next().is_none());
/// # Ok::<(), baldr::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SliceRecords<'a> {
    data: &'a [u8],
    pos: usize,
    max: u64,
}

impl<'a> SliceRecords<'a> {
    /// Records of `data`, with the default maximum record length.
    pub fn new(data: &'a [u8]) -> Self {
        SliceRecords {
            data,
            pos: 0,
            max: DEFAULT_MAX_RECORD_BYTES,
        }
    }

    /// Sets the largest payload length accepted.
    pub fn with_max_record_bytes(mut self, max: u64) -> Self {
        self.max = max;
        self
    }

    /// The offset of the next record in the input.
    pub fn offset(&self) -> u64 {
        self.pos as u64
    }
}

impl<'a> Iterator for SliceRecords<'a> {
    type Item = Result<&'a [u8], Error>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let data = self.data;
        next_in(data, &mut self.pos, self.max).map(|r| r.map(|range| &data[range]))
    }
}

impl std::iter::FusedIterator for SliceRecords<'_> {}
