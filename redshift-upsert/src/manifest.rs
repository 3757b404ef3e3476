//! Manifests: what to load where, read from `manifest.edn`, `manifest.toml` or
//! `manifest.json` and validated (unknown keys, bad identifiers and options are errors that
//! name the key, the file and what is allowed).

use std::fmt;

use regex::Regex;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::options::{CopyOption, DataFormat};

/// The manifest file names the watcher looks for, in order of preference.
pub const MANIFEST_NAMES: [&str; 3] = ["manifest.edn", "manifest.toml", "manifest.json"];

/// The keys a manifest may have.
pub(crate) const KEYS: [&str; 10] = [
    "table",
    "pk-columns",
    "columns",
    "options",
    "data-pattern",
    "strategy",
    "staging-select",
    "jdbc-url",
    "dedupe-order-column",
    "data-format",
];

/// The syntax a manifest is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// EDN, as the original Blueshift.
    Edn,
    /// TOML.
    Toml,
    /// JSON.
    Json,
}

impl ManifestFormat {
    /// The format for a manifest file name (`manifest.edn`, `.toml`, `.json`), if it is one.
    pub fn from_file_name(name: &str) -> Option<ManifestFormat> {
        let base = name.rsplit('/').next().unwrap_or(name);
        match base {
            "manifest.edn" => Some(ManifestFormat::Edn),
            "manifest.toml" => Some(ManifestFormat::Toml),
            "manifest.json" => Some(ManifestFormat::Json),
            _ => None,
        }
    }
}

/// A validated SQL identifier (ASCII letters, digits, `_`, `$`; not starting with a digit;
/// at most 127 bytes), folded to lower case as Redshift does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    /// Validates an identifier.
    pub fn new(s: &str) -> std::result::Result<Ident, String> {
        let ok = !s.is_empty()
            && s.len() <= 127
            && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
        if ok {
            Ok(Ident(s.to_ascii_lowercase()))
        } else {
            Err(format!(
                "{s:?} is not an identifier: allowed are 1-127 ASCII letters, digits, '_' and '$', not starting with a digit"
            ))
        }
    }

    /// An identifier known to be valid (a constant of this crate).
    pub(crate) fn known(s: &'static str) -> Ident {
        debug_assert!(Ident::new(s).is_ok(), "{s}");
        Ident(s.to_ascii_lowercase())
    }

    /// The name, lower case, unquoted.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    /// Writes the identifier double-quoted (validation guarantees no quote inside).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

/// A table name, optionally schema-qualified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    /// Schema, if given.
    pub schema: Option<Ident>,
    /// Table.
    pub name: Ident,
}

impl TableName {
    /// Parses `table` or `schema.table`.
    pub fn parse(s: &str) -> std::result::Result<TableName, String> {
        match s.split_once('.') {
            Some((schema, name)) => Ok(TableName {
                schema: Some(Ident::new(schema)?),
                name: Ident::new(name)?,
            }),
            None => Ok(TableName {
                schema: None,
                name: Ident::new(s)?,
            }),
        }
    }

    /// The unquoted dotted name (for logs, locks and history).
    pub fn plain(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", s.as_str(), self.name.as_str()),
            None => self.name.as_str().to_string(),
        }
    }
}

impl fmt::Display for TableName {
    /// The quoted (qualified) name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// How a batch is applied to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Rows whose keys exist are replaced, others inserted (default).
    #[default]
    Merge,
    /// Only rows whose keys are absent are inserted.
    Append,
    /// The table's content is replaced by the batch.
    Replace,
}

/// The `:staging-select` key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StagingSelect {
    /// `nil`: all staged rows.
    #[default]
    All,
    /// `:distinct`: distinct staged rows.
    Distinct,
    /// A SELECT with a `{{table}}` placeholder for the staging table.
    Sql(String),
}

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where it was read from (its object key or path), as errors name it.
    pub file: String,
    /// Target table.
    pub table: TableName,
    /// Key columns (a subset of `columns`).
    pub pk_columns: Vec<Ident>,
    /// Columns of the data files, in file order.
    pub columns: Vec<Ident>,
    /// COPY options.
    pub options: Vec<CopyOption>,
    /// The data-file pattern, anchored to match the whole key.
    pub data_pattern: Regex,
    /// Strategy.
    pub strategy: Strategy,
    /// Staging select.
    pub staging_select: StagingSelect,
    /// The target warehouse in JDBC form, if given.
    pub jdbc_url: Option<String>,
    /// Dedupe order column: the row with the greatest value per key wins within a batch.
    pub dedupe_order_column: Option<Ident>,
    /// Data format for non-Redshift loaders.
    pub data_format: Option<DataFormat>,
}

/// The placeholder replaced by the staging table in `:staging-select`.
pub(crate) const TABLE_PLACEHOLDER: &str = "{{table}}";

struct Ctx<'a> {
    file: &'a str,
    format: ManifestFormat,
}

impl Ctx<'_> {
    fn key(&self, key: &str) -> String {
        match self.format {
            ManifestFormat::Edn => format!(":{key}"),
            _ => key.to_string(),
        }
    }
    fn err(&self, key: &str, message: impl Into<String>) -> Error {
        Error::ManifestKey {
            file: self.file.to_string(),
            key: self.key(key),
            message: message.into(),
        }
    }
    fn string(&self, v: &Value, key: &str) -> Result<String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(self.err(key, format!("expected a string, got {other}"))),
        }
    }
    fn strings(&self, v: &Value, key: &str) -> Result<Vec<String>> {
        match v {
            Value::Array(a) => a.iter().map(|x| self.string(x, key)).collect(),
            other => Err(self.err(key, format!("expected a vector of strings, got {other}"))),
        }
    }
    fn idents(&self, v: &Value, key: &str) -> Result<Vec<Ident>> {
        let names = self.strings(v, key)?;
        let mut out: Vec<Ident> = Vec::with_capacity(names.len());
        for n in names {
            let id = Ident::new(&n).map_err(|m| self.err(key, m))?;
            if out.contains(&id) {
                return Err(self.err(key, format!("column {n:?} is listed twice")));
            }
            out.push(id);
        }
        Ok(out)
    }
}

impl Manifest {
    /// Parses and validates a manifest. `file` names it in errors (e.g. its object key).
    pub fn parse(text: &str, format: ManifestFormat, file: &str) -> Result<Manifest> {
        let syntax = |position: String, message: String| Error::ManifestSyntax {
            file: file.to_string(),
            position,
            message,
        };
        let value = match format {
            ManifestFormat::Edn => crate::edn::parse(text)
                .map_err(|e| syntax(format!("line {} column {}", e.line, e.column), e.message))?,
            ManifestFormat::Json => serde_json::from_str::<Value>(text).map_err(|e| {
                syntax(
                    format!("line {} column {}", e.line(), e.column()),
                    e.to_string(),
                )
            })?,
            ManifestFormat::Toml => {
                let t: toml::Table = toml::from_str(text).map_err(|e| {
                    let pos = e.span().map_or("unknown position".to_string(), |s| {
                        format!("byte {}", s.start)
                    });
                    syntax(pos, e.message().to_string())
                })?;
                serde_json::to_value(t).map_err(|e| syntax("?".into(), e.to_string()))?
            }
        };
        Manifest::from_value(&value, format, file)
    }

    /// Validates a manifest already read into a JSON-like value (keys without `:`).
    fn from_value(value: &Value, format: ManifestFormat, file: &str) -> Result<Manifest> {
        let cx = Ctx { file, format };
        let Value::Object(map) = value else {
            return Err(Error::ManifestSyntax {
                file: file.to_string(),
                position: "top level".into(),
                message: "a manifest must be a map".into(),
            });
        };
        for k in map.keys() {
            if !KEYS.contains(&k.as_str()) {
                let allowed: Vec<String> = KEYS.iter().map(|k| cx.key(k)).collect();
                return Err(cx.err(
                    k,
                    format!("unknown key; allowed keys: {}", allowed.join(", ")),
                ));
            }
        }
        let required = |k: &str| {
            map.get(k)
                .filter(|v| !v.is_null())
                .ok_or_else(|| cx.err(k, "is required"))
        };
        let table_s = cx.string(required("table")?, "table")?;
        let table = TableName::parse(&table_s).map_err(|m| cx.err("table", m))?;
        let columns = cx.idents(required("columns")?, "columns")?;
        if columns.is_empty() {
            return Err(cx.err("columns", "must list at least one column"));
        }
        let pk_columns = cx.idents(required("pk-columns")?, "pk-columns")?;
        for pk in &pk_columns {
            if !columns.contains(pk) {
                return Err(cx.err(
                    "pk-columns",
                    format!("{} is not one of the columns", pk.as_str()),
                ));
            }
        }
        let strategy = match map.get("strategy") {
            None | Some(Value::Null) => Strategy::Merge,
            Some(v) => match cx.string(v, "strategy")?.trim_start_matches(':') {
                "merge" => Strategy::Merge,
                "append" => Strategy::Append,
                "replace" => Strategy::Replace,
                other => {
                    return Err(cx.err(
                        "strategy",
                        format!("{other:?} is not allowed; allowed: merge, append, replace"),
                    ));
                }
            },
        };
        if pk_columns.is_empty() && strategy != Strategy::Replace {
            return Err(cx.err(
                "pk-columns",
                "must list at least one column (merge and append match rows by key)",
            ));
        }
        let options = match map.get("options") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => cx
                .strings(v, "options")?
                .iter()
                .map(|s| {
                    CopyOption::parse(s).map_err(|message| Error::CopyOption {
                        file: file.to_string(),
                        option: s.clone(),
                        message,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let pattern = cx.string(required("data-pattern")?, "data-pattern")?;
        let data_pattern = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
            cx.err(
                "data-pattern",
                format!("not a valid regular expression: {e}"),
            )
        })?;
        let staging_select = match map.get("staging-select") {
            None | Some(Value::Null) => StagingSelect::All,
            Some(v) => {
                let s = cx.string(v, "staging-select")?;
                if s == ":distinct" || s.eq_ignore_ascii_case("distinct") {
                    StagingSelect::Distinct
                } else {
                    check_staging_sql(&s).map_err(|m| cx.err("staging-select", m))?;
                    StagingSelect::Sql(s)
                }
            }
        };
        let jdbc_url = match map.get("jdbc-url") {
            None | Some(Value::Null) => None,
            Some(v) => Some(cx.string(v, "jdbc-url")?),
        };
        let dedupe_order_column = match map.get("dedupe-order-column") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let id = Ident::new(&cx.string(v, "dedupe-order-column")?)
                    .map_err(|m| cx.err("dedupe-order-column", m))?;
                if !columns.contains(&id) {
                    return Err(cx.err(
                        "dedupe-order-column",
                        format!("{} is not one of the columns", id.as_str()),
                    ));
                }
                Some(id)
            }
        };
        let data_format = match map.get("data-format") {
            None | Some(Value::Null) => None,
            Some(v) => match cx.string(v, "data-format")?.trim_start_matches(':') {
                "csv" => Some(DataFormat::Csv),
                "json-lines" | "jsonl" | "json" => Some(DataFormat::JsonLines),
                other => {
                    return Err(cx.err(
                        "data-format",
                        format!("{other:?} is not allowed; allowed: csv, json-lines"),
                    ));
                }
            },
        };
        // Contradictions between options and data-format are reported now; options that only
        // Redshift can honour are reported when a PostgreSQL or SQLite load is planned.
        if let Err(message) = crate::options::ReadFormat::from_options(&options, data_format)
            && message.contains("data-format")
        {
            return Err(cx.err("data-format", message));
        }
        Ok(Manifest {
            file: file.to_string(),
            table,
            pk_columns,
            columns,
            options,
            data_pattern,
            strategy,
            staging_select,
            jdbc_url,
            dedupe_order_column,
            data_format,
        })
    }

    /// Whether an object key (the whole key) is a data file of this manifest.
    pub fn matches(&self, key: &str) -> bool {
        self.data_pattern.is_match(key)
    }
}

/// A staging select must be exactly one SELECT query.
fn check_staging_sql(s: &str) -> std::result::Result<(), String> {
    use sqlparser::dialect::RedshiftSqlDialect;
    use sqlparser::parser::Parser;
    if !s.contains(TABLE_PLACEHOLDER) {
        return Err(format!(
            "must be :distinct, nil or a SELECT using the {TABLE_PLACEHOLDER} placeholder"
        ));
    }
    let sql = s.replace(TABLE_PLACEHOLDER, "blueshift_stage");
    let stmts = Parser::parse_sql(&RedshiftSqlDialect {}, &sql)
        .map_err(|e| format!("is not valid SQL: {e}"))?;
    match stmts.as_slice() {
        [sqlparser::ast::Statement::Query(_)] => Ok(()),
        _ => Err("must be exactly one SELECT statement".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = r#"{:table "testing"
 :pk-columns ["foo"]
 :columns ["foo" "bar"]
 :jdbc-url "jdbc:postgresql://foo.eu-west-1.redshift.amazonaws.com:5439/db?tcpKeepAlive=true&user=user&password=pwd"
 :options ["DELIMITER '\\t'" "IGNOREHEADER 1" "ESCAPE" "TRIMBLANKS"]
 :data-pattern ".*tsv$"}"#;

    #[test]
    fn the_original_readme_example_loads_as_written() {
        let m = Manifest::parse(README, ManifestFormat::Edn, "dir/manifest.edn").unwrap();
        assert_eq!(m.table.plain(), "testing");
        assert_eq!(m.pk_columns, vec![Ident::new("foo").unwrap()]);
        assert_eq!(m.columns.len(), 2);
        assert_eq!(m.options.len(), 4);
        assert_eq!(m.strategy, Strategy::Merge);
        assert!(m.matches("dir/part-0001.tsv"));
        assert!(!m.matches("dir/part-0001.tsv.gz"));
        assert!(m.jdbc_url.unwrap().starts_with("jdbc:postgresql://"));
    }

    #[test]
    fn toml_and_json_manifests_say_the_same() {
        let toml = r#"
table = "public.testing"
pk-columns = ["foo"]
columns = ["foo", "bar", "ts"]
options = ["CSV", "GZIP"]
data-pattern = ".*\\.csv\\.gz"
strategy = "append"
dedupe-order-column = "ts"
data-format = "csv"
"#;
        let json = r#"{"table": "public.testing", "pk-columns": ["foo"], "columns": ["foo", "bar", "ts"],
 "options": ["CSV", "GZIP"], "data-pattern": ".*\\.csv\\.gz", "strategy": "append",
 "dedupe-order-column": "ts", "data-format": "csv"}"#;
        let a = Manifest::parse(toml, ManifestFormat::Toml, "manifest.toml").unwrap();
        let b = Manifest::parse(json, ManifestFormat::Json, "manifest.json").unwrap();
        for m in [&a, &b] {
            assert_eq!(m.table.to_string(), "\"public\".\"testing\"");
            assert_eq!(m.strategy, Strategy::Append);
            assert_eq!(m.dedupe_order_column.as_ref().unwrap().as_str(), "ts");
            assert_eq!(m.data_format, Some(DataFormat::Csv));
            assert!(m.matches("x/y.csv.gz"));
        }
    }

    fn err(text: &str) -> String {
        Manifest::parse(text, ManifestFormat::Edn, "in/manifest.edn")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn hostile_and_wrong_manifests_are_refused_naming_key_file_and_allowed() {
        let base = |extra: &str| {
            format!(
                r#"{{:table "t" :pk-columns ["id"] :columns ["id" "v"] :data-pattern ".*" {extra}}}"#
            )
        };
        let e = err(&base(":colour \"red\""));
        assert!(
            e.contains("in/manifest.edn") && e.contains(":colour") && e.contains(":pk-columns"),
            "{e}"
        );
        let e = err(
            r#"{:table "t\"; DROP TABLE x; --" :pk-columns ["id"] :columns ["id"] :data-pattern ".*"}"#,
        );
        assert!(
            e.contains(":table") && e.contains("not an identifier"),
            "{e}"
        );
        let e = err(r#"{:table "t" :pk-columns ["id"] :columns ["id" "v;x"] :data-pattern ".*"}"#);
        assert!(e.contains(":columns"), "{e}");
        let e = err(&base(r#":options ["IAM_ROLE 'arn:aws:iam::1:role/r'"]"#));
        assert!(
            e.contains(":options") && e.contains("IAM_ROLE") && e.contains("allowed: DELIMITER"),
            "{e}"
        );
        let e = err(&base(r#":options ["DELIMITER ','; DROP TABLE t"]"#));
        assert!(e.contains(":options"), "{e}");
        let e = err(&base(r#":strategy "upsert""#));
        assert!(
            e.contains(":strategy") && e.contains("merge, append, replace"),
            "{e}"
        );
        let e = err(&base(
            r#":staging-select "SELECT * FROM {{table}}; DROP TABLE t""#,
        ));
        assert!(e.contains(":staging-select"), "{e}");
        let e = err(r#"{:table "t" :pk-columns ["nope"] :columns ["id"] :data-pattern ".*"}"#);
        assert!(e.contains(":pk-columns"), "{e}");
        let e = err(r#"{:table "t" :columns ["id"] :data-pattern ".*"}"#);
        assert!(e.contains(":pk-columns") && e.contains("required"), "{e}");
        let e = err(r#"{:table "t" :pk-columns ["id"] :columns ["id"] :data-pattern "("}"#);
        assert!(
            e.contains(":data-pattern") && e.contains("regular expression"),
            "{e}"
        );
        let e = Manifest::parse("table = 1", ManifestFormat::Toml, "a/manifest.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a/manifest.toml") && e.contains("table"), "{e}");
        let e = Manifest::parse("{\"table\": ", ManifestFormat::Json, "b/manifest.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("b/manifest.json") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn staging_select_forms() {
        let m = |s: &str| {
            Manifest::parse(
                &format!(
                    r#"{{:table "t" :pk-columns ["id"] :columns ["id"] :data-pattern ".*" :staging-select {s}}}"#
                ),
                ManifestFormat::Edn,
                "m",
            )
        };
        assert_eq!(
            m(":distinct").unwrap().staging_select,
            StagingSelect::Distinct
        );
        assert_eq!(m("nil").unwrap().staging_select, StagingSelect::All);
        let sql = "\"SELECT id FROM {{table}} WHERE id > 0\"";
        assert!(matches!(
            m(sql).unwrap().staging_select,
            StagingSelect::Sql(_)
        ));
        assert!(m("\"DELETE FROM {{table}}\"").is_err());
        assert!(m("\"SELECT 1\"").is_err());
    }
}
