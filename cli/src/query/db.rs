//! Running one statement on PostgreSQL, Redshift or SQLite and streaming its rows, values
//! as the database writes them.
//!
//! Every statement goes through the simple query protocol (`sqlx::raw_sql`): values arrive as
//! text, and no type is looked up in a catalogue, so any column type prints (Redshift's
//! `SUPER`, which makes prepared statements fail in sqlx, included).

use std::io::Write;

use futures::TryStreamExt;
use redshift_upsert::sqlx::{
    self, Column, ConnectOptions as _, Connection, Either, Executor, PgConnection, Row, SqlSafeStr,
    SqliteConnection, Statement, TypeInfo, ValueRef,
};
use redshift_upsert::{ConnectOptions, WarehouseUrl};

use super::format::{Kind, ResultWriter, Value};
use super::script::Flavor;

/// An open connection.
pub enum Db {
    /// PostgreSQL or Redshift.
    Pg {
        /// The connection.
        conn: PgConnection,
        /// Redshift (no prepared statements, even to describe an empty result).
        redshift: bool,
    },
    /// SQLite.
    Sqlite(SqliteConnection),
}

/// What a statement did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ran {
    /// Rows written.
    pub rows: u64,
    /// Whether the result had columns (a result set was written).
    pub result: bool,
    /// Whether `--max-rows` cut the result.
    pub cut: bool,
}

impl Ran {
    /// Writes the header of a result without rows, when the statement has columns.
    fn header(
        &mut self,
        writer: &mut dyn ResultWriter,
        out: &mut dyn Write,
        names: &[String],
    ) -> Result<(), RunError> {
        if !names.is_empty() {
            writer.columns(out, names)?;
            self.result = true;
        }
        Ok(())
    }
}

/// A failure: the database's, or writing the output.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The database refused the statement.
    #[error("{}", describe_db_error(.0))]
    Db(#[from] sqlx::Error),
    /// The output could not be written.
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

/// The database's message, with PostgreSQL's code and position when it gives them.
fn describe_db_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => {
            let mut s = d.message().to_string();
            if let Some(code) = d.code() {
                s.push_str(&format!(" (SQLSTATE {code})"));
            }
            if let Some(pg) = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                && let Some(sqlx::postgres::PgErrorPosition::Original(p)) = pg.position()
            {
                s.push_str(&format!(", at character {p} of the statement"));
            }
            s
        }
        e => e.to_string(),
    }
}

/// PostgreSQL type OIDs printed as JSON numbers, booleans and documents.
fn pg_kind(oid: Option<u32>) -> Kind {
    match oid {
        Some(20 | 21 | 23 | 26 | 700 | 701 | 1700) => Kind::Number,
        Some(16) => Kind::Bool,
        Some(114 | 3802) => Kind::Json,
        _ => Kind::Text,
    }
}

impl Db {
    /// Connects to `url`.
    ///
    /// # Errors
    /// The database cannot be reached or refuses the login; a SQLite file that does not
    /// exist (it is not created).
    pub async fn connect(url: &WarehouseUrl) -> Result<Db, RunError> {
        let options = url
            .connect_options()
            .map_err(|e| sqlx::Error::Configuration(e.to_string().into()))?;
        Ok(match options {
            // A long result is what this tool is for: no "slow statement" warnings.
            ConnectOptions::Pg(o) => Db::Pg {
                conn: PgConnection::connect_with(
                    &o.application_name("query").disable_statement_logging(),
                )
                .await?,
                redshift: matches!(url, WarehouseUrl::Redshift(_)),
            },
            ConnectOptions::Sqlite(o) => {
                Db::Sqlite(SqliteConnection::connect_with(&o.disable_statement_logging()).await?)
            }
        })
    }

    /// The dialect statements are split in.
    pub fn flavor(&self) -> Flavor {
        match self {
            Db::Pg { redshift: true, .. } => Flavor::Redshift,
            Db::Pg { .. } => Flavor::Postgres,
            Db::Sqlite(_) => Flavor::Sqlite,
        }
    }

    /// Runs `sql` and writes its rows (at most `max_rows`) through `writer` into `out`.
    ///
    /// # Errors
    /// The database's error, or the output's.
    pub async fn run(
        &mut self,
        sql: &str,
        writer: &mut dyn ResultWriter,
        out: &mut dyn Write,
        max_rows: Option<u64>,
    ) -> Result<Ran, RunError> {
        let mut ran = Ran::default();
        let mut values: Vec<Value> = Vec::new();
        match self {
            Db::Pg { conn, redshift } => {
                let mut kinds: Vec<Kind> = Vec::new();
                {
                    let mut stream = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).fetch_many(&mut *conn);
                    while let Some(item) = stream.try_next().await? {
                        let Either::Right(row) = item else { continue };
                        if !ran.result {
                            let names = columns(&row);
                            kinds = row
                                .columns()
                                .iter()
                                .map(|c| pg_kind(c.type_info().oid().map(|o| o.0)))
                                .collect();
                            values = vec![Value::null(); names.len()];
                            writer.columns(out, &names)?;
                            ran.result = true;
                        }
                        if max_rows.is_some_and(|m| ran.rows >= m) {
                            ran.cut = true;
                            break;
                        }
                        for (i, (v, kind)) in values.iter_mut().zip(&kinds).enumerate() {
                            let raw = row.try_get_raw(i)?;
                            if raw.is_null() {
                                v.kind = Kind::Null;
                                continue;
                            }
                            let text = raw.as_str().map_err(sqlx::Error::Decode)?;
                            match kind {
                                Kind::Bool => {
                                    v.set(Kind::Bool, if text == "t" { "true" } else { "false" })
                                }
                                k => v.set(*k, text),
                            }
                        }
                        writer.row(out, &values)?;
                        ran.rows += 1;
                    }
                }
                if !ran.result && !*redshift {
                    // No row came: the header still prints when the statement has columns.
                    let names = prepared_columns(&mut *conn, sql).await?;
                    ran.header(writer, out, &names)?;
                }
            }
            Db::Sqlite(conn) => {
                {
                    let mut stream = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).fetch_many(&mut *conn);
                    while let Some(item) = stream.try_next().await? {
                        let Either::Right(row) = item else { continue };
                        if !ran.result {
                            let names = columns(&row);
                            values = vec![Value::null(); names.len()];
                            writer.columns(out, &names)?;
                            ran.result = true;
                        }
                        if max_rows.is_some_and(|m| ran.rows >= m) {
                            ran.cut = true;
                            break;
                        }
                        for (i, v) in values.iter_mut().enumerate() {
                            let raw = row.try_get_raw(i)?;
                            if raw.is_null() {
                                v.kind = Kind::Null;
                                continue;
                            }
                            // The value's own storage class (SQLite columns have none).
                            match raw.type_info().name() {
                                "INTEGER" => {
                                    let n: i64 = row.try_get_unchecked(i)?;
                                    v.kind = Kind::Number;
                                    v.text.clear();
                                    let _ = write_display(&mut v.text, n);
                                }
                                "REAL" => {
                                    let f: f64 = row.try_get_unchecked(i)?;
                                    v.kind = if f.is_finite() {
                                        Kind::Number
                                    } else {
                                        Kind::Text
                                    };
                                    v.text.clear();
                                    let _ = write_display(&mut v.text, f);
                                }
                                "BLOB" => {
                                    let b: &[u8] = row.try_get_unchecked(i)?;
                                    v.kind = Kind::Text;
                                    v.text.clear();
                                    v.text.push_str("\\x");
                                    for byte in b {
                                        let _ =
                                            write_display(&mut v.text, format_args!("{byte:02x}"));
                                    }
                                }
                                _ => {
                                    let s: &str = row.try_get_unchecked(i)?;
                                    v.set(Kind::Text, s);
                                }
                            }
                        }
                        writer.row(out, &values)?;
                        ran.rows += 1;
                    }
                }
                if !ran.result {
                    let names = prepared_columns(&mut *conn, sql).await?;
                    ran.header(writer, out, &names)?;
                }
            }
        }
        if ran.result {
            writer.finish(out)?;
        }
        Ok(ran)
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        let _ = match self {
            Db::Pg { conn, .. } => conn.close().await,
            Db::Sqlite(conn) => conn.close().await,
        };
    }
}

/// The column names of `sql` as the database prepares it (for a header when no row came).
async fn prepared_columns<'c, E: Executor<'c>>(
    conn: E,
    sql: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let prepared = conn
        .prepare(sqlx::AssertSqlSafe(sql.to_string()).into_sql_str())
        .await?;
    Ok(prepared
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect())
}

fn columns<R: Row>(row: &R) -> Vec<String> {
    row.columns().iter().map(|c| c.name().to_string()).collect()
}

fn write_display(buf: &mut String, v: impl std::fmt::Display) -> std::fmt::Result {
    use std::fmt::Write as _;
    write!(buf, "{v}")
}
