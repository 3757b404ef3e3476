//! Writing records to any `std::io::Write`.

use std::io::{self, Write};

use crate::{Error, HEADER_LEN, frame};

/// The size of the writer's buffer: records are gathered into writes of about this size.
const BUF_CAP: usize = 64 * 1024;

/// Writes records to any [`Write`], gathering small records into large writes through one
/// reused buffer; records larger than the buffer go straight through.
///
/// Call [`finish`](Self::finish) (or [`flush`](Self::flush)) to write out the buffer; a
/// writer dropped without it flushes on a best-effort basis and ignores errors. After an
/// error, discard the writer: what reached the inner writer is unknown.
///
/// ```
/// let mut writer = baldr::Writer::new(Vec::new());
/// writer.write_record(&[1, 2, 3])?;
/// writer.write_record(&[1, 2, 3, 4])?;
/// let bytes = writer.finish()?;
/// assert_eq!(bytes, [0, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
/// # Ok::<(), baldr::Error>(())
/// ```
#[derive(Debug)]
pub struct Writer<W: Write> {
    // `None` only after `finish` took it out.
    inner: Option<W>,
    buf: Vec<u8>,
    offset: u64,
    records: u64,
}

impl<W: Write> Writer<W> {
    /// A writer over `inner`.
    pub fn new(inner: W) -> Self {
        Writer {
            inner: Some(inner),
            buf: Vec::with_capacity(BUF_CAP),
            offset: 0,
            records: 0,
        }
    }

    /// Appends one record.
    #[inline]
    pub fn write_record(&mut self, payload: &[u8]) -> Result<(), Error> {
        let header = frame::header_for(payload.len(), self.offset)?;
        let total = HEADER_LEN + payload.len();
        if self.buf.len() + total > BUF_CAP {
            self.flush_buf()?;
        }
        if total > BUF_CAP {
            self.write_through(&header)?;
            self.write_through(payload)?;
        } else {
            self.buf.extend_from_slice(&header);
            self.buf.extend_from_slice(payload);
        }
        self.offset += total as u64;
        self.records += 1;
        Ok(())
    }

    /// How many records were written.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// How many bytes the records written take, headers included (before compression).
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// Writes out the buffer and flushes the inner writer.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.flush_buf()?;
        let offset = self.offset;
        self.inner_mut()
            .flush()
            .map_err(|source| io_error(offset, source))
    }

    /// Writes out the buffer, flushes, and returns the inner writer.
    ///
    /// For a [`Compressor`](crate::Compressor), call its own `finish` next to write the
    /// compressed stream's trailer.
    pub fn finish(mut self) -> Result<W, Error> {
        self.flush()?;
        self.inner
            .take()
            .ok_or_else(|| io_error(self.offset, finished()))
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        // Only `finish` empties `inner`, and it consumes the writer.
        match &self.inner {
            Some(inner) => inner,
            None => unreachable_inner(),
        }
    }

    /// The inner writer, mutably. Writing to it directly interleaves with buffered records:
    /// call [`flush`](Self::flush) first.
    pub fn get_mut(&mut self) -> &mut W {
        self.inner_mut()
    }

    fn inner_mut(&mut self) -> &mut W {
        match &mut self.inner {
            Some(inner) => inner,
            None => unreachable_inner(),
        }
    }

    fn flush_buf(&mut self) -> Result<(), Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let offset = self.offset;
        let Writer { inner, buf, .. } = self;
        let result = match inner {
            Some(inner) => inner.write_all(buf),
            None => Err(finished()),
        };
        buf.clear();
        result.map_err(|source| io_error(offset, source))
    }

    fn write_through(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let offset = self.offset;
        self.inner_mut()
            .write_all(bytes)
            .map_err(|source| io_error(offset, source))
    }
}

impl<W: Write> Drop for Writer<W> {
    fn drop(&mut self) {
        if self.inner.is_some() {
            let _ = self.flush_buf();
        }
    }
}

fn io_error(offset: u64, source: io::Error) -> Error {
    Error::Io {
        offset: Some(offset),
        source,
    }
}

fn finished() -> io::Error {
    io::Error::other("writer already finished")
}

#[cold]
fn unreachable_inner() -> ! {
    // `inner` is `None` only inside `finish`, which consumes the writer: no caller can
    // observe it.
    unreachable!("baldr::Writer used after finish")
}
