//! Scripts: statements split at `;` outside strings, comments and dollar quotes (sqlparser's
//! tokenizer for the warehouse's dialect), each with its position, and `--var` substitution.

use std::collections::HashMap;

use sqlparser::dialect::{Dialect, PostgreSqlDialect, RedshiftSqlDialect, SQLiteDialect};
use sqlparser::tokenizer::{Token, Tokenizer};

/// The SQL dialect a script is tokenized in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// PostgreSQL.
    Postgres,
    /// Redshift.
    Redshift,
    /// SQLite.
    Sqlite,
}

impl Flavor {
    fn dialect(self) -> Box<dyn Dialect> {
        match self {
            Flavor::Postgres => Box::new(PostgreSqlDialect {}),
            Flavor::Redshift => Box::new(RedshiftSqlDialect {}),
            Flavor::Sqlite => Box::new(SQLiteDialect {}),
        }
    }
}

/// One statement of a script, with where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement's text after substitution (without the trailing `;`).
    pub sql: String,
    /// Where the script came from (`-c #1`, a file name, `stdin`).
    pub source: String,
    /// 1-based line of its first character in the source.
    pub line: u64,
    /// 1-based column of its first character.
    pub column: u64,
}

/// A script that cannot be split (an unterminated string or comment, a missing variable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct ScriptError {
    /// Where the script came from.
    pub origin: String,
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// What is wrong.
    pub message: String,
}

/// `'text'` with `'` doubled: a SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `"text"` with `"` doubled: a SQL identifier.
pub fn quote_ident(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// Byte offset of 1-based (`line`, `column`) — columns count characters — in `text`.
fn byte_offset(line_starts: &[usize], text: &str, line: u64, column: u64) -> usize {
    let Some(&start) = usize::try_from(line)
        .ok()
        .and_then(|l| l.checked_sub(1))
        .and_then(|l| line_starts.get(l))
    else {
        return text.len();
    };
    let skip = usize::try_from(column.saturating_sub(1)).unwrap_or(usize::MAX);
    text[start..]
        .char_indices()
        .nth(skip)
        .map_or(text.len(), |(i, _)| start + i)
}

/// Splits `text` into its non-empty statements and substitutes `:name` (a SQL literal) and
/// `:"name"` (an identifier) from `vars`; a `:name` whose variable is not set is left as it
/// is (PostgreSQL's `::` casts and strings are never touched).
///
/// # Errors
/// The text does not tokenize (an unterminated string, quoted identifier or comment).
pub fn split(
    text: &str,
    source: &str,
    flavor: Flavor,
    vars: &HashMap<String, String>,
) -> Result<Vec<Statement>, ScriptError> {
    let dialect = flavor.dialect();
    let tokens = Tokenizer::new(dialect.as_ref(), text)
        .tokenize_with_location()
        .map_err(|e| ScriptError {
            origin: source.to_string(),
            line: e.location.line,
            column: e.location.column,
            message: e.message,
        })?;
    let mut line_starts = vec![0];
    line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    let offset =
        |l: &sqlparser::tokenizer::Location| byte_offset(&line_starts, text, l.line, l.column);

    let mut out = Vec::new();
    let mut sql = String::new();
    let mut start: Option<(u64, u64)> = None;
    let mut copied_to = 0; // bytes of `text` already in `sql` or skipped
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        match &t.token {
            Token::SemiColon => {
                sql.push_str(&text[copied_to..offset(&t.span.start)]);
                copied_to = offset(&t.span.end);
                if let Some((line, column)) = start.take() {
                    out.push(Statement {
                        sql: std::mem::take(&mut sql).trim().to_string(),
                        source: source.to_string(),
                        line,
                        column,
                    });
                } else {
                    sql.clear();
                }
            }
            Token::Whitespace(_) => {}
            Token::Colon => {
                start.get_or_insert((t.span.start.line, t.span.start.column));
                if let Some(Token::Word(w)) = tokens.get(i + 1).map(|n| &n.token)
                    && tokens[i + 1].span.start == t.span.end
                    && (w.quote_style.is_none() || w.quote_style == Some('"'))
                    && let Some(value) = vars.get(&w.value)
                {
                    sql.push_str(&text[copied_to..offset(&t.span.start)]);
                    sql.push_str(&if w.quote_style.is_some() {
                        quote_ident(value)
                    } else {
                        quote_literal(value)
                    });
                    copied_to = offset(&tokens[i + 1].span.end);
                    i += 1;
                }
            }
            _ => {
                start.get_or_insert((t.span.start.line, t.span.start.column));
            }
        }
        i += 1;
    }
    if let Some((line, column)) = start {
        sql.push_str(&text[copied_to..]);
        out.push(Statement {
            sql: sql.trim().to_string(),
            source: source.to_string(),
            line,
            column,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn splits_outside_strings_comments_and_dollar_quotes() {
        let text = "select 'a;b' -- c;\n; /* ; */ select $$x;y$$;\n\n  select 3";
        let s = split(text, "f.sql", Flavor::Postgres, &HashMap::new()).unwrap();
        let sqls: Vec<&str> = s.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(
            sqls,
            ["select 'a;b' -- c;", "/* ; */ select $$x;y$$", "select 3"]
        );
        assert_eq!((s[0].line, s[0].column), (1, 1));
        // A statement's position is its first token's (comments before it are kept).
        assert_eq!((s[1].line, s[1].column), (2, 11));
        assert_eq!((s[2].line, s[2].column), (4, 3));
        assert!(
            split(";;  ;", "x", Flavor::Sqlite, &HashMap::new())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn variables_become_literals_or_identifiers_and_casts_stay() {
        let v = vars(&[("name", "O'Brien"), ("col", "we\"ird"), ("n", "3")]);
        let s = split(
            "select :\"col\" from t where a = :name and b::int = :n and c = ':name' and d = :unset",
            "-c #1",
            Flavor::Postgres,
            &v,
        )
        .unwrap();
        assert_eq!(
            s[0].sql,
            "select \"we\"\"ird\" from t where a = 'O''Brien' and b::int = '3' and c = ':name' and d = :unset"
        );
    }

    #[test]
    fn unicode_before_a_statement_keeps_offsets_right() {
        let s = split("select 'é☃';select 2", "x", Flavor::Sqlite, &HashMap::new()).unwrap();
        assert_eq!(s[0].sql, "select 'é☃'");
        assert_eq!((s[1].sql.as_str(), s[1].column), ("select 2", 13));
    }

    #[test]
    fn an_unterminated_string_is_an_error_with_its_position() {
        let e = split(
            "select 1;\nselect 'oops",
            "f.sql",
            Flavor::Postgres,
            &HashMap::new(),
        )
        .unwrap_err();
        assert_eq!((e.origin.as_str(), e.line), ("f.sql", 2));
    }
}
