//! Whole-file compression: gzip (the usual `*.baldr.gz`) and zstd, detected on read.

use std::io::{self, BufReader, Chain, Cursor, Read, Take, Write};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use crate::{Error, Reader, Writer};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How a Baldr file is compressed as a whole.
///
/// Detection from the first bytes is unambiguous for valid files: a plain file starts with
/// a length header, and a length starting with the gzip or zstd magic byte would be over
/// 2^60 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// No compression: the bare record stream.
    None,
    /// gzip (RFC 1952); several concatenated members read as one stream.
    Gzip,
    /// Zstandard; several concatenated frames read as one stream.
    Zstd,
}

impl Compression {
    /// The compression the stream starting with `prefix` uses (plain when unrecognised).
    ///
    /// A zstd stream may start with a skippable frame (magic `0x184D2A5?`, little-endian),
    /// which decoders skip: writers put metadata there (bifrost puts an object's offset
    /// range). As a plain length header those bytes would be over 2^62.
    pub fn detect(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if prefix.starts_with(&ZSTD_MAGIC)
            || (prefix.len() >= 4 && prefix[0] & 0xF0 == 0x50 && prefix[1..4] == [0x2a, 0x4d, 0x18])
        {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The usual file-name suffix: `.baldr`, `.baldr.gz` or `.baldr.zst`.
    pub fn file_suffix(self) -> &'static str {
        match self {
            Compression::None => ".baldr",
            Compression::Gzip => ".baldr.gz",
            Compression::Zstd => ".baldr.zst",
        }
    }
}

/// The bytes read to detect the compression, put back in front of the rest of the input.
pub type Prefixed<R> = Chain<Take<Cursor<[u8; 4]>>, R>;

/// A reader that decompresses what [`open`] detected.
// One per open input: the gzip variant holds flate2's inflate state inline (zlib-rs makes
// it a few hundred bytes larger than the others), which costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Decompressor<R: Read> {
    /// Uncompressed input.
    Plain(Prefixed<R>),
    /// gzip input (multi-member).
    Gzip(MultiGzDecoder<Prefixed<R>>),
    /// zstd input (multi-frame).
    Zstd(zstd::stream::read::Decoder<'static, BufReader<Prefixed<R>>>),
}

impl<R: Read> Decompressor<R> {
    /// The compression detected.
    pub fn compression(&self) -> Compression {
        match self {
            Decompressor::Plain(_) => Compression::None,
            Decompressor::Gzip(_) => Compression::Gzip,
            Decompressor::Zstd(_) => Compression::Zstd,
        }
    }
}

impl<R: Read> std::fmt::Debug for Decompressor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Decompressor")
            .field(&self.compression())
            .finish()
    }
}

impl<R: Read> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decompressor::Plain(r) => r.read(buf),
            Decompressor::Gzip(r) => r.read(buf),
            Decompressor::Zstd(r) => r.read(buf),
        }
    }
}

/// Opens `input` for reading, detecting gzip or zstd from its first bytes (plain otherwise).
///
/// ```
/// use std::io::Read;
/// let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
/// std::io::Write::write_all(&mut gz, b"\0\0\0\0\0\0\0\x02hi")?;
/// let mut plain = Vec::new();
/// let file = gz.finish()?;
/// let mut input = baldr::open(&file[..])?;
/// assert_eq!(input.compression(), baldr::Compression::Gzip);
/// input.read_to_end(&mut plain)?;
/// assert_eq!(plain, b"\0\0\0\0\0\0\0\x02hi");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn open<R: Read>(mut input: R) -> io::Result<Decompressor<R>> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match input.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let compression = Compression::detect(&magic[..got]);
    let prefixed = Cursor::new(magic).take(got as u64).chain(input);
    Ok(match compression {
        Compression::None => Decompressor::Plain(prefixed),
        Compression::Gzip => Decompressor::Gzip(MultiGzDecoder::new(prefixed)),
        Compression::Zstd => Decompressor::Zstd(zstd::stream::read::Decoder::new(prefixed)?),
    })
}

/// A [`Reader`] over `input`, decompressing gzip or zstd when detected.
///
/// ```
/// let mut writer = baldr::Writer::new(baldr::Compressor::new(Vec::new(), baldr::Compression::Zstd)?);
/// writer.write_record(b"record")?;
/// let file = writer.finish()?.finish()?;
/// let records: Vec<_> = baldr::open_reader(&file[..])?.collect::<Result<_, _>>()?;
/// assert_eq!(records, [bytes::Bytes::from_static(b"record")]);
/// # Ok::<(), baldr::Error>(())
/// ```
pub fn open_reader<R: Read>(input: R) -> Result<Reader<Decompressor<R>>, Error> {
    Ok(Reader::new(open(input)?))
}

/// A writer that compresses the record stream as a whole.
pub enum Compressor<W: Write> {
    /// No compression.
    Plain(W),
    /// gzip.
    Gzip(GzEncoder<W>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    /// A compressor at the format's default level (gzip 6, zstd 3).
    pub fn new(inner: W, compression: Compression) -> io::Result<Self> {
        let level = match compression {
            Compression::None => 0,
            Compression::Gzip => 6,
            Compression::Zstd => zstd::DEFAULT_COMPRESSION_LEVEL,
        };
        Self::with_level(inner, compression, level)
    }

    /// A compressor at `level` (gzip 0-9, zstd 1-22; ignored for no compression).
    pub fn with_level(inner: W, compression: Compression, level: i32) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Compressor::Plain(inner),
            Compression::Gzip => Compressor::Gzip(GzEncoder::new(
                inner,
                flate2::Compression::new(level.clamp(0, 9).unsigned_abs()),
            )),
            Compression::Zstd => Compressor::Zstd(zstd::stream::write::Encoder::new(inner, level)?),
        })
    }

    /// Writes the compressed stream's trailer and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Plain(mut w) => {
                w.flush()?;
                Ok(w)
            }
            Compressor::Gzip(w) => w.finish(),
            Compressor::Zstd(w) => w.finish(),
        }
    }
}

impl<W: Write> Compressor<W> {
    /// The compression this writer applies.
    pub fn compression(&self) -> Compression {
        match self {
            Compressor::Plain(_) => Compression::None,
            Compressor::Gzip(_) => Compression::Gzip,
            Compressor::Zstd(_) => Compression::Zstd,
        }
    }
}

impl<W: Write> std::fmt::Debug for Compressor<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Compressor")
            .field(&self.compression())
            .finish()
    }
}

impl<W: Write> Write for Compressor<W> {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Plain(w) => w.write(buf),
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Zstd(w) => w.write(buf),
        }
    }

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Compressor::Plain(w) => w.write_all(buf),
            Compressor::Gzip(w) => w.write_all(buf),
            Compressor::Zstd(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Plain(w) => w.flush(),
            Compressor::Gzip(w) => w.flush(),
            Compressor::Zstd(w) => w.flush(),
        }
    }
}

/// A [`Writer`] whose output is compressed as `compression` says.
///
/// Finish it with `writer.finish()?.finish()?` to get `inner` back with a complete stream.
pub fn compressed_writer<W: Write>(
    inner: W,
    compression: Compression,
) -> io::Result<Writer<Compressor<W>>> {
    Ok(Writer::new(Compressor::new(inner, compression)?))
}
