//! Reading data files as the PostgreSQL and SQLite loaders do: decompression and the COPY
//! options that shape data ([`ReadFormat`]), into records of optional fields, with reused
//! buffers (no per-record allocation for delimited text and CSV).

use std::pin::Pin;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use crate::error::{Error, Result};
use crate::manifest::Ident;
use crate::options::{Compression, Layout, ReadFormat};

/// The longest record accepted (bytes, including continuation lines).
pub(crate) const MAX_RECORD: usize = 16 << 20;

/// A boxed buffered reader.
pub(crate) type BoxBufRead = Pin<Box<dyn AsyncBufRead + Send>>;

/// Wraps a raw byte reader with the decompressor the format asks for.
pub(crate) fn decompress(r: BoxBufRead, c: Compression) -> BoxBufRead {
    use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
    match c {
        Compression::None => r,
        Compression::Gzip => {
            let mut d = GzipDecoder::new(r);
            d.multiple_members(true);
            Box::pin(BufReader::with_capacity(256 << 10, d))
        }
        Compression::Zstd => {
            let mut d = ZstdDecoder::new(r);
            d.multiple_members(true);
            Box::pin(BufReader::with_capacity(256 << 10, d))
        }
    }
}

/// One record: fields in column order, `None` for NULL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    data: &'a [u8],
    fields: &'a [Option<(usize, usize)>],
}

impl<'a> Record<'a> {
    /// Field `i` (`None`: NULL or out of range).
    pub(crate) fn get(&self, i: usize) -> Option<&'a [u8]> {
        self.fields
            .get(i)
            .copied()
            .flatten()
            .map(|(s, e)| &self.data[s..e])
    }
    /// The fields in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Option<&'a [u8]>> + '_ {
        (0..self.fields.len()).map(|i| self.get(i))
    }
}

/// Reads records from one data file.
pub(crate) struct RecordReader {
    r: BoxBufRead,
    fmt: ReadFormat,
    columns: Vec<String>,
    file: String,
    line: Vec<u8>,
    data: Vec<u8>,
    fields: Vec<Option<(usize, usize)>>,
    /// Physical lines read so far.
    lines: u64,
}

impl RecordReader {
    /// A reader for `file` (its key, for errors) with `columns` expected per record. `r` is the
    /// raw (still compressed) content.
    pub(crate) fn new(
        r: BoxBufRead,
        fmt: &ReadFormat,
        columns: &[Ident],
        file: &str,
    ) -> RecordReader {
        RecordReader {
            r: decompress(r, fmt.compression),
            fmt: fmt.clone(),
            columns: columns.iter().map(|c| c.as_str().to_string()).collect(),
            file: file.to_string(),
            line: Vec::with_capacity(4096),
            data: Vec::with_capacity(4096),
            fields: Vec::with_capacity(columns.len()),
            lines: 0,
        }
    }

    /// The 1-based line number where the last record ended.
    pub(crate) fn line_number(&self) -> u64 {
        self.lines
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Data {
            file: self.file.clone(),
            record: self.lines,
            message: message.into(),
        }
    }

    /// Appends one physical line (with its `\n`) to `self.line`; false at end of input.
    async fn read_line(&mut self) -> Result<bool> {
        let start = self.line.len();
        loop {
            let buf = match self.r.fill_buf().await {
                Ok(b) => b,
                Err(e) => {
                    return Err(Error::Data {
                        file: self.file.clone(),
                        record: self.lines,
                        message: format!("read failed: {e}"),
                    });
                }
            };
            if buf.is_empty() {
                if self.line.len() > start {
                    self.lines += 1;
                }
                return Ok(self.line.len() > start);
            }
            let (n, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if self.line.len() + n > MAX_RECORD {
                return Err(Error::Data {
                    file: self.file.clone(),
                    record: self.lines + 1,
                    message: format!("record longer than {MAX_RECORD} bytes"),
                });
            }
            self.line.extend_from_slice(&buf[..n]);
            self.r.as_mut().consume(n);
            if done {
                self.lines += 1;
                return Ok(true);
            }
        }
    }

    /// Whether the record in `self.line` continues on the next line.
    fn continues(&self) -> bool {
        if self.line.last() != Some(&b'\n') {
            return false;
        }
        match self.fmt.layout {
            Layout::Text { escape: true, .. } => {
                let body = &self.line[..self.line.len() - 1];
                body.iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
            }
            Layout::Csv { quote, .. } => self.line.iter().filter(|&&b| b == quote).count() % 2 == 1,
            _ => false,
        }
    }

    /// The next record, or `None` at the end of the file.
    pub(crate) async fn next(&mut self) -> Result<Option<Record<'_>>> {
        loop {
            self.line.clear();
            if !self.read_line().await? {
                return Ok(None);
            }
            while self.continues() {
                if !self.read_line().await? {
                    return Err(self.err("file ends inside a quoted or escaped field"));
                }
            }
            if self.lines <= self.fmt.ignore_header {
                continue;
            }
            // Line end: "\n", and a "\r" before it.
            let mut end = self.line.len();
            if self.line[..end].ends_with(b"\n") {
                end -= 1;
                if self.line[..end].ends_with(b"\r") {
                    end -= 1;
                }
            }
            self.line.truncate(end);
            if self.line.is_empty() && matches!(self.fmt.layout, Layout::JsonAuto { .. }) {
                continue;
            }
            if std::str::from_utf8(&self.line).is_err() {
                match self.fmt.accept_inv_chars {
                    Some(c) => {
                        let fixed = String::from_utf8_lossy(&self.line)
                            .replace('\u{FFFD}', c.encode_utf8(&mut [0; 4]));
                        self.line.clear();
                        self.line.extend_from_slice(fixed.as_bytes());
                    }
                    None => return Err(self.err("invalid UTF-8 (ACCEPTINVCHARS replaces it)")),
                }
            }
            self.data.clear();
            self.fields.clear();
            match self.fmt.layout {
                Layout::Text {
                    delimiter,
                    escape,
                    remove_quotes,
                } => self.split_text(delimiter, escape, remove_quotes),
                Layout::Csv { delimiter, quote } => self.split_csv(delimiter, quote),
                Layout::JsonAuto { ignore_case } => self.split_json(ignore_case)?,
            }
            let want = self.columns.len();
            if self.fields.len() < want && self.fmt.fill_record {
                self.fields.resize(want, None);
            }
            if self.fields.len() != want {
                return Err(self.err(format!(
                    "{} fields, expected {want} (the manifest's columns)",
                    self.fields.len()
                )));
            }
            return Ok(Some(Record {
                data: &self.data,
                fields: &self.fields,
            }));
        }
    }

    /// Applies NULL AS (on the raw field), then trimming and the blank/empty rules to the
    /// field just written at `data[start..]`.
    fn finish_field(&mut self, start: usize, raw_is_null: bool, quoted: bool) {
        if raw_is_null {
            self.data.truncate(start);
            self.fields.push(None);
            return;
        }
        if self.fmt.trim_blanks {
            while self.data.len() > start && self.data.last() == Some(&b' ') {
                self.data.pop();
            }
        }
        let f = &self.data[start..];
        let null = !quoted
            && ((self.fmt.empty_as_null && f.is_empty())
                || (self.fmt.blanks_as_null && !f.is_empty() && f.iter().all(|&b| b == b' ')));
        if null {
            self.data.truncate(start);
            self.fields.push(None);
        } else {
            self.fields.push(Some((start, self.data.len())));
        }
    }

    fn split_text(&mut self, delimiter: u8, escape: bool, remove_quotes: bool) {
        let line = std::mem::take(&mut self.line);
        let null_opt = self.fmt.null_as.take();
        let mut i = 0;
        loop {
            let start = self.data.len();
            let raw_start = i;
            let mut in_quotes = false;
            let mut quoted = false;
            if remove_quotes && line.get(i) == Some(&b'"') {
                in_quotes = true;
                quoted = true;
                i += 1;
            }
            while i < line.len() {
                let b = line[i];
                if escape && b == b'\\' && i + 1 < line.len() {
                    self.data.push(line[i + 1]);
                    i += 2;
                    continue;
                }
                if in_quotes && b == b'"' {
                    in_quotes = false;
                    i += 1;
                    continue;
                }
                if !in_quotes && b == delimiter {
                    break;
                }
                self.data.push(b);
                i += 1;
            }
            let raw = &line[raw_start..i];
            let is_null = null_opt.as_deref() == Some(raw);
            self.finish_field(start, is_null, quoted);
            if i >= line.len() {
                break;
            }
            i += 1; // delimiter
        }
        self.fmt.null_as = null_opt;
        self.line = line;
    }

    fn split_csv(&mut self, delimiter: u8, quote: u8) {
        let line = std::mem::take(&mut self.line);
        let null_as = self.fmt.null_as.take();
        let mut i = 0;
        loop {
            let start = self.data.len();
            let raw_start = i;
            let mut quoted = false;
            if line.get(i) == Some(&quote) {
                quoted = true;
                i += 1;
                while i < line.len() {
                    match line[i..].iter().position(|&b| b == quote) {
                        None => {
                            self.data.extend_from_slice(&line[i..]);
                            i = line.len();
                        }
                        Some(q) => {
                            self.data.extend_from_slice(&line[i..i + q]);
                            i += q;
                            if line.get(i + 1) == Some(&quote) {
                                self.data.push(quote);
                                i += 2;
                                continue;
                            }
                            i += 1;
                            break;
                        }
                    }
                }
            }
            let end = line[i..]
                .iter()
                .position(|&b| b == delimiter)
                .map_or(line.len(), |d| i + d);
            self.data.extend_from_slice(&line[i..end]);
            i = end;
            let raw = &line[raw_start..i];
            let is_null = !quoted && null_as.as_deref().is_some_and(|n| n == raw);
            self.finish_field(start, is_null, quoted);
            if i >= line.len() {
                break;
            }
            i += 1;
        }
        self.fmt.null_as = null_as;
        self.line = line;
    }

    fn split_json(&mut self, ignore_case: bool) -> Result<()> {
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&self.line)
            .map_err(|e| self.err(format!("not a JSON object: {e}")))?;
        let columns = std::mem::take(&mut self.columns);
        for col in &columns {
            let v = if ignore_case {
                obj.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(col))
                    .map(|(_, v)| v)
            } else {
                obj.get(col)
            };
            let start = self.data.len();
            match v {
                None | Some(serde_json::Value::Null) => {
                    self.fields.push(None);
                    continue;
                }
                Some(serde_json::Value::String(s)) => self.data.extend_from_slice(s.as_bytes()),
                Some(other) => serde_json::to_writer(&mut self.data, other)
                    .map_err(|e| self.err(format!("column {col}: {e}")))?,
            }
            self.finish_field(start, false, false);
        }
        self.columns = columns;
        Ok(())
    }
}

/// Whether any key repeats within a batch: exact up to 64-bit hashes of the key fields (a
/// collision reports a duplicate, the safe answer). At most `cap` keys are remembered; past
/// that the answer is "unknown" (treated as "may repeat").
#[derive(Debug, Clone)]
pub(crate) struct KeyTracker {
    key_idx: Vec<usize>,
    seen: std::collections::HashSet<u64, std::hash::BuildHasherDefault<IdHasher>>,
    cap: usize,
    state: KeyState,
}

/// What a [`KeyTracker`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyState {
    /// No key seen twice so far.
    Unique,
    /// Some key (or its hash) was seen twice.
    Duplicate,
    /// Too many keys to track.
    Unknown,
}

/// Hasher for keys that are already hashes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl KeyTracker {
    /// Tracks the fields at `key_idx` (the key columns' positions), remembering up to `cap` keys.
    pub(crate) fn new(key_idx: Vec<usize>, cap: usize) -> KeyTracker {
        KeyTracker {
            key_idx,
            seen: Default::default(),
            cap,
            state: KeyState::Unique,
        }
    }

    /// Looks at one record.
    pub(crate) fn observe(&mut self, rec: &Record<'_>) {
        use std::hash::{Hash, Hasher};
        if self.state != KeyState::Unique {
            return;
        }
        let mut h = std::hash::DefaultHasher::new();
        for &i in &self.key_idx {
            rec.get(i).hash(&mut h);
        }
        if !self.seen.insert(h.finish()) {
            self.state = KeyState::Duplicate;
            self.seen = Default::default();
        } else if self.seen.len() > self.cap {
            self.state = KeyState::Unknown;
            self.seen = Default::default();
        }
    }

    /// The state so far.
    pub(crate) fn state(&self) -> KeyState {
        self.state
    }
}

/// Appends a record in PostgreSQL's COPY text format (tab-separated, `\N` for NULL).
pub(crate) fn encode_pg_text(rec: &Record<'_>, out: &mut Vec<u8>) {
    encode_fields(rec.iter(), out);
}

/// Appends only the fields at `idx` (in that order) in PostgreSQL's COPY text format.
pub(crate) fn encode_pg_text_fields(rec: &Record<'_>, idx: &[usize], out: &mut Vec<u8>) {
    encode_fields(idx.iter().map(|&i| rec.get(i)), out);
}

fn encode_fields<'a>(fields: impl Iterator<Item = Option<&'a [u8]>>, out: &mut Vec<u8>) {
    for (i, f) in fields.enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match f {
            None => out.extend_from_slice(b"\\N"),
            Some(b) => {
                if b.iter()
                    .any(|&c| matches!(c, b'\\' | b'\t' | b'\n' | b'\r'))
                {
                    for &c in b {
                        match c {
                            b'\\' => out.extend_from_slice(b"\\\\"),
                            b'\t' => out.extend_from_slice(b"\\t"),
                            b'\n' => out.extend_from_slice(b"\\n"),
                            b'\r' => out.extend_from_slice(b"\\r"),
                            c => out.push(c),
                        }
                    }
                } else {
                    out.extend_from_slice(b);
                }
            }
        }
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::CopyOption;

    fn rows(data: &[u8], opts: &[&str], ncols: usize) -> Result<Vec<Vec<Option<String>>>> {
        let opts: Vec<_> = opts.iter().map(|o| CopyOption::parse(o).unwrap()).collect();
        let (f, _) = ReadFormat::from_options(&opts, None).unwrap();
        let cols: Vec<Ident> = (0..ncols)
            .map(|i| Ident::new(&format!("c{i}")).unwrap())
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let data = data.to_vec();
        rt.block_on(async move {
            let mut r = RecordReader::new(Box::pin(std::io::Cursor::new(data)), &f, &cols, "f.txt");
            let mut out = Vec::new();
            while let Some(rec) = r.next().await? {
                out.push(
                    rec.iter()
                        .map(|x| x.map(|b| String::from_utf8(b.to_vec()).unwrap()))
                        .collect(),
                );
            }
            Ok(out)
        })
    }

    fn s(x: &str) -> Option<String> {
        Some(x.to_string())
    }

    #[test]
    fn readme_tsv_with_header_escape_and_trimblanks() {
        let got = rows(
            b"foo\tbar\n1\thello  \n2\ta\\\tb\n3\t\\N\n4\tline\\\nbreak\n",
            &["DELIMITER '\\t'", "IGNOREHEADER 1", "ESCAPE", "TRIMBLANKS"],
            2,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                vec![s("1"), s("hello")],
                vec![s("2"), s("a\tb")],
                vec![s("3"), None],
                vec![s("4"), s("line\nbreak")],
            ]
        );
    }

    #[test]
    fn text_null_as_matches_the_raw_field_even_when_empty() {
        let got = rows(b"1|\\N|x\n2||y\n", &[], 3).unwrap();
        assert_eq!(
            got,
            vec![vec![s("1"), None, s("x")], vec![s("2"), s(""), s("y")]]
        );
        let got = rows(b"1|\\N|x\n2||y\n", &["NULL AS ''"], 3).unwrap();
        assert_eq!(
            got,
            vec![vec![s("1"), s("\\N"), s("x")], vec![s("2"), None, s("y")]]
        );
    }

    #[test]
    fn csv_quoting_nulls_and_blanks() {
        let got = rows(
            b"1,\"a,b\",x\r\n2,\"multi\nline \"\"q\"\"\",\n3,NUL,\"\"\n4,  ,z\n",
            &["CSV", "NULL AS 'NUL'", "EMPTYASNULL", "BLANKSASNULL"],
            3,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                vec![s("1"), s("a,b"), s("x")],
                vec![s("2"), s("multi\nline \"q\""), None],
                vec![s("3"), None, s("")],
                vec![s("4"), None, s("z")],
            ]
        );
    }

    #[test]
    fn json_auto_and_fillrecord_and_errors() {
        let got = rows(
            b"{\"c0\": 1, \"c1\": \"x\"}\n\n{\"c0\": 2, \"c1\": null, \"other\": true}\n",
            &["JSON 'auto'"],
            2,
        )
        .unwrap();
        assert_eq!(got, vec![vec![s("1"), s("x")], vec![s("2"), None]]);
        let got = rows(b"1|a\n2\n", &["FILLRECORD"], 2).unwrap();
        assert_eq!(got, vec![vec![s("1"), s("a")], vec![s("2"), None]]);
        let e = rows(b"1|a\n2\n", &[], 2).unwrap_err().to_string();
        assert!(
            e.contains("f.txt") && e.contains("record 2") && e.contains("1 fields"),
            "{e}"
        );
        let e = rows(b"1,\"open\n", &["CSV"], 2).unwrap_err().to_string();
        assert!(e.contains("quoted"), "{e}");
        let e = rows(b"1|\xff\n", &[], 2).unwrap_err().to_string();
        assert!(e.contains("UTF-8"), "{e}");
        let got = rows(b"1|\xff\n", &["ACCEPTINVCHARS"], 2).unwrap();
        assert_eq!(got, vec![vec![s("1"), s("?")]]);
    }

    #[test]
    fn key_tracker_finds_repeats() {
        let data = b"1a2a1b".to_vec();
        let rec = |k: usize| [Some((k, k + 1)), Some((k + 1, k + 2))];
        let r0 = rec(0);
        let r2 = rec(2);
        let r4 = rec(4);
        let mut t = KeyTracker::new(vec![0], 10);
        t.observe(&Record {
            data: &data,
            fields: &r0,
        });
        t.observe(&Record {
            data: &data,
            fields: &r2,
        });
        assert_eq!(t.state(), KeyState::Unique);
        t.observe(&Record {
            data: &data,
            fields: &r4,
        });
        assert_eq!(t.state(), KeyState::Duplicate);
        let mut t = KeyTracker::new(vec![0, 1], 10);
        for r in [&r0, &r2, &r4] {
            t.observe(&Record {
                data: &data,
                fields: r,
            });
        }
        assert_eq!(t.state(), KeyState::Unique);
        let mut t = KeyTracker::new(vec![0, 1], 1);
        for r in [&r0, &r2, &r4] {
            t.observe(&Record {
                data: &data,
                fields: r,
            });
        }
        assert_eq!(t.state(), KeyState::Unknown);
    }

    #[test]
    fn pg_text_encoding_escapes() {
        let data = b"a\tb\\c\nd".to_vec();
        let fields = [Some((0, data.len())), None, Some((0, 1))];
        let rec = Record {
            data: &data,
            fields: &fields,
        };
        let mut out = Vec::new();
        encode_pg_text(&rec, &mut out);
        assert_eq!(out, b"a\\tb\\\\c\\nd\t\\N\ta\n");
    }
}
