//! A small reader for the subset of EDN that manifests use.
//!
//! Maps, vectors, lists, sets (read as arrays), strings, keywords, symbols `nil`/`true`/`false`,
//! integers, floats, regex literals `#"..."` (read as strings), comments (`;`), discards
//! (`#_`) and commas as whitespace. Map keys that are keywords lose their `:`; other keyword
//! values keep it (`:distinct` reads as the string `":distinct"`). Nesting is limited to 32
//! levels and the input to what the caller read (manifests are small).

use serde_json::{Map, Number, Value};

/// Nesting limit: manifests are flat; this bounds recursion on hostile input.
const MAX_DEPTH: usize = 32;

/// A syntax error with its 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EdnError {
    /// 1-based line.
    pub(crate) line: usize,
    /// 1-based column (in characters).
    pub(crate) column: usize,
    /// What was wrong.
    pub(crate) message: String,
}

/// Reads one EDN value (the whole input must be that value, plus whitespace/comments).
pub(crate) fn parse(input: &str) -> Result<Value, EdnError> {
    let mut r = Reader { s: input, pos: 0 };
    r.skip_ws();
    let v = r.value(0)?;
    r.skip_ws();
    if r.pos < r.s.len() {
        return Err(r.err("unexpected data after the first value"));
    }
    Ok(v)
}

struct Reader<'a> {
    s: &'a str,
    pos: usize,
}

impl Reader<'_> {
    fn err(&self, message: impl Into<String>) -> EdnError {
        let before = &self.s[..self.pos.min(self.s.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        EdnError {
            line,
            column,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() || c == ',' {
                self.pos += c.len_utf8();
            } else if c == ';' {
                while let Some(c) = self.bump() {
                    if c == '\n' {
                        break;
                    }
                }
            } else {
                break;
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, EdnError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting deeper than 32 levels"));
        }
        match self.peek() {
            None => Err(self.err("unexpected end of input, expected a value")),
            Some('{') => {
                self.pos += 1;
                self.map(depth)
            }
            Some('[') => {
                self.pos += 1;
                self.seq(']', depth)
            }
            Some('(') => {
                self.pos += 1;
                self.seq(')', depth)
            }
            Some('"') => {
                self.pos += 1;
                self.string().map(Value::String)
            }
            Some('#') => {
                self.pos += 1;
                match self.peek() {
                    Some('"') => {
                        self.pos += 1;
                        self.regex().map(Value::String)
                    }
                    Some('{') => {
                        self.pos += 1;
                        self.seq('}', depth)
                    }
                    Some('_') => {
                        self.pos += 1;
                        self.skip_ws();
                        self.value(depth + 1)?;
                        self.skip_ws();
                        self.value(depth)
                    }
                    _ => Err(self.err("unsupported dispatch (#); allowed: #\"regex\", #{set}, #_")),
                }
            }
            Some(c) if matches!(c, '}' | ']' | ')') => Err(self.err(format!("unexpected {c:?}"))),
            Some(_) => self.atom(),
        }
    }

    fn map(&mut self, depth: usize) -> Result<Value, EdnError> {
        let mut m = Map::new();
        loop {
            self.skip_ws();
            if self.peek() == Some('}') {
                self.pos += 1;
                return Ok(Value::Object(m));
            }
            if self.peek().is_none() {
                return Err(self.err("unterminated map, expected '}'"));
            }
            let key_pos = self.pos;
            let key = match self.value(depth + 1)? {
                Value::String(s) => s.strip_prefix(':').map(str::to_string).unwrap_or(s),
                other => {
                    self.pos = key_pos;
                    return Err(
                        self.err(format!("map keys must be keywords or strings, got {other}"))
                    );
                }
            };
            self.skip_ws();
            if matches!(self.peek(), Some('}') | None) {
                return Err(self.err(format!("map key :{key} has no value")));
            }
            let v = self.value(depth + 1)?;
            if m.insert(key.clone(), v).is_some() {
                self.pos = key_pos;
                return Err(self.err(format!("duplicate map key :{key}")));
            }
        }
    }

    fn seq(&mut self, close: char, depth: usize) -> Result<Value, EdnError> {
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some(c) if c == close => {
                    self.pos += 1;
                    return Ok(Value::Array(out));
                }
                None => {
                    return Err(self.err(format!("unterminated collection, expected {close:?}")));
                }
                _ => out.push(self.value(depth + 1)?),
            }
        }
    }

    fn string(&mut self) -> Result<String, EdnError> {
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(self.err("unterminated string")),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('u') => {
                        let hex = self.s.get(self.pos..self.pos + 4).unwrap_or("");
                        let c = u32::from_str_radix(hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| self.err("bad \\u escape, expected 4 hex digits"))?;
                        self.pos += 4;
                        out.push(c);
                    }
                    Some(c) => return Err(self.err(format!("unknown string escape \\{c}"))),
                    None => return Err(self.err("unterminated string")),
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// Regex literal: backslashes are kept as written (only `\"` ends nothing).
    fn regex(&mut self) -> Result<String, EdnError> {
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(self.err("unterminated regex literal")),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('"') => out.push('"'),
                    Some(c) => {
                        out.push('\\');
                        out.push(c);
                    }
                    None => return Err(self.err("unterminated regex literal")),
                },
                Some(c) => out.push(c),
            }
        }
    }

    fn atom(&mut self) -> Result<Value, EdnError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || matches!(c, ',' | ';' | '{' | '}' | '[' | ']' | '(' | ')' | '"')
            {
                break;
            }
            self.pos += c.len_utf8();
        }
        let tok = &self.s[start..self.pos];
        if tok.is_empty() {
            return Err(self.err("expected a value"));
        }
        match tok {
            "nil" => return Ok(Value::Null),
            "true" => return Ok(Value::Bool(true)),
            "false" => return Ok(Value::Bool(false)),
            _ => {}
        }
        if tok.starts_with(':') {
            if tok.len() == 1 {
                return Err(self.err("empty keyword"));
            }
            return Ok(Value::String(tok.to_string()));
        }
        let first = tok.chars().next().unwrap_or(' ');
        if first.is_ascii_digit()
            || (matches!(first, '-' | '+') && tok[1..].starts_with(|c: char| c.is_ascii_digit()))
        {
            let t = tok.trim_end_matches(['N', 'M']);
            if let Ok(i) = t.parse::<i64>() {
                return Ok(Value::Number(i.into()));
            }
            if let Some(n) = t.parse::<f64>().ok().and_then(Number::from_f64) {
                return Ok(Value::Number(n));
            }
            self.pos = start;
            return Err(self.err(format!("bad number {tok:?}")));
        }
        // Other symbols: kept as strings (manifests do not use them).
        Ok(Value::String(tok.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_original_readme_manifest() {
        let v = parse(
            r#"{:table "testing" :pk-columns ["foo"] :columns ["foo" "bar"]
               :jdbc-url "jdbc:postgresql://h:5439/db?user=u&password=p"
               :options ["DELIMITER '\\t'" "IGNOREHEADER 1" "ESCAPE" "TRIMBLANKS"]
               :data-pattern ".*tsv$"}"#,
        )
        .unwrap();
        assert_eq!(v["table"], json!("testing"));
        assert_eq!(v["pk-columns"], json!(["foo"]));
        assert_eq!(v["options"][0], json!("DELIMITER '\\t'"));
        assert_eq!(v["data-pattern"], json!(".*tsv$"));
    }

    #[test]
    fn reads_keywords_nil_numbers_regex_comments() {
        let v =
            parse("{:a :distinct, :b nil ; c\n :c 12 :d -1.5 :e #\"a\\.b\" :f #_ 1 2 :g (1 #{2})}")
                .unwrap();
        assert_eq!(
            v,
            json!({"a": ":distinct", "b": null, "c": 12, "d": -1.5, "e": "a\\.b", "f": 2, "g": [1, [2]]})
        );
    }

    #[test]
    fn errors_have_positions() {
        let e = parse("{:a 1\n :b }").unwrap_err();
        assert_eq!((e.line, e.column), (2, 5));
        assert!(e.message.contains(":b"), "{e:?}");
        assert!(
            parse("{:a 1 :a 2}")
                .unwrap_err()
                .message
                .contains("duplicate")
        );
        assert!(parse("[1 2").unwrap_err().message.contains("unterminated"));
        assert!(parse("\"abc").is_err());
        assert!(parse("1 2").is_err());
        let deep = "[".repeat(100);
        assert!(parse(&deep).unwrap_err().message.contains("nesting"));
    }
}
