//! The offset range every archived object carries: first and last offset, record count and
//! byte count.
//!
//! It is written into the object itself, where any reader of the format skips it: a gzip
//! header extra field (RFC 1952 FEXTRA, subfield `bf`) or a zstd skippable frame in front of
//! the compressed frame. Written in the same put as the data, it can never be missing or
//! disagree with it, on any store (a sidecar object would be a second write: a crash between
//! the two would leave an object whose range nobody can know). Stores that keep object
//! metadata (S3) get it as `x-amz-meta-bifrost-*` too, for people and tools looking at the
//! bucket.

use std::fmt;

use object_store::{Attribute, Attributes};

/// How many bytes at the start of an object hold its range (a ranged read of this much
/// always gets it).
pub const HEADER_READ: u64 = 512;

const MAGIC: &str = "bifrost1";
/// The text's length: fixed, so that it is written before compressing and filled in after.
const TEXT_LEN: usize = MAGIC.len() + (1 + 6 + 20) + (1 + 5 + 20) + (1 + 8 + 20) + (1 + 6 + 20);
/// gzip: 10-byte header, XLEN, then the subfield's id and length.
const GZIP_TEXT_AT: usize = 10 + 2 + 4;
/// zstd: skippable frame magic and size.
const ZSTD_TEXT_AT: usize = 8;
const ZSTD_SKIPPABLE: u32 = 0x184D_2A5B;

/// The offsets and contents of one archived object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObjectRange {
    /// The offset of the first message archived in it (its key's number).
    pub first: i64,
    /// The offset of the last message archived in it; the next object starts after it.
    pub last: i64,
    /// Baldr records in it (tombstones skipped with `--tombstones skip` are in the range
    /// but not records).
    pub records: u64,
    /// Uncompressed bytes of its record stream (8-byte headers included).
    pub bytes: u64,
}

impl fmt::Display for ObjectRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "offsets {}..={} ({} records, {} bytes)",
            self.first, self.last, self.records, self.bytes
        )
    }
}

impl ObjectRange {
    fn text(&self) -> String {
        format!(
            "{MAGIC} first={:020} last={:020} records={:020} bytes={:020}",
            self.first, self.last, self.records, self.bytes
        )
    }

    /// The gzip header extra field's content (one subfield `bf`), to fill in later with
    /// [`ObjectRange::fill`].
    pub fn gzip_extra() -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + TEXT_LEN);
        v.extend_from_slice(b"bf");
        v.extend_from_slice(&(TEXT_LEN as u16).to_le_bytes());
        v.extend_from_slice(ObjectRange::default().text().as_bytes());
        v
    }

    /// A zstd skippable frame, to put in front of the compressed frame and fill in later.
    pub fn zstd_frame() -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + TEXT_LEN);
        v.extend_from_slice(&ZSTD_SKIPPABLE.to_le_bytes());
        v.extend_from_slice(&(TEXT_LEN as u32).to_le_bytes());
        v.extend_from_slice(ObjectRange::default().text().as_bytes());
        v
    }

    /// Writes the range into a finished object that started with [`gzip_extra`] or
    /// [`zstd_frame`](Self::zstd_frame) placeholders.
    ///
    /// [`gzip_extra`]: Self::gzip_extra
    pub fn fill(&self, object: &mut [u8], zstd: bool) {
        let at = if zstd { ZSTD_TEXT_AT } else { GZIP_TEXT_AT };
        let text = self.text();
        if let Some(slot) = object.get_mut(at..at + TEXT_LEN) {
            slot.copy_from_slice(text.as_bytes());
        }
    }

    /// Reads the range from the first bytes of an object (at least 512 of them,
    /// or the whole object when it is shorter).
    ///
    /// # Errors
    /// A message saying what is missing or damaged.
    pub fn parse(head: &[u8]) -> Result<ObjectRange, String> {
        let text = if head.starts_with(&[0x1f, 0x8b]) {
            gzip_text(head)?
        } else if head.len() >= 8
            && (u32::from_le_bytes([head[0], head[1], head[2], head[3]]) & 0xFFFF_FFF0)
                == 0x184D_2A50
        {
            let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
            head.get(ZSTD_TEXT_AT..ZSTD_TEXT_AT + size)
                .ok_or("truncated zstd skippable frame")?
        } else {
            return Err("no bifrost range: not a gzip or zstd object written by bifrost".into());
        };
        let text = std::str::from_utf8(text).map_err(|_| "range header is not text")?;
        let mut words = text.split_ascii_whitespace();
        if words.next() != Some(MAGIC) {
            return Err(format!("range header {text:?} is not bifrost's"));
        }
        let mut r = ObjectRange::default();
        let mut seen = 0;
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or(format!("range header word {w:?}"))?;
            let bad = || format!("range header {k}={v:?}");
            match k {
                "first" => r.first = v.parse().map_err(|_| bad())?,
                "last" => r.last = v.parse().map_err(|_| bad())?,
                "records" => r.records = v.parse().map_err(|_| bad())?,
                "bytes" => r.bytes = v.parse().map_err(|_| bad())?,
                _ => continue,
            }
            seen += 1;
        }
        if seen < 4 || r.last < r.first {
            return Err(format!("range header {text:?} is incomplete"));
        }
        Ok(r)
    }

    /// The object metadata of stores that keep it (S3's `x-amz-meta-bifrost-*`, Azure's
    /// `x-ms-meta-bifrost_*`: names as `kind` takes them).
    pub fn attributes(&self, kind: lifecycle::store::StoreKind) -> Attributes {
        let mut a = Attributes::new();
        for (k, v) in [
            ("bifrost-first-offset", self.first.to_string()),
            ("bifrost-last-offset", self.last.to_string()),
            ("bifrost-records", self.records.to_string()),
            ("bifrost-bytes", self.bytes.to_string()),
        ] {
            a.insert(Attribute::Metadata(kind.metadata_name(k).into()), v.into());
        }
        a
    }
}

/// The `bf` subfield of a gzip header's extra field.
fn gzip_text(head: &[u8]) -> Result<&[u8], String> {
    const FEXTRA: u8 = 0x04;
    if head.len() < 12 || head[2] != 8 {
        return Err("truncated or unknown gzip header".into());
    }
    if head[3] & FEXTRA == 0 {
        return Err("no bifrost range: the gzip header has no extra field".into());
    }
    let xlen = u16::from_le_bytes([head[10], head[11]]) as usize;
    let mut extra = head
        .get(12..12 + xlen)
        .ok_or("truncated gzip extra field")?;
    while extra.len() >= 4 {
        let len = u16::from_le_bytes([extra[2], extra[3]]) as usize;
        let data = extra
            .get(4..4 + len)
            .ok_or("truncated gzip extra subfield")?;
        if &extra[..2] == b"bf" {
            return Ok(data);
        }
        extra = &extra[4 + len..];
    }
    Err("no bifrost range in the gzip extra field".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn ranges_round_trip_through_gzip_and_zstd_objects_that_still_decode() {
        let r = ObjectRange {
            first: 42,
            last: 12_345_678_901,
            records: 3,
            bytes: 8 * 3 + 6,
        };
        // gzip
        let mut gz = flate2::GzBuilder::new()
            .extra(ObjectRange::gzip_extra())
            .write(Vec::new(), flate2::Compression::new(6));
        let mut w = baldr::Writer::new(&mut gz);
        for rec in [&b"a"[..], b"bb", b"ccc"] {
            w.write_record(rec).unwrap();
        }
        w.finish().unwrap();
        let mut obj = gz.finish().unwrap();
        r.fill(&mut obj, false);
        assert_eq!(ObjectRange::parse(&obj[..obj.len().min(512)]), Ok(r));
        let recs: Vec<_> = baldr::open_reader(&obj[..])
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(recs, [&b"a"[..], b"bb", b"ccc"]);
        // zstd
        let mut obj = ObjectRange::zstd_frame();
        let mut z = zstd::stream::write::Encoder::new(&mut obj, 3).unwrap();
        z.write_all(b"\0\0\0\0\0\0\0\x02hi").unwrap();
        z.finish().unwrap();
        r.fill(&mut obj, true);
        assert_eq!(ObjectRange::parse(&obj), Ok(r));
        let recs: Vec<_> = baldr::open_reader(&obj[..])
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(recs, [&b"hi"[..]]);
        // Anything else is refused with a reason.
        assert!(
            ObjectRange::parse(b"\0\0\0\0\0\0\0\x01x")
                .unwrap_err()
                .contains("not a gzip")
        );
        let mut plain_gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
        plain_gz.write_all(b"x").unwrap();
        let plain_gz = plain_gz.finish().unwrap();
        assert!(
            ObjectRange::parse(&plain_gz)
                .unwrap_err()
                .contains("no extra field")
        );
    }
}
