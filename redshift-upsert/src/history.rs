//! The load history: one row per file and load attempt, `loaded` (written in the load's
//! transaction, so it commits or rolls back with the rows) or `failed` (written after the
//! rollback, best effort). Files it lists as loaded, with the same ETag or size, are skipped.
//!
//! Its SQL is written once, for every warehouse: `$1..$n` placeholders, which sqlx also
//! binds on SQLite (`$NNN` is parameter NNN there), and the dialect's clock.

use std::collections::HashMap;

use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type,
};

use crate::error::{Error, Result};
use crate::manifest::TableName;
use crate::plan::DataFile;
use crate::warehouse::WarehouseUrl;

/// The load-history table of one warehouse.
#[derive(Debug, Clone)]
pub(crate) struct LoadHistory {
    table: TableName,
    /// The dialect's "now" (Redshift refuses `now()` outside the leader node).
    now: &'static str,
}

/// A history row of a file loaded before.
#[derive(Debug)]
pub(crate) struct LoadedFile {
    key: String,
    etag: Option<String>,
    size: i64,
}

/// The outcome a history row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Committed with the rows.
    Loaded,
    /// The load rolled back.
    Failed,
}

/// One history row.
#[derive(Debug)]
pub(crate) struct Entry<'a> {
    pub directory: &'a str,
    pub file: &'a DataFile,
    /// Rows loaded from the file, when counted.
    pub rows: Option<i64>,
    pub status: Status,
    pub target_table: &'a str,
    /// Why the load failed.
    pub error: Option<&'a str>,
}

impl LoadHistory {
    /// The history in `table` of the warehouse at `url`.
    pub(crate) fn new(table: TableName, url: &WarehouseUrl) -> LoadHistory {
        let now = match url {
            WarehouseUrl::Postgres(_) => "now()",
            WarehouseUrl::Redshift(_) => "GETDATE()",
            WarehouseUrl::Sqlite(_) => "CURRENT_TIMESTAMP",
        };
        LoadHistory { table, now }
    }

    /// The table.
    pub(crate) fn table(&self) -> &TableName {
        &self.table
    }

    /// `CREATE TABLE IF NOT EXISTS` (types every warehouse knows).
    pub(crate) fn create_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (directory VARCHAR(1024) NOT NULL, file_key VARCHAR(1024) NOT NULL, \
             etag VARCHAR(256), size BIGINT NOT NULL, row_count BIGINT, loaded_at TIMESTAMP NOT NULL, \
             status VARCHAR(16) NOT NULL, target_table VARCHAR(256) NOT NULL, error VARCHAR(1024))",
            self.table
        )
    }

    /// The files of a directory loaded before: `$1` the directory.
    pub(crate) fn lookup_sql(&self) -> String {
        format!(
            "SELECT file_key, etag, size FROM {} WHERE directory = $1 AND status = 'loaded'",
            self.table
        )
    }

    /// One row: `$1` directory, `$2` file key, `$3` ETag, `$4` size, `$5` rows, `$6` status,
    /// `$7` target table, `$8` error.
    pub(crate) fn insert_sql(&self) -> String {
        format!(
            "INSERT INTO {} (directory, file_key, etag, size, row_count, loaded_at, status, target_table, error) \
             VALUES ($1, $2, $3, $4, $5, {}, $6, $7, $8)",
            self.table, self.now
        )
    }

    fn db(&self, context: String) -> impl FnOnce(sqlx::Error) -> Error + '_ {
        move |source| Error::Database {
            table: self.table.plain(),
            file: None,
            context,
            source,
        }
    }

    /// The files of `directory` the history lists as loaded.
    pub(crate) async fn loaded<'c, DB, E>(&self, ex: E, directory: &str) -> Result<Vec<LoadedFile>>
    where
        DB: Database,
        E: Executor<'c, Database = DB>,
        DB::Arguments: IntoArguments<DB>,
        for<'a> &'a str: Encode<'a, DB> + Type<DB>,
        for<'r> String: Decode<'r, DB> + Type<DB>,
        for<'r> i64: Decode<'r, DB> + Type<DB>,
        usize: ColumnIndex<DB::Row>,
    {
        let sql = self.lookup_sql();
        let rows = sqlx::query::<DB>(AssertSqlSafe(sql.clone()))
            .bind(directory)
            .fetch_all(ex)
            .await
            .map_err(self.db(sql.clone()))?;
        rows.iter()
            .map(|r| {
                Ok(LoadedFile {
                    key: r.try_get(0)?,
                    etag: r.try_get(1)?,
                    size: r.try_get(2)?,
                })
            })
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
            .map_err(self.db(sql))
    }

    /// Writes one row.
    pub(crate) async fn record<'c, DB, E>(&self, ex: E, e: &Entry<'_>) -> Result<()>
    where
        DB: Database,
        E: Executor<'c, Database = DB>,
        DB::Arguments: IntoArguments<DB>,
        for<'a> &'a str: Encode<'a, DB> + Type<DB>,
        for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
        for<'a> i64: Encode<'a, DB> + Type<DB>,
        for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    {
        let status = match e.status {
            Status::Loaded => "loaded",
            Status::Failed => "failed",
        };
        sqlx::query::<DB>(AssertSqlSafe(self.insert_sql()))
            .bind(e.directory)
            .bind(e.file.key.as_str())
            .bind(e.file.etag.as_deref())
            .bind(e.file.size as i64)
            .bind(e.rows)
            .bind(status)
            .bind(e.target_table)
            .bind(e.error)
            .execute(ex)
            .await
            .map_err(self.db(format!("record a {status} file in the load history")))?;
        Ok(())
    }
}

/// Splits a batch's files into those to load and the number already loaded (same key, and
/// the same ETag when both have one, else the same size).
pub(crate) fn split_done(files: &[DataFile], done: &[LoadedFile]) -> (Vec<DataFile>, usize) {
    let mut by_key: HashMap<&str, Vec<&LoadedFile>> = HashMap::with_capacity(done.len());
    for d in done {
        by_key.entry(d.key.as_str()).or_default().push(d);
    }
    let mut todo = Vec::new();
    let mut skipped = 0;
    for f in files {
        let seen = by_key.get(f.key.as_str()).is_some_and(|loaded| {
            loaded.iter().any(|d| match (&d.etag, &f.etag) {
                (Some(a), Some(b)) => a == b,
                _ => d.size == f.size as i64,
            })
        });
        if seen {
            skipped += 1
        } else {
            todo.push(f.clone())
        }
    }
    (todo, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(key: &str, etag: Option<&str>, size: u64) -> DataFile {
        DataFile {
            key: key.into(),
            etag: etag.map(Into::into),
            size,
        }
    }

    fn done(key: &str, etag: Option<&str>, size: i64) -> LoadedFile {
        LoadedFile {
            key: key.into(),
            etag: etag.map(Into::into),
            size,
        }
    }

    #[test]
    fn files_loaded_before_are_skipped_by_etag_else_size() {
        let files = [
            file("d/a", Some("e1"), 10),
            file("d/b", Some("e2"), 10),
            file("d/c", None, 5),
            file("d/d", None, 6),
        ];
        let history = [
            done("d/a", Some("e1"), 99),
            done("d/b", Some("old"), 10),
            done("d/c", Some("x"), 5),
            done("d/d", None, 7),
        ];
        let (todo, skipped) = split_done(&files, &history);
        assert_eq!(skipped, 2);
        let keys: Vec<&str> = todo.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["d/b", "d/d"]);
    }

    #[test]
    fn one_text_per_statement_for_every_warehouse() {
        let t = TableName::parse("s.hist").unwrap();
        let pg = LoadHistory::new(t.clone(), &WarehouseUrl::Postgres("postgres://h/d".into()));
        let lite = LoadHistory::new(t, &WarehouseUrl::Sqlite("/tmp/x.db".into()));
        assert_eq!(pg.lookup_sql(), lite.lookup_sql());
        assert_eq!(pg.create_sql(), lite.create_sql());
        assert_eq!(
            pg.insert_sql().replace("now()", "CURRENT_TIMESTAMP"),
            lite.insert_sql()
        );
        assert!(pg.insert_sql().contains(r#"INSERT INTO "s"."hist" ("#));
    }
}
