//! Result sets written as a table, CSV, JSON, JSON lines or Markdown, row by row.

use std::io::{self, Write};

/// How a value prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SQL NULL.
    Null,
    /// A number, as the database wrote it (a JSON number).
    Number,
    /// `true` or `false`.
    Bool,
    /// Text (a JSON string).
    Text,
    /// A JSON document (PostgreSQL `json`/`jsonb`), written as is in JSON output.
    Json,
}

/// One value of a row: its kind and its text (reused from row to row).
#[derive(Debug, Clone)]
pub struct Value {
    /// How it prints.
    pub kind: Kind,
    /// Its text (empty for NULL).
    pub text: String,
}

impl Value {
    /// A NULL with an empty buffer.
    pub fn null() -> Value {
        Value {
            kind: Kind::Null,
            text: String::new(),
        }
    }

    /// Replaces the value with `kind` and `text`, reusing the buffer.
    pub fn set(&mut self, kind: Kind, text: &str) {
        self.kind = kind;
        self.text.clear();
        self.text.push_str(text);
    }
}

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns, wrapped to the terminal's width.
    Table,
    /// RFC 4180: CRLF line ends, quotes where needed, a header line.
    Csv,
    /// One JSON array of objects per result.
    Json,
    /// One JSON object per line.
    Jsonl,
    /// A Markdown table.
    Markdown,
}

/// Options every writer takes.
#[derive(Debug, Clone)]
pub struct Style {
    /// Print the column names (table, CSV, Markdown).
    pub header: bool,
    /// How NULL prints in table, CSV and Markdown output.
    pub null: String,
    /// Wrap tables to this width (a terminal's); `None`: no wrapping.
    pub width: Option<u16>,
}

/// Rows a table shows at once: its columns are sized per page, so memory stays bounded.
pub const TABLE_PAGE: usize = 1000;

/// Writes one result set.
pub trait ResultWriter {
    /// The result's columns (called once, before any row).
    fn columns(&mut self, out: &mut dyn Write, names: &[String]) -> io::Result<()>;
    /// One row, as many values as columns.
    fn row(&mut self, out: &mut dyn Write, values: &[Value]) -> io::Result<()>;
    /// After the last row.
    fn finish(&mut self, out: &mut dyn Write) -> io::Result<()>;
}

/// A writer for `format`.
pub fn writer(format: Format, style: &Style) -> Box<dyn ResultWriter> {
    match format {
        Format::Csv => Box::new(Csv {
            style: style.clone(),
        }),
        Format::Json => Box::new(Json {
            keys: Vec::new(),
            lines: false,
            rows: 0,
        }),
        Format::Jsonl => Box::new(Json {
            keys: Vec::new(),
            lines: true,
            rows: 0,
        }),
        Format::Markdown => Box::new(Markdown {
            style: style.clone(),
            cell: String::new(),
        }),
        Format::Table => Box::new(Table {
            style: style.clone(),
            names: Vec::new(),
            page: Vec::new(),
            rows: 0,
        }),
    }
}

fn shown<'a>(v: &'a Value, null: &'a str) -> &'a str {
    match v.kind {
        Kind::Null => null,
        _ => &v.text,
    }
}

struct Csv {
    style: Style,
}

/// One CSV field: quoted when it holds a comma, a quote, CR or LF (or is empty and NULL is
/// not, so the two stay apart), quotes doubled.
fn csv_field(out: &mut dyn Write, field: &str, quote_empty: bool) -> io::Result<()> {
    let needs = field.is_empty() && quote_empty || field.contains([',', '"', '\r', '\n']);
    if !needs {
        return out.write_all(field.as_bytes());
    }
    out.write_all(b"\"")?;
    for (i, part) in field.split('"').enumerate() {
        if i > 0 {
            out.write_all(b"\"\"")?;
        }
        out.write_all(part.as_bytes())?;
    }
    out.write_all(b"\"")
}

impl ResultWriter for Csv {
    fn columns(&mut self, out: &mut dyn Write, names: &[String]) -> io::Result<()> {
        if !self.style.header {
            return Ok(());
        }
        for (i, n) in names.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            csv_field(out, n, false)?;
        }
        out.write_all(b"\r\n")
    }

    fn row(&mut self, out: &mut dyn Write, values: &[Value]) -> io::Result<()> {
        let quote_empty = self.style.null.is_empty();
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            match v.kind {
                Kind::Null => csv_field(out, &self.style.null, false)?,
                _ => csv_field(out, &v.text, quote_empty)?,
            }
        }
        out.write_all(b"\r\n")
    }

    fn finish(&mut self, _out: &mut dyn Write) -> io::Result<()> {
        Ok(())
    }
}

/// JSON (an array per result) or JSON lines (an object per line).
struct Json {
    /// The column names, already JSON-encoded with their colon (`"name":`).
    keys: Vec<String>,
    lines: bool,
    rows: u64,
}

fn json_string(out: &mut dyn Write, s: &str) -> io::Result<()> {
    serde_json::to_writer(&mut *out, s).map_err(io::Error::other)
}

/// Whether `s` is a JSON number as written (a database's NaN or Infinity is not).
fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if b.get(i) == Some(&b'0') {
        i += 1;
    } else if !digits(&mut i) {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

impl ResultWriter for Json {
    fn columns(&mut self, _out: &mut dyn Write, names: &[String]) -> io::Result<()> {
        self.keys = names
            .iter()
            .map(|n| serde_json::to_string(n).map(|k| k + ":"))
            .collect::<Result<_, _>>()
            .map_err(io::Error::other)?;
        Ok(())
    }

    fn row(&mut self, out: &mut dyn Write, values: &[Value]) -> io::Result<()> {
        if !self.lines {
            out.write_all(if self.rows == 0 { b"[\n" } else { b",\n" })?;
        }
        self.rows += 1;
        out.write_all(b"{")?;
        for (i, (k, v)) in self.keys.iter().zip(values).enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            out.write_all(k.as_bytes())?;
            match v.kind {
                Kind::Null => out.write_all(b"null")?,
                Kind::Bool | Kind::Json => out.write_all(v.text.as_bytes())?,
                Kind::Number if is_json_number(&v.text) => out.write_all(v.text.as_bytes())?,
                Kind::Number | Kind::Text => json_string(out, &v.text)?,
            }
        }
        out.write_all(b"}")?;
        if self.lines {
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        match (self.lines, self.rows) {
            (true, _) => Ok(()),
            (false, 0) => out.write_all(b"[]\n"),
            (false, _) => out.write_all(b"\n]\n"),
        }
    }
}

struct Markdown {
    style: Style,
    cell: String,
}

impl Markdown {
    fn cell(&mut self, out: &mut dyn Write, text: &str) -> io::Result<()> {
        self.cell.clear();
        for c in text.chars() {
            match c {
                '|' => self.cell.push_str("\\|"),
                '\\' => self.cell.push_str("\\\\"),
                '\n' => self.cell.push_str("<br>"),
                '\r' => {}
                c => self.cell.push(c),
            }
        }
        out.write_all(b" ")?;
        out.write_all(self.cell.as_bytes())?;
        out.write_all(b" |")
    }
}

impl ResultWriter for Markdown {
    fn columns(&mut self, out: &mut dyn Write, names: &[String]) -> io::Result<()> {
        // A Markdown table cannot go without its header line.
        out.write_all(b"|")?;
        for n in names {
            self.cell(out, n)?;
        }
        out.write_all(b"\n|")?;
        for _ in names {
            out.write_all(b"---|")?;
        }
        out.write_all(b"\n")
    }

    fn row(&mut self, out: &mut dyn Write, values: &[Value]) -> io::Result<()> {
        out.write_all(b"|")?;
        let null = std::mem::take(&mut self.style.null);
        for v in values {
            self.cell(out, shown(v, &null))?;
        }
        self.style.null = null;
        out.write_all(b"\n")
    }

    fn finish(&mut self, _out: &mut dyn Write) -> io::Result<()> {
        Ok(())
    }
}

/// Aligned columns (comfy-table), printed a page of [`TABLE_PAGE`] rows at a time.
struct Table {
    style: Style,
    names: Vec<String>,
    page: Vec<Vec<String>>,
    rows: u64,
}

impl Table {
    fn flush_page(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let mut t = comfy_table::Table::new();
        t.load_style(comfy_table::presets::ASCII_FULL_CONDENSED);
        match self.style.width {
            Some(w) => {
                t.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
                t.set_width(w);
            }
            None => {
                t.set_content_arrangement(comfy_table::ContentArrangement::Disabled);
            }
        }
        if self.style.header {
            t.set_header(&self.names);
        }
        for row in self.page.drain(..) {
            t.add_row(row);
        }
        writeln!(out, "{t}")
    }
}

impl ResultWriter for Table {
    fn columns(&mut self, _out: &mut dyn Write, names: &[String]) -> io::Result<()> {
        self.names = names.to_vec();
        Ok(())
    }

    fn row(&mut self, out: &mut dyn Write, values: &[Value]) -> io::Result<()> {
        self.page.push(
            values
                .iter()
                .map(|v| shown(v, &self.style.null).to_string())
                .collect(),
        );
        self.rows += 1;
        if self.page.len() >= TABLE_PAGE {
            self.flush_page(out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if !self.page.is_empty() || self.rows == 0 {
            self.flush_page(out)?;
        }
        let n = self.rows;
        writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(kind: Kind, text: &str) -> Value {
        Value {
            kind,
            text: text.into(),
        }
    }

    fn render(format: Format, null: &str) -> String {
        let style = Style {
            header: true,
            null: null.into(),
            width: None,
        };
        let mut w = writer(format, &style);
        let mut out = Vec::new();
        w.columns(&mut out, &["id".into(), "note".into()]).unwrap();
        w.row(
            &mut out,
            &[v(Kind::Number, "1"), v(Kind::Text, "a, \"b\"\nc")],
        )
        .unwrap();
        w.row(&mut out, &[v(Kind::Number, "NaN"), Value::null()])
            .unwrap();
        w.row(&mut out, &[v(Kind::Number, "-2.5e3"), v(Kind::Text, "")])
            .unwrap();
        w.finish(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_quotes_what_it_must_and_keeps_null_apart_from_empty() {
        assert_eq!(
            render(Format::Csv, ""),
            "id,note\r\n1,\"a, \"\"b\"\"\nc\"\r\nNaN,\r\n-2.5e3,\"\"\r\n"
        );
        assert_eq!(
            render(Format::Csv, "NULL"),
            "id,note\r\n1,\"a, \"\"b\"\"\nc\"\r\nNaN,NULL\r\n-2.5e3,\r\n"
        );
    }

    #[test]
    fn json_keeps_numbers_numbers_and_null_null() {
        let text = render(Format::Json, "");
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!([
                {"id": 1, "note": "a, \"b\"\nc"},
                {"id": "NaN", "note": null},
                {"id": -2.5e3, "note": ""}
            ])
        );
        let lines = render(Format::Jsonl, "");
        assert_eq!(lines.lines().count(), 3);
        for l in lines.lines() {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
    }

    #[test]
    fn markdown_escapes_pipes_and_newlines() {
        assert_eq!(
            render(Format::Markdown, ""),
            "| id | note |\n|---|---|\n| 1 | a, \"b\"<br>c |\n| NaN |  |\n| -2.5e3 |  |\n"
        );
    }

    #[test]
    fn json_numbers_are_recognised() {
        for ok in [
            "0",
            "-1",
            "3.25",
            "1e10",
            "-2.5E-3",
            "123456789012345678901234567890",
        ] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in [
            "", "-", "01", "1.", ".5", "NaN", "Infinity", "1e", "0x1", "1 ",
        ] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }
}
