//! COPY options: the allow-list, parsing, rendering for Redshift, and how the PostgreSQL and
//! SQLite loaders honour the ones that shape data ([`ReadFormat`]).

use std::fmt;

/// One allowed Redshift COPY option, parsed from a manifest's `:options` string.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CopyOption {
    /// `DELIMITER [AS] 'c'` (the literal as written, e.g. `\t`).
    Delimiter(String),
    /// `CSV [QUOTE [AS] 'c']`.
    Csv {
        /// The quote character literal, if given.
        quote: Option<String>,
    },
    /// `JSON [AS] 'auto' | 'auto ignorecase' | 's3://jsonpaths'`.
    Json(String),
    /// `GZIP`.
    Gzip,
    /// `ZSTD`.
    Zstd,
    /// `BZIP2`.
    Bzip2,
    /// `IGNOREHEADER [AS] n`.
    IgnoreHeader(u64),
    /// `TIMEFORMAT [AS] '...'`.
    TimeFormat(String),
    /// `DATEFORMAT [AS] '...'`.
    DateFormat(String),
    /// `NULL [AS] '...'`.
    NullAs(String),
    /// `MAXERROR [AS] n`.
    MaxError(u64),
    /// `BLANKSASNULL`.
    BlanksAsNull,
    /// `EMPTYASNULL`.
    EmptyAsNull,
    /// `ACCEPTINVCHARS [AS 'c']`.
    AcceptInvChars(Option<String>),
    /// `TRUNCATECOLUMNS`.
    TruncateColumns,
    /// `ESCAPE`.
    Escape,
    /// `TRIMBLANKS`.
    TrimBlanks,
    /// `REMOVEQUOTES`.
    RemoveQuotes,
    /// `FILLRECORD`.
    FillRecord,
    /// `ROUNDEC`.
    RoundEc,
    /// `ACCEPTANYDATE`.
    AcceptAnyDate,
    /// `EXPLICIT_IDS`.
    ExplicitIds,
    /// `COMPUPDATE [ON|OFF|TRUE|FALSE|PRESET]`.
    CompUpdate(Option<String>),
    /// `STATUPDATE [ON|OFF|TRUE|FALSE]`.
    StatUpdate(Option<String>),
    /// `REGION [AS] 'region'`.
    Region(String),
    /// `ENCODING [AS] UTF8|UTF16|UTF16LE|UTF16BE`.
    Encoding(String),
}

/// The option names accepted in manifests, for error messages.
pub(crate) const ALLOWED: &str = "DELIMITER, CSV [QUOTE AS], JSON, GZIP, ZSTD, BZIP2, IGNOREHEADER, \
TIMEFORMAT, DATEFORMAT, NULL AS, MAXERROR, BLANKSASNULL, EMPTYASNULL, ACCEPTINVCHARS, \
TRUNCATECOLUMNS, ESCAPE, TRIMBLANKS, REMOVEQUOTES, FILLRECORD, ROUNDEC, ACCEPTANYDATE, \
EXPLICIT_IDS, COMPUPDATE, STATUPDATE, REGION, ENCODING";

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Lit(String),
    Num(u64),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut it = s.char_indices().peekable();
    while let Some(&(i, c)) = it.peek() {
        if c.is_whitespace() {
            it.next();
        } else if c == '\'' {
            it.next();
            let mut lit = String::new();
            loop {
                match it.next() {
                    None => return Err(format!("unterminated quoted literal at offset {i}")),
                    Some((_, '\'')) => {
                        if it.peek().map(|p| p.1) == Some('\'') {
                            it.next();
                            lit.push('\'');
                        } else {
                            break;
                        }
                    }
                    Some((_, '\\')) => {
                        // Keep backslash escapes verbatim, but never let `\'` end the literal.
                        lit.push('\\');
                        if let Some((_, n)) = it.next() {
                            lit.push(n);
                        }
                    }
                    Some((_, ch)) => lit.push(ch),
                }
            }
            out.push(Tok::Lit(lit));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut w = String::new();
            while let Some(&(_, ch)) = it.peek() {
                if ch.is_ascii_alphanumeric() || ch == '_' {
                    w.push(ch.to_ascii_uppercase());
                    it.next();
                } else {
                    break;
                }
            }
            out.push(Tok::Word(w));
        } else if c.is_ascii_digit() {
            let mut n = String::new();
            while let Some(&(_, ch)) = it.peek() {
                if ch.is_ascii_digit() {
                    n.push(ch);
                    it.next();
                } else {
                    break;
                }
            }
            out.push(Tok::Num(
                n.parse().map_err(|_| format!("number {n} too large"))?,
            ));
        } else {
            return Err(format!("unexpected character {c:?} at offset {i}"));
        }
    }
    Ok(out)
}

struct Toks {
    t: Vec<Tok>,
    i: usize,
}

impl Toks {
    fn word(&mut self, w: &str) -> bool {
        if matches!(self.t.get(self.i), Some(Tok::Word(x)) if x == w) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn opt_as(&mut self) {
        self.word("AS");
    }
    fn lit(&mut self, what: &str) -> Result<String, String> {
        match self.t.get(self.i) {
            Some(Tok::Lit(l)) => {
                self.i += 1;
                Ok(l.clone())
            }
            _ => Err(format!("expected a quoted {what}")),
        }
    }
    fn num(&mut self, what: &str) -> Result<u64, String> {
        match self.t.get(self.i) {
            Some(Tok::Num(n)) => {
                self.i += 1;
                Ok(*n)
            }
            _ => Err(format!("expected a number ({what})")),
        }
    }
    fn any_word(&mut self, allowed: &[&str]) -> Option<String> {
        for w in allowed {
            if self.word(w) {
                return Some((*w).to_string());
            }
        }
        None
    }
}

impl CopyOption {
    /// Parses one option string (case-insensitive keywords), refusing anything outside the
    /// allow-list ([`ALLOWED`]) or with trailing text. The error message says what is allowed.
    pub(crate) fn parse(s: &str) -> Result<CopyOption, String> {
        let mut t = Toks {
            t: tokenize(s)?,
            i: 0,
        };
        let head = match t.t.first() {
            Some(Tok::Word(w)) => w.clone(),
            _ => return Err(format!("expected an option name; allowed: {ALLOWED}")),
        };
        t.i = 1;
        let opt = match head.as_str() {
            "DELIMITER" => {
                t.opt_as();
                let l = t.lit("delimiter")?;
                decode_single_char(&l).map_err(|e| format!("DELIMITER {e}"))?;
                CopyOption::Delimiter(l)
            }
            "CSV" => {
                let quote = if t.word("QUOTE") {
                    t.opt_as();
                    let q = t.lit("quote character")?;
                    decode_single_char(&q).map_err(|e| format!("QUOTE {e}"))?;
                    Some(q)
                } else {
                    None
                };
                CopyOption::Csv { quote }
            }
            "JSON" => {
                t.opt_as();
                CopyOption::Json(t.lit("'auto', 'auto ignorecase' or jsonpaths URL")?)
            }
            "GZIP" => CopyOption::Gzip,
            "ZSTD" => CopyOption::Zstd,
            "BZIP2" => CopyOption::Bzip2,
            "IGNOREHEADER" => {
                t.opt_as();
                CopyOption::IgnoreHeader(t.num("header lines")?)
            }
            "TIMEFORMAT" => {
                t.opt_as();
                CopyOption::TimeFormat(t.lit("time format")?)
            }
            "DATEFORMAT" => {
                t.opt_as();
                CopyOption::DateFormat(t.lit("date format")?)
            }
            "NULL" => {
                t.opt_as();
                CopyOption::NullAs(t.lit("null string")?)
            }
            "MAXERROR" => {
                t.opt_as();
                CopyOption::MaxError(t.num("error count")?)
            }
            "BLANKSASNULL" => CopyOption::BlanksAsNull,
            "EMPTYASNULL" => CopyOption::EmptyAsNull,
            "ACCEPTINVCHARS" => {
                if t.word("AS") || matches!(t.t.get(t.i), Some(Tok::Lit(_))) {
                    let c = t.lit("replacement character")?;
                    decode_single_char(&c).map_err(|e| format!("ACCEPTINVCHARS {e}"))?;
                    CopyOption::AcceptInvChars(Some(c))
                } else {
                    CopyOption::AcceptInvChars(None)
                }
            }
            "TRUNCATECOLUMNS" => CopyOption::TruncateColumns,
            "ESCAPE" => CopyOption::Escape,
            "TRIMBLANKS" => CopyOption::TrimBlanks,
            "REMOVEQUOTES" => CopyOption::RemoveQuotes,
            "FILLRECORD" => CopyOption::FillRecord,
            "ROUNDEC" => CopyOption::RoundEc,
            "ACCEPTANYDATE" => CopyOption::AcceptAnyDate,
            "EXPLICIT_IDS" => CopyOption::ExplicitIds,
            "COMPUPDATE" => {
                CopyOption::CompUpdate(t.any_word(&["ON", "OFF", "TRUE", "FALSE", "PRESET"]))
            }
            "STATUPDATE" => CopyOption::StatUpdate(t.any_word(&["ON", "OFF", "TRUE", "FALSE"])),
            "REGION" => {
                t.opt_as();
                let r = t.lit("region")?;
                if r.is_empty() || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(format!("REGION {r:?} is not a region name"));
                }
                CopyOption::Region(r)
            }
            "ENCODING" => {
                t.opt_as();
                match t.any_word(&["UTF8", "UTF16LE", "UTF16BE", "UTF16"]) {
                    Some(e) => CopyOption::Encoding(e),
                    None => return Err("ENCODING expects UTF8, UTF16, UTF16LE or UTF16BE".into()),
                }
            }
            other => {
                return Err(format!(
                    "{other} is not an allowed COPY option; allowed: {ALLOWED}"
                ));
            }
        };
        if t.i != t.t.len() {
            return Err(format!(
                "unexpected text after {head}; one option per string; allowed: {ALLOWED}"
            ));
        }
        Ok(opt)
    }
}

/// Quotes a literal for SQL: `'` doubled.
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl fmt::Display for CopyOption {
    /// The canonical Redshift SQL for this option (literals re-quoted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CopyOption::*;
        match self {
            Delimiter(l) => write!(f, "DELIMITER {}", quote_literal(l)),
            Csv { quote: None } => f.write_str("CSV"),
            Csv { quote: Some(q) } => write!(f, "CSV QUOTE AS {}", quote_literal(q)),
            Json(l) => write!(f, "JSON {}", quote_literal(l)),
            Gzip => f.write_str("GZIP"),
            Zstd => f.write_str("ZSTD"),
            Bzip2 => f.write_str("BZIP2"),
            IgnoreHeader(n) => write!(f, "IGNOREHEADER {n}"),
            TimeFormat(l) => write!(f, "TIMEFORMAT {}", quote_literal(l)),
            DateFormat(l) => write!(f, "DATEFORMAT {}", quote_literal(l)),
            NullAs(l) => write!(f, "NULL AS {}", quote_literal(l)),
            MaxError(n) => write!(f, "MAXERROR {n}"),
            BlanksAsNull => f.write_str("BLANKSASNULL"),
            EmptyAsNull => f.write_str("EMPTYASNULL"),
            AcceptInvChars(None) => f.write_str("ACCEPTINVCHARS"),
            AcceptInvChars(Some(c)) => write!(f, "ACCEPTINVCHARS AS {}", quote_literal(c)),
            TruncateColumns => f.write_str("TRUNCATECOLUMNS"),
            Escape => f.write_str("ESCAPE"),
            TrimBlanks => f.write_str("TRIMBLANKS"),
            RemoveQuotes => f.write_str("REMOVEQUOTES"),
            FillRecord => f.write_str("FILLRECORD"),
            RoundEc => f.write_str("ROUNDEC"),
            AcceptAnyDate => f.write_str("ACCEPTANYDATE"),
            ExplicitIds => f.write_str("EXPLICIT_IDS"),
            CompUpdate(None) => f.write_str("COMPUPDATE"),
            CompUpdate(Some(w)) => write!(f, "COMPUPDATE {w}"),
            StatUpdate(None) => f.write_str("STATUPDATE"),
            StatUpdate(Some(w)) => write!(f, "STATUPDATE {w}"),
            Region(r) => write!(f, "REGION {}", quote_literal(r)),
            Encoding(e) => write!(f, "ENCODING {e}"),
        }
    }
}

/// Decodes a one-character literal as Redshift does (`\t`, `\\`, octal `\011`, or the
/// character itself) into a single byte.
pub(crate) fn decode_single_char(l: &str) -> Result<u8, String> {
    let b = match l {
        "\\t" => b'\t',
        "\\n" => b'\n',
        "\\r" => b'\r',
        "\\\\" => b'\\',
        "\\'" => b'\'',
        s if s.len() == 4 && s.starts_with('\\') => u8::from_str_radix(&s[1..], 8)
            .map_err(|_| format!("{s:?} is not a character or octal escape"))?,
        s if s.len() == 1 && s.is_ascii() => s.as_bytes()[0],
        s => return Err(format!("{s:?} must be a single ASCII character")),
    };
    if b == b'\n' || b == b'\r' {
        return Err("may not be a line break".into());
    }
    Ok(b)
}

/// Compression of data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// Plain.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// How records are laid out in data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Delimited text (Redshift's default, `|`-delimited).
    Text {
        /// Field delimiter.
        delimiter: u8,
        /// `ESCAPE`: a backslash makes the next character literal.
        escape: bool,
        /// `REMOVEQUOTES`: surrounding double quotes are removed.
        remove_quotes: bool,
    },
    /// CSV (RFC 4180 quoting).
    Csv {
        /// Field delimiter.
        delimiter: u8,
        /// Quote character.
        quote: u8,
    },
    /// JSON objects, one per line, mapped to columns by name.
    JsonAuto {
        /// `'auto ignorecase'`.
        ignore_case: bool,
    },
}

/// The data format of a manifest's files as the PostgreSQL and SQLite loaders read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadFormat {
    /// Record layout.
    pub(crate) layout: Layout,
    /// Compression.
    pub(crate) compression: Compression,
    /// Lines skipped at the start of each file.
    pub(crate) ignore_header: u64,
    /// A field equal to this (before unescaping) is NULL (text default `\N`).
    pub(crate) null_as: Option<Vec<u8>>,
    /// Fields of only blanks are NULL.
    pub(crate) blanks_as_null: bool,
    /// Empty fields are NULL.
    pub(crate) empty_as_null: bool,
    /// Trailing blanks are removed.
    pub(crate) trim_blanks: bool,
    /// Missing trailing fields are NULL.
    pub(crate) fill_record: bool,
    /// Replacement character for invalid UTF-8, when `ACCEPTINVCHARS`.
    pub(crate) accept_inv_chars: Option<char>,
}

/// The `:data-format` manifest key: the data format for non-Redshift loaders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    /// CSV (as `CSV`).
    Csv,
    /// JSON lines (as `JSON 'auto'`).
    JsonLines,
}

impl ReadFormat {
    /// Works out how to read files with these options. Options that do not change the data
    /// in PostgreSQL/SQLite are returned as notes (to log); options that would change the
    /// data's meaning but cannot be honoured are errors naming the option.
    pub(crate) fn from_options(
        options: &[CopyOption],
        data_format: Option<DataFormat>,
    ) -> Result<(ReadFormat, Vec<String>), String> {
        let mut notes = Vec::new();
        let mut delimiter = None;
        let mut csv = None;
        let mut json = None;
        let mut f = ReadFormat {
            layout: Layout::Text {
                delimiter: b'|',
                escape: false,
                remove_quotes: false,
            },
            compression: Compression::None,
            ignore_header: 0,
            null_as: None,
            blanks_as_null: false,
            empty_as_null: false,
            trim_blanks: false,
            fill_record: false,
            accept_inv_chars: None,
        };
        let mut escape = false;
        let mut remove_quotes = false;
        for o in options {
            use CopyOption::*;
            match o {
                Delimiter(l) => delimiter = Some(decode_single_char(l)?),
                Csv { quote } => {
                    csv = Some(match quote {
                        Some(q) => decode_single_char(q)?,
                        None => b'"',
                    })
                }
                Json(spec) => match spec.to_ascii_lowercase().as_str() {
                    "auto" => json = Some(false),
                    "auto ignorecase" => json = Some(true),
                    other => {
                        return Err(format!(
                            "JSON {other:?}: only 'auto' and 'auto ignorecase' can be honoured outside Redshift"
                        ));
                    }
                },
                Gzip => f.compression = Compression::Gzip,
                Zstd => f.compression = Compression::Zstd,
                Bzip2 => {
                    return Err(
                        "BZIP2 cannot be honoured outside Redshift (use GZIP or ZSTD)".into(),
                    );
                }
                IgnoreHeader(n) => f.ignore_header = *n,
                TimeFormat(l) | DateFormat(l) => {
                    if l.eq_ignore_ascii_case("auto") {
                        notes.push(format!("{o}: the warehouse parses dates and times itself"));
                    } else {
                        return Err(format!(
                            "{o} cannot be honoured outside Redshift (only 'auto')"
                        ));
                    }
                }
                NullAs(l) => f.null_as = Some(l.as_bytes().to_vec()),
                MaxError(_) => {
                    notes.push(format!("{o}: ignored, any bad record fails the whole load"))
                }
                BlanksAsNull => f.blanks_as_null = true,
                EmptyAsNull => f.empty_as_null = true,
                AcceptInvChars(c) => {
                    let c = match c {
                        Some(c) => decode_single_char(c)? as char,
                        None => '?',
                    };
                    f.accept_inv_chars = Some(c);
                }
                TruncateColumns => notes.push(format!(
                    "{o}: ignored, over-long values fail the load instead"
                )),
                Escape => escape = true,
                TrimBlanks => f.trim_blanks = true,
                RemoveQuotes => remove_quotes = true,
                FillRecord => f.fill_record = true,
                RoundEc | AcceptAnyDate | ExplicitIds | CompUpdate(_) | StatUpdate(_)
                | Region(_) => notes.push(format!("{o}: has no meaning outside Redshift, ignored")),
                Encoding(e) => {
                    if e != "UTF8" {
                        return Err(format!(
                            "ENCODING {e} cannot be honoured outside Redshift (only UTF8)"
                        ));
                    }
                }
            }
        }
        match data_format {
            Some(DataFormat::Csv) if json.is_some() => {
                return Err("data-format csv contradicts the JSON option".into());
            }
            Some(DataFormat::JsonLines) if csv.is_some() => {
                return Err("data-format json-lines contradicts the CSV option".into());
            }
            Some(DataFormat::Csv) if csv.is_none() => csv = Some(b'"'),
            Some(DataFormat::JsonLines) if json.is_none() => json = Some(false),
            _ => {}
        }
        if csv.is_some() && json.is_some() {
            return Err("CSV and JSON cannot be combined".into());
        }
        f.layout = if let Some(quote) = csv {
            if escape || remove_quotes {
                return Err("ESCAPE and REMOVEQUOTES cannot be used with CSV".into());
            }
            Layout::Csv {
                delimiter: delimiter.unwrap_or(b','),
                quote,
            }
        } else if let Some(ignore_case) = json {
            Layout::JsonAuto { ignore_case }
        } else {
            if f.null_as.is_none() {
                f.null_as = Some(b"\\N".to_vec());
            }
            Layout::Text {
                delimiter: delimiter.unwrap_or(b'|'),
                escape,
                remove_quotes,
            }
        };
        Ok((f, notes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_allowed_options() {
        for (input, canonical) in [
            ("DELIMITER '\\t'", "DELIMITER '\\t'"),
            ("delimiter as '|'", "DELIMITER '|'"),
            ("IGNOREHEADER 1", "IGNOREHEADER 1"),
            ("ESCAPE", "ESCAPE"),
            ("TRIMBLANKS", "TRIMBLANKS"),
            ("CSV QUOTE AS '%'", "CSV QUOTE AS '%'"),
            ("NULL AS '\\N'", "NULL AS '\\N'"),
            ("JSON 'auto'", "JSON 'auto'"),
            ("COMPUPDATE OFF", "COMPUPDATE OFF"),
            ("REGION 'eu-west-1'", "REGION 'eu-west-1'"),
            ("ACCEPTINVCHARS AS '^'", "ACCEPTINVCHARS AS '^'"),
            ("TIMEFORMAT 'auto'", "TIMEFORMAT 'auto'"),
            ("NULL AS 'it''s'", "NULL AS 'it''s'"),
        ] {
            let o = CopyOption::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(o.to_string(), canonical, "{input}");
            assert_eq!(CopyOption::parse(canonical).unwrap(), o);
        }
    }

    #[test]
    fn refuses_options_outside_the_allow_list() {
        for bad in [
            "IAM_ROLE 'arn:aws:iam::1:role/x'",
            "CREDENTIALS 'aws_access_key_id=x'",
            "MANIFEST",
            "DELIMITER ';' ; DROP TABLE x",
            "DELIMITER ','; DELETE FROM t",
            "DELIMITER 'ab'",
            "IGNOREHEADER x",
            "GZIP ZSTD",
            "NULL AS 'x",
            "REGION 'us-east-1'' OR 1=1'",
            "",
        ] {
            let e = CopyOption::parse(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        assert!(
            CopyOption::parse("FOO")
                .unwrap_err()
                .contains("allowed: DELIMITER")
        );
    }

    #[test]
    fn read_format_from_the_readme_options() {
        let opts: Vec<_> = ["DELIMITER '\\t'", "IGNOREHEADER 1", "ESCAPE", "TRIMBLANKS"]
            .iter()
            .map(|s| CopyOption::parse(s).unwrap())
            .collect();
        let (f, notes) = ReadFormat::from_options(&opts, None).unwrap();
        assert_eq!(
            f.layout,
            Layout::Text {
                delimiter: b'\t',
                escape: true,
                remove_quotes: false
            }
        );
        assert_eq!(f.ignore_header, 1);
        assert!(f.trim_blanks);
        assert_eq!(f.null_as.as_deref(), Some(&b"\\N"[..]));
        assert!(notes.is_empty());
    }

    #[test]
    fn unhonourable_options_are_errors_and_meaningless_ones_notes() {
        let p = |s: &str| vec![CopyOption::parse(s).unwrap()];
        assert!(
            ReadFormat::from_options(&p("BZIP2"), None)
                .unwrap_err()
                .contains("BZIP2")
        );
        assert!(ReadFormat::from_options(&p("TIMEFORMAT 'epochsecs'"), None).is_err());
        assert!(ReadFormat::from_options(&p("JSON 's3://b/paths.json'"), None).is_err());
        let (_, notes) = ReadFormat::from_options(&p("COMPUPDATE OFF"), None).unwrap();
        assert_eq!(notes.len(), 1);
        let (f, _) = ReadFormat::from_options(&[], Some(DataFormat::Csv)).unwrap();
        assert_eq!(
            f.layout,
            Layout::Csv {
                delimiter: b',',
                quote: b'"'
            }
        );
        assert!(ReadFormat::from_options(&p("CSV"), Some(DataFormat::JsonLines)).is_err());
    }
}
