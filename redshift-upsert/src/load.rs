//! Loaders: run plans against PostgreSQL, Redshift and SQLite in one transaction, with a
//! load-history table (written in the same transaction) for exactly-once loading, table
//! locks (in process and across processes) and retries of serialization conflicts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use sqlx::{AssertSqlSafe, Connection, Row};
use tokio::sync::Mutex;

use crate::batch::{Batch, COPY_MANIFEST_NAME};
use crate::error::{Error, Result};
use crate::manifest::{Ident, TableName};
use crate::options::ReadFormat;
use crate::plan::{
    DIRECT_SAVEPOINT, DataFile, Dialect, Plan, RedshiftTarget, Step, TargetFacts,
    advisory_lock_key, plan_empty_target, plan_keys_first, plan_with,
};
use crate::records::{KeyState, KeyTracker, RecordReader, encode_pg_text, encode_pg_text_fields};
use crate::store::Store;
use crate::warehouse::{Pool, WarehouseUrl, connect};

/// The default load-history table.
pub const DEFAULT_HISTORY_TABLE: &str = "blueshift_load_history";

/// Keys remembered per batch to prove that none repeats (about 16 bytes each).
const MAX_TRACKED_KEYS: usize = 4_000_000;

/// Bytes of COPY data sent to PostgreSQL per message.
const COPY_CHUNK: usize = 1 << 20;

/// How loads behave.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Redshift: use `MERGE` for the merge strategy.
    pub merge_statement: bool,
    /// Redshift: the IAM role COPY uses.
    pub iam_role: Option<String>,
    /// Attempts for serialization conflicts (PostgreSQL 40001/40P01, Redshift 1023).
    pub max_attempts: u32,
    /// Delete the loaded files after commit (false only to test crash recovery).
    pub delete_loaded: bool,
    /// The load-history table.
    pub history_table: TableName,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            merge_statement: false,
            iam_role: None,
            max_attempts: 5,
            delete_loaded: true,
            history_table: TableName {
                schema: None,
                name: Ident::new(DEFAULT_HISTORY_TABLE).unwrap_or_else(|_| unreachable_ident()),
            },
        }
    }
}

#[allow(clippy::panic)]
fn unreachable_ident() -> Ident {
    // DEFAULT_HISTORY_TABLE is a valid identifier; this is never called.
    Ident::new("blueshift_load_history").unwrap_or_else(|e| panic!("{e}"))
}

/// What one directory load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The directory.
    pub directory: String,
    /// The target table.
    pub table: String,
    /// Files loaded now.
    pub files_loaded: usize,
    /// Files skipped because the history says they were loaded before.
    pub files_skipped: usize,
    /// Rows loaded (PostgreSQL/SQLite: counted; Redshift: `pg_last_copy_count()`).
    pub rows: u64,
    /// Files deleted after commit.
    pub files_deleted: usize,
    /// Attempts made (1 when no conflict was retried).
    pub attempts: u32,
}

/// A loader for one warehouse.
#[derive(Debug)]
pub struct Loader {
    url: WarehouseUrl,
    pool: Pool,
    opts: LoadOptions,
    table_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    history_ready: tokio::sync::OnceCell<()>,
}

/// The history row of a file loaded before.
#[derive(Debug)]
struct Done {
    key: String,
    etag: Option<String>,
    size: i64,
}

impl Loader {
    /// A loader (connections are opened on first use).
    pub fn new(url: WarehouseUrl, opts: LoadOptions) -> Result<Loader> {
        let pool = connect(&url, 4)?;
        Ok(Loader {
            url,
            pool,
            opts,
            table_locks: Mutex::new(HashMap::new()),
            history_ready: tokio::sync::OnceCell::new(),
        })
    }

    /// The warehouse.
    pub fn url(&self) -> &WarehouseUrl {
        &self.url
    }

    /// The plan dialect.
    pub fn dialect(&self) -> Dialect {
        self.url.dialect(self.opts.merge_statement)
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The Redshift target for a batch in a store, when this warehouse is Redshift.
    pub fn redshift_target(&self, store: &Store, batch: &Batch) -> Result<Option<RedshiftTarget>> {
        if !matches!(self.url, WarehouseUrl::Redshift(_)) {
            return Ok(None);
        }
        let setup = |message: &str| Error::RedshiftSetup {
            table: batch.manifest.table.plain(),
            message: message.to_string(),
        };
        let s3_base = store
            .s3_base
            .clone()
            .ok_or_else(|| setup("the files must be in S3: COPY reads them from there"))?;
        let iam_role = self
            .opts
            .iam_role
            .clone()
            .ok_or_else(|| setup("no IAM role for COPY (LoadOptions::iam_role)"))?;
        let directory = &batch.directory;
        let copy_manifest_key = if directory.is_empty() {
            COPY_MANIFEST_NAME.to_string()
        } else {
            format!("{directory}/{COPY_MANIFEST_NAME}")
        };
        Ok(Some(RedshiftTarget {
            s3_base,
            copy_manifest_key,
            iam_role,
        }))
    }

    async fn table_lock(&self, table: &TableName) -> Arc<Mutex<()>> {
        let mut m = self.table_locks.lock().await;
        m.entry(table.plain()).or_default().clone()
    }

    fn db(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Error {
        let context = context.into();
        move |source| Error::Database { context, source }
    }

    /// Creates the history table if it does not exist (once per loader).
    pub async fn ensure_history(&self) -> Result<()> {
        self.history_ready
            .get_or_try_init(|| self.create_history())
            .await
            .map(|_| ())
    }

    async fn create_history(&self) -> Result<()> {
        let h = &self.opts.history_table;
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {h} (directory VARCHAR(1024) NOT NULL, file_key VARCHAR(1024) NOT NULL, \
             etag VARCHAR(256), size BIGINT NOT NULL, row_count BIGINT, loaded_at TIMESTAMP NOT NULL, \
             status VARCHAR(16) NOT NULL, target_table VARCHAR(256) NOT NULL, error VARCHAR(1024))"
        );
        match &self.pool {
            Pool::Pg(p) => {
                let mut tx = p.begin().await.map_err(Self::db("begin (history table)"))?;
                if matches!(self.url, WarehouseUrl::Postgres(_)) {
                    // Serialises concurrent CREATE TABLE IF NOT EXISTS across processes.
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(advisory_lock_key(h))
                        .execute(&mut *tx)
                        .await
                        .map_err(Self::db("lock (history table)"))?;
                }
                sqlx::raw_sql(AssertSqlSafe(ddl.clone()))
                    .execute(&mut *tx)
                    .await
                    .map_err(Self::db(ddl))?;
                tx.commit()
                    .await
                    .map_err(Self::db("commit (history table)"))?;
            }
            Pool::Sqlite(p) => {
                sqlx::raw_sql(AssertSqlSafe(ddl.clone()))
                    .execute(p)
                    .await
                    .map_err(Self::db(ddl))?;
            }
        }
        Ok(())
    }

    /// Loads one directory: all its data files in one transaction, then deletes them.
    /// Files the history lists as loaded (same key and ETag/size) are skipped and deleted.
    /// Serialization conflicts are retried with backoff.
    pub async fn load(&self, store: &Store, dir: &Batch) -> Result<LoadReport> {
        let table = dir.manifest.table.plain();
        let lock = self.table_lock(&dir.manifest.table).await;
        let _guard = lock.lock().await;
        self.ensure_history().await?;
        let started = Instant::now();
        let mut attempt = 0;
        let mut backoff = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .with_max_times(self.opts.max_attempts.saturating_sub(1) as usize)
            .build();
        let result = loop {
            attempt += 1;
            let r = match &self.pool {
                Pool::Pg(p) => self.try_load_pg(p, store, dir).await,
                Pool::Sqlite(p) => self.try_load_sqlite(p, store, dir).await,
            };
            match r {
                Err(e) if e.is_retryable() => {
                    let Some(wait) = backoff.next() else {
                        break Err(e);
                    };
                    metrics::counter!("blueshift_load_retries_total", "table" => table.clone())
                        .increment(1);
                    tracing::warn!(directory = %dir.directory, %table, attempt, error = %e, ?wait, "serialization conflict, retrying");
                    tokio::time::sleep(wait).await;
                }
                other => break other,
            }
        };
        metrics::histogram!("blueshift_load_duration_seconds", "table" => table.clone())
            .record(started.elapsed().as_secs_f64());
        let mut report = match result {
            Ok(r) => r,
            Err(e) => {
                metrics::counter!("blueshift_load_failures_total", "table" => table.clone())
                    .increment(1);
                self.record_failure(dir, &e).await;
                return Err(e);
            }
        };
        report.attempts = attempt;
        metrics::counter!("blueshift_loads_total", "table" => table.clone()).increment(1);
        metrics::counter!("blueshift_rows_loaded_total", "table" => table.clone())
            .increment(report.rows);
        metrics::counter!("blueshift_files_loaded_total", "table" => table.clone())
            .increment(report.files_loaded as u64);
        if self.opts.delete_loaded {
            for f in &dir.files {
                match store.delete(&f.key).await {
                    Ok(()) => report.files_deleted += 1,
                    Err(e) => {
                        tracing::warn!(key = %f.key, error = %e, "could not delete a loaded file; the history skips it next time")
                    }
                }
            }
            // The COPY manifest this loader wrote is not a data file: removed, not counted.
            if matches!(self.url, WarehouseUrl::Redshift(_))
                && let Some(t) = self.redshift_target(store, dir)?
                && let Err(e) = store.delete(&t.copy_manifest_key).await
            {
                tracing::warn!(key = %t.copy_manifest_key, error = %e, "could not delete the COPY manifest");
            }
        }
        Ok(report)
    }

    /// Best effort: a `failed` history row per file, outside the (rolled back) transaction.
    async fn record_failure(&self, dir: &Batch, e: &Error) {
        let msg: String = e.to_string().chars().take(1000).collect();
        let h = &self.opts.history_table;
        let table = dir.manifest.table.plain();
        let now = self.now_sql();
        for f in &dir.files {
            let r = match &self.pool {
                Pool::Pg(p) => {
                    let sql = format!(
                        "INSERT INTO {h} (directory, file_key, etag, size, row_count, loaded_at, status, target_table, error) VALUES ($1, $2, $3, $4, NULL, {now}, 'failed', $5, $6)"
                    );
                    sqlx::query(AssertSqlSafe(sql))
                        .bind(&dir.directory)
                        .bind(&f.key)
                        .bind(&f.etag)
                        .bind(f.size as i64)
                        .bind(&table)
                        .bind(&msg)
                        .execute(p)
                        .await
                        .map(|_| ())
                }
                Pool::Sqlite(p) => {
                    let sql = format!(
                        "INSERT INTO {h} (directory, file_key, etag, size, row_count, loaded_at, status, target_table, error) VALUES (?, ?, ?, ?, NULL, {now}, 'failed', ?, ?)"
                    );
                    sqlx::query(AssertSqlSafe(sql))
                        .bind(&dir.directory)
                        .bind(&f.key)
                        .bind(&f.etag)
                        .bind(f.size as i64)
                        .bind(&table)
                        .bind(&msg)
                        .execute(p)
                        .await
                        .map(|_| ())
                }
            };
            if let Err(err) = r {
                tracing::warn!(error = %err, "could not record a failed load in the history");
                return;
            }
        }
    }

    fn now_sql(&self) -> &'static str {
        match self.url {
            WarehouseUrl::Postgres(_) => "now()",
            WarehouseUrl::Redshift(_) => "GETDATE()",
            WarehouseUrl::Sqlite(_) => "CURRENT_TIMESTAMP",
        }
    }

    fn split_done(files: &[DataFile], done: &[Done]) -> (Vec<DataFile>, usize) {
        let mut by_key: HashMap<&str, Vec<&Done>> = HashMap::with_capacity(done.len());
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

    fn make_plan(
        &self,
        store: &Store,
        dir: &Batch,
        todo: &[DataFile],
        facts: &TargetFacts,
    ) -> Result<Plan> {
        let rs = self.redshift_target(store, dir)?;
        let p = plan_with(&dir.manifest, todo, self.dialect(), rs.as_ref(), facts)?;
        for n in &p.notes {
            tracing::info!(directory = %dir.directory, note = %n, "COPY option not applied");
        }
        Ok(p)
    }

    async fn try_load_pg(
        &self,
        pool: &sqlx::PgPool,
        store: &Store,
        dir: &Batch,
    ) -> Result<LoadReport> {
        let m = &dir.manifest;
        let h = &self.opts.history_table;
        let mut report = LoadReport {
            directory: dir.directory.clone(),
            table: m.table.plain(),
            ..Default::default()
        };
        let mut conn = pool
            .acquire()
            .await
            .map_err(Self::db(format!("connect to {}", self.url.redacted())))?;
        let mut tx = conn.begin().await.map_err(Self::db("begin"))?;
        // Serialise loads into this table across processes before reading the history.
        if matches!(self.url, WarehouseUrl::Redshift(_)) {
            let sql = format!("LOCK {}", m.table);
            sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                .execute(&mut *tx)
                .await
                .map_err(Self::db(sql))?;
        } else {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(advisory_lock_key(&m.table))
                .execute(&mut *tx)
                .await
                .map_err(Self::db("pg_advisory_xact_lock"))?;
        }
        let q = format!(
            "SELECT file_key, etag, size FROM {h} WHERE directory = $1 AND status = 'loaded'"
        );
        let rows = sqlx::query(AssertSqlSafe(q.clone()))
            .bind(&dir.directory)
            .fetch_all(&mut *tx)
            .await
            .map_err(Self::db(q))?;
        let done: Vec<Done> = rows
            .iter()
            .map(|r| Done {
                key: r.get(0),
                etag: r.get(1),
                size: r.get(2),
            })
            .collect();
        let (todo, skipped) = Self::split_done(&dir.files, &done);
        report.files_skipped = skipped;
        if todo.is_empty() {
            tx.commit().await.map_err(Self::db("commit"))?;
            return Ok(report);
        }
        let mut facts = TargetFacts::default();
        if matches!(self.url, WarehouseUrl::Postgres(_)) {
            facts.key_indexed = key_indexed(&mut tx, &m.table, &m.pk_columns).await?;
            facts.key_range = key_range(&mut tx, &m.table, &m.pk_columns).await?;
        }
        let p = self.make_plan(store, dir, &todo, &facts)?;
        if let Some(cm) = &p.copy_manifest {
            store.put(&cm.key, cm.body.clone().into_bytes()).await?;
        }
        let mut file_rows: Vec<(DataFile, Option<i64>)> = Vec::new();
        let key_idx: Vec<usize> = m
            .pk_columns
            .iter()
            .filter_map(|k| m.columns.iter().position(|c| c == k))
            .collect();
        let mut loaded_direct = false;
        // Set when the direct load saw keys repeat, or a unique index refused keys that
        // differ only as text: the full plan then stages the rows and keeps the latest per
        // key (whatever the text says).
        let mut values_repeat = false;
        if matches!(self.url, WarehouseUrl::Postgres(_))
            && let Some(direct) = plan_empty_target(m, &todo, self.dialect())?
            && let Some(rows) =
                load_empty_target(&mut tx, &direct, &p, m, store, &key_idx, &mut values_repeat)
                    .await?
        {
            tracing::debug!(directory = %dir.directory, "copied straight into the empty table");
            file_rows = rows;
            loaded_direct = true;
        }
        let keys_first = if loaded_direct || values_repeat {
            None
        } else {
            plan_keys_first(m, &todo, self.dialect(), &facts)?
        };
        if loaded_direct {
            // Done above.
        } else if let Some((keys_phase, direct)) = keys_first {
            // Stage the keys (spooling the shaped rows locally and watching for repeated
            // keys); without repeats, COPY the spool straight into the table, otherwise
            // stage the files whole and keep the latest row per key.
            let spool = tempfile::tempfile().map_err(|source| Error::Io {
                path: std::env::temp_dir(),
                source,
            })?;
            let extras = CopyExtras {
                fields: None,
                keys: Some(KeyTracker::new(key_idx, MAX_TRACKED_KEYS)),
                spool: Some(tokio::fs::File::from_std(spool)),
            };
            let (staged, _, extras) =
                run_pg_steps(&mut tx, &keys_phase, &p, m, store, extras).await?;
            let unique = extras
                .keys
                .as_ref()
                .is_some_and(|k| k.state() == KeyState::Unique);
            tracing::debug!(directory = %dir.directory, unique, "keys staged");
            // Keys distinct as text may still be equal as values (`1`, `01`): a unique
            // index then refuses the direct load, which is undone to run the full plan.
            let mut equal_as_values = false;
            if unique {
                exec_sql(&mut tx, &format!("SAVEPOINT {DIRECT_SAVEPOINT}")).await?;
                match run_pg_steps(&mut tx, &direct, &p, m, store, extras).await {
                    Ok((_, spooled, _)) => {
                        let staged_rows: u64 = staged
                            .iter()
                            .map(|(_, n)| n.unwrap_or(0).max(0) as u64)
                            .sum();
                        if spooled != staged_rows {
                            return Err(Error::Plan {
                                table: m.table.plain(),
                                message: format!(
                                    "spooled {spooled} rows but staged {staged_rows} keys"
                                ),
                            });
                        }
                        exec_sql(&mut tx, &format!("RELEASE SAVEPOINT {DIRECT_SAVEPOINT}")).await?;
                        file_rows = staged;
                    }
                    Err(e) if is_unique_violation(&e) => {
                        exec_sql(
                            &mut tx,
                            &format!("ROLLBACK TO SAVEPOINT {DIRECT_SAVEPOINT}"),
                        )
                        .await?;
                        equal_as_values = true;
                    }
                    Err(e) => return Err(e),
                }
            } else {
                drop(extras);
            }
            if !unique || equal_as_values {
                let mut rest: Vec<Step> = p.steps.iter().skip(2).cloned().collect();
                rest.push(Step::Execute(format!("DROP TABLE {}", crate::plan::KEYS)));
                file_rows = run_pg_steps(&mut tx, &rest, &p, m, store, CopyExtras::default())
                    .await?
                    .0;
            }
        } else {
            // Keys are watched while staging; if none repeats, the rest of the plan skips the
            // "latest row per key" step (same staging prefix, checked below).
            let last_copy = p
                .steps
                .iter()
                .rposition(|s| matches!(s, Step::CopyFromStdin { .. }));
            let keys = (!key_idx.is_empty() && !values_repeat)
                .then(|| KeyTracker::new(key_idx, MAX_TRACKED_KEYS));
            match (last_copy, keys) {
                (Some(last), Some(keys)) => {
                    let extras = CopyExtras {
                        keys: Some(keys),
                        ..CopyExtras::default()
                    };
                    let (staged, _, extras) =
                        run_pg_steps(&mut tx, &p.steps[..=last], &p, m, store, extras).await?;
                    file_rows = staged;
                    let unique = extras.keys.is_some_and(|k| k.state() == KeyState::Unique);
                    let q;
                    let rest = if unique {
                        let facts = TargetFacts {
                            batch_keys_unique: true,
                            ..facts
                        };
                        q = plan_with(m, &todo, self.dialect(), None, &facts)?;
                        if q.steps.get(..=last) != p.steps.get(..=last) {
                            return Err(Error::Plan {
                                table: m.table.plain(),
                                message: "plans for unique and repeated keys stage differently"
                                    .into(),
                            });
                        }
                        &q.steps[last + 1..]
                    } else {
                        &p.steps[last + 1..]
                    };
                    run_pg_steps(&mut tx, rest, &p, m, store, CopyExtras::default()).await?;
                }
                _ => {
                    file_rows =
                        run_pg_steps(&mut tx, &p.steps, &p, m, store, CopyExtras::default())
                            .await?
                            .0;
                }
            }
        }
        report.rows = file_rows
            .iter()
            .map(|(_, n)| n.unwrap_or(0).max(0) as u64)
            .sum();
        if p.copy_manifest.is_some() {
            let n: i64 = sqlx::query_scalar("SELECT pg_last_copy_count()::BIGINT")
                .fetch_one(&mut *tx)
                .await
                .map_err(Self::db("pg_last_copy_count()"))?;
            report.rows = n.max(0) as u64;
            file_rows = todo.iter().map(|f| (f.clone(), None)).collect();
        }
        let now = self.now_sql();
        let ins = format!(
            "INSERT INTO {h} (directory, file_key, etag, size, row_count, loaded_at, status, target_table) VALUES ($1, $2, $3, $4, $5, {now}, 'loaded', $6)"
        );
        for (f, n) in &file_rows {
            sqlx::query(AssertSqlSafe(ins.clone()))
                .bind(&dir.directory)
                .bind(&f.key)
                .bind(&f.etag)
                .bind(f.size as i64)
                .bind(n)
                .bind(m.table.plain())
                .execute(&mut *tx)
                .await
                .map_err(Self::db("insert into the load history"))?;
        }
        tx.commit().await.map_err(Self::db("commit"))?;
        report.files_loaded = todo.len();
        Ok(report)
    }

    async fn try_load_sqlite(
        &self,
        pool: &sqlx::SqlitePool,
        store: &Store,
        dir: &Batch,
    ) -> Result<LoadReport> {
        let m = &dir.manifest;
        let h = &self.opts.history_table;
        let mut report = LoadReport {
            directory: dir.directory.clone(),
            table: m.table.plain(),
            ..Default::default()
        };
        let mut conn = pool
            .acquire()
            .await
            .map_err(Self::db(format!("open {}", self.url.redacted())))?;
        // BEGIN IMMEDIATE takes the database's write lock: loads are serialised across processes.
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(Self::db("BEGIN IMMEDIATE"))?;
        let q = format!(
            "SELECT file_key, etag, size FROM {h} WHERE directory = ? AND status = 'loaded'"
        );
        let rows = sqlx::query(AssertSqlSafe(q.clone()))
            .bind(&dir.directory)
            .fetch_all(&mut *tx)
            .await
            .map_err(Self::db(q))?;
        let done: Vec<Done> = rows
            .iter()
            .map(|r| Done {
                key: r.get(0),
                etag: r.get(1),
                size: r.get(2),
            })
            .collect();
        let (todo, skipped) = Self::split_done(&dir.files, &done);
        report.files_skipped = skipped;
        if todo.is_empty() {
            tx.commit().await.map_err(Self::db("commit"))?;
            return Ok(report);
        }
        let p = self.make_plan(store, dir, &todo, &TargetFacts::default())?;
        let mut file_rows = Vec::new();
        for step in &p.steps {
            match step {
                Step::Execute(sql) => {
                    sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                        .execute(&mut *tx)
                        .await
                        .map_err(Self::db(sql.clone()))?;
                }
                Step::InsertRows {
                    table,
                    columns,
                    file,
                } => {
                    let rf = p.read_format.as_ref().ok_or_else(|| Error::Plan {
                        table: m.table.plain(),
                        message: "inserts without a read format".into(),
                    })?;
                    let n = insert_file(&mut tx, table, columns, store, file, rf).await?;
                    report.rows += n;
                    file_rows.push((file.clone(), n as i64));
                }
                Step::CopyFromStdin { .. } | Step::CopyFromSpool { .. } => {
                    return Err(Error::Plan {
                        table: m.table.plain(),
                        message: "COPY FROM STDIN needs PostgreSQL".into(),
                    });
                }
            }
        }
        let ins = format!(
            "INSERT INTO {h} (directory, file_key, etag, size, row_count, loaded_at, status, target_table) VALUES (?, ?, ?, ?, ?, CURRENT_TIMESTAMP, 'loaded', ?)"
        );
        for (f, n) in &file_rows {
            sqlx::query(AssertSqlSafe(ins.clone()))
                .bind(&dir.directory)
                .bind(&f.key)
                .bind(&f.etag)
                .bind(f.size as i64)
                .bind(n)
                .bind(m.table.plain())
                .execute(&mut *tx)
                .await
                .map_err(Self::db("insert into the load history"))?;
        }
        tx.commit().await.map_err(Self::db("commit"))?;
        report.files_loaded = todo.len();
        Ok(report)
    }
}

/// Runs plan steps on PostgreSQL; returns the rows of each COPY step and the key tracker
/// after it saw every COPY step's records.
async fn run_pg_steps(
    tx: &mut sqlx::PgConnection,
    steps: &[Step],
    plan: &Plan,
    m: &crate::manifest::Manifest,
    store: &Store,
    mut extras: CopyExtras,
) -> Result<(Vec<(DataFile, Option<i64>)>, u64, CopyExtras)> {
    let mut rows = Vec::new();
    let mut spooled_rows = 0;
    for (i, step) in steps.iter().enumerate() {
        let started = Instant::now();
        match step {
            Step::Execute(sql) => {
                sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                    .execute(&mut *tx)
                    .await
                    .map_err(Loader::db(sql.clone()))?;
            }
            Step::CopyFromStdin { sql, file, fields } => {
                let rf = plan.read_format.as_ref().ok_or_else(|| Error::Plan {
                    table: m.table.plain(),
                    message: "COPY FROM STDIN without a read format".into(),
                })?;
                extras.fields = fields.clone();
                let (n, x) = copy_file(tx, sql, store, file, rf, &m.columns, extras).await?;
                extras = x;
                rows.push((file.clone(), Some(n as i64)));
            }
            Step::CopyFromSpool { sql } => {
                let spool = extras.spool.as_mut().ok_or_else(|| Error::Plan {
                    table: m.table.plain(),
                    message: "COPY from a spool that was not written".into(),
                })?;
                spooled_rows += copy_spool(tx, sql, spool).await?;
            }
            Step::InsertRows { .. } => {
                return Err(Error::Plan {
                    table: m.table.plain(),
                    message: "insert steps need SQLite".into(),
                });
            }
        }
        tracing::debug!(table = %m.table.plain(), step = i, elapsed = ?started.elapsed(), "plan step done");
    }
    Ok((rows, spooled_rows, extras))
}

/// Executes one statement.
async fn exec_sql(tx: &mut sqlx::PgConnection, sql: &str) -> Result<()> {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(&mut *tx)
        .await
        .map_err(Loader::db(sql.to_string()))?;
    Ok(())
}

/// Whether an error is PostgreSQL's unique_violation (23505).
fn is_unique_violation(e: &Error) -> bool {
    matches!(e, Error::Database { source: sqlx::Error::Database(db), .. }
        if db.code().as_deref() == Some("23505"))
}

/// Runs [`plan_empty_target`]'s steps: takes the table lock and, when the table is empty,
/// COPYs the files straight into it while watching the keys. Returns the rows per file, or
/// `None` (with everything undone back to the savepoint) when the table holds rows, a key
/// repeats within the batch, the key tracker gave up, or a unique index refused a row: the
/// caller then runs the full plan (with its dedupe step, `values_repeat` set, unless the
/// table held rows).
async fn load_empty_target(
    tx: &mut sqlx::PgConnection,
    steps: &[Step],
    plan: &Plan,
    m: &crate::manifest::Manifest,
    store: &Store,
    key_idx: &[usize],
    values_repeat: &mut bool,
) -> Result<Option<Vec<(DataFile, Option<i64>)>>> {
    let Some((lock_and_savepoint, copies)) = steps.split_at_checked(2) else {
        return Ok(None);
    };
    let (lock, savepoint) = (&lock_and_savepoint[..1], &lock_and_savepoint[1..]);
    run_pg_steps(&mut *tx, lock, plan, m, store, CopyExtras::default()).await?;
    let q = format!("SELECT NOT EXISTS (SELECT 1 FROM {})", m.table);
    let empty: bool = sqlx::query_scalar(AssertSqlSafe(q.clone()))
        .fetch_one(&mut *tx)
        .await
        .map_err(Loader::db(q))?;
    if !empty {
        return Ok(None);
    }
    run_pg_steps(&mut *tx, savepoint, plan, m, store, CopyExtras::default()).await?;
    let extras = CopyExtras {
        fields: None,
        keys: Some(KeyTracker::new(key_idx.to_vec(), MAX_TRACKED_KEYS)),
        spool: None,
    };
    let rollback = format!("ROLLBACK TO SAVEPOINT {DIRECT_SAVEPOINT}");
    match run_pg_steps(&mut *tx, copies, plan, m, store, extras).await {
        Ok((rows, _, extras))
            if extras
                .keys
                .as_ref()
                .is_some_and(|k| k.state() == KeyState::Unique) =>
        {
            exec_sql(tx, &format!("RELEASE SAVEPOINT {DIRECT_SAVEPOINT}")).await?;
            Ok(Some(rows))
        }
        Ok(_) => {
            // Keys repeat (or too many to tell): the full plan's stage and dedupe, without
            // reading the files once more to stage only the keys.
            exec_sql(tx, &rollback).await?;
            *values_repeat = true;
            Ok(None)
        }
        Err(e) if is_unique_violation(&e) => {
            // Keys equal as values though not as text (e.g. `1`, `01`).
            exec_sql(tx, &rollback).await?;
            *values_repeat = true;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Whether a PostgreSQL index on `table` leads with exactly the key columns (any order).
pub async fn key_indexed(
    conn: &mut sqlx::PgConnection,
    table: &TableName,
    pk: &[Ident],
) -> Result<bool> {
    if pk.is_empty() {
        return Ok(false);
    }
    let names: Vec<String> = pk.iter().map(|c| c.as_str().to_string()).collect();
    let sql = "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass($1) \
               AND i.indnkeyatts >= $3 \
               AND (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = i.indrelid \
                    AND a.attnum = ANY (((i.indkey::int2[])[0:$3 - 1])) AND a.attname = ANY ($2)) = $3)";
    sqlx::query_scalar(sql)
        .bind(table.to_string())
        .bind(&names)
        .bind(names.len() as i32)
        .fetch_one(conn)
        .await
        .map_err(Loader::db("look up an index on the key columns"))
}

/// Whether the key is one column that leads a plain btree index on `table` (no predicate,
/// the column's default operator class and collation): its least and greatest values are
/// then one index probe each (see [`TargetFacts::key_range`]).
pub async fn key_range(
    conn: &mut sqlx::PgConnection,
    table: &TableName,
    pk: &[Ident],
) -> Result<bool> {
    let [k] = pk else {
        return Ok(false);
    };
    let sql = "SELECT EXISTS (SELECT 1 FROM pg_index i \
               JOIN pg_class c ON c.oid = i.indexrelid \
               JOIN pg_am am ON am.oid = c.relam \
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
               JOIN pg_opclass o ON o.oid = i.indclass[0] \
               WHERE i.indrelid = to_regclass($1) AND am.amname = 'btree' AND i.indisvalid \
               AND i.indpred IS NULL AND a.attname = $2 AND o.opcdefault \
               AND o.opcintype = a.atttypid AND i.indcollation[0] = a.attcollation)";
    sqlx::query_scalar(sql)
        .bind(table.to_string())
        .bind(k.as_str())
        .fetch_one(conn)
        .await
        .map_err(Loader::db("look up a btree index on the key column"))
}

/// Streams one file into `COPY ... FROM STDIN` (`sql`, e.g. `COPY t (a, b) FROM STDIN`) and
/// returns the rows copied: a task reads, decompresses and shapes records into 1 MiB chunks
/// (bounded channel), this task sends them. A bad record aborts the COPY with an error naming
/// the file and record. The loader uses it for each staging step; benches use it alone.
pub async fn copy_file(
    tx: &mut sqlx::PgConnection,
    sql: &str,
    store: &Store,
    file: &DataFile,
    rf: &ReadFormat,
    columns: &[Ident],
    extras: CopyExtras,
) -> Result<(u64, CopyExtras)> {
    let reader = store.reader(&file.key).await?;
    let mut rr = RecordReader::new(reader, rf, columns, &file.key);
    let (chunks, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    // The spool is an unnamed temporary file: name the data file it was being written for.
    let spool_path = std::path::PathBuf::from(format!("local spool of {}", file.key));
    let spool_err = move |e: std::io::Error| Error::Io {
        path: spool_path.clone(),
        source: e,
    };
    let producer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let CopyExtras {
            fields,
            mut keys,
            mut spool,
        } = extras;
        let mut buf = Vec::with_capacity(COPY_CHUNK + 64 * 1024);
        let mut spool_buf = Vec::new();
        while let Some(rec) = rr.next().await? {
            match &fields {
                Some(idx) => encode_pg_text_fields(&rec, idx, &mut buf),
                None => encode_pg_text(&rec, &mut buf),
            }
            if let Some(k) = keys.as_mut() {
                k.observe(&rec);
            }
            if let Some(f) = spool.as_mut() {
                encode_pg_text(&rec, &mut spool_buf);
                if spool_buf.len() >= COPY_CHUNK {
                    f.write_all(&spool_buf).await.map_err(&spool_err)?;
                    spool_buf.clear();
                }
            }
            if buf.len() >= COPY_CHUNK {
                let full = std::mem::replace(&mut buf, Vec::with_capacity(COPY_CHUNK + 64 * 1024));
                if chunks.send(full).await.is_err() {
                    return Ok(CopyExtras {
                        fields,
                        keys,
                        spool,
                    });
                }
            }
        }
        if let Some(f) = spool.as_mut() {
            f.write_all(&spool_buf).await.map_err(&spool_err)?;
        }
        if !buf.is_empty() {
            let _ = chunks.send(buf).await;
        }
        Ok::<CopyExtras, Error>(CopyExtras {
            fields,
            keys,
            spool,
        })
    });
    let mut copy = tx
        .copy_in_raw(sql)
        .await
        .map_err(Loader::db(sql.to_string()))?;
    let mut send_err = None;
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = copy.send(chunk).await {
            send_err = Some(e);
            break;
        }
    }
    drop(rx);
    let produced = producer.await.map_err(|e| Error::Data {
        file: file.key.clone(),
        record: 0,
        message: format!("reader task failed: {e}"),
    })?;
    let extras = match produced {
        Ok(x) => x,
        Err(e) => {
            let _ = copy.abort(e.to_string()).await;
            return Err(e);
        }
    };
    if let Some(e) = send_err {
        return Err(Error::Database {
            context: format!("{sql} <- {}", file.key),
            source: e,
        });
    }
    let n = copy.finish().await.map_err(|e| Error::Database {
        context: format!("{sql} <- {}", file.key),
        source: e,
    })?;
    Ok((n, extras))
}

/// Streams a spool file (PostgreSQL COPY text, written by [`copy_file`]) into `sql`.
async fn copy_spool(
    tx: &mut sqlx::PgConnection,
    sql: &str,
    spool: &mut tokio::fs::File,
) -> Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
    let io = |e: std::io::Error| Error::Io {
        path: "local spool of the staged data files".into(),
        source: e,
    };
    spool.flush().await.map_err(io)?;
    spool.seek(std::io::SeekFrom::Start(0)).await.map_err(io)?;
    let mut copy = tx
        .copy_in_raw(sql)
        .await
        .map_err(Loader::db(sql.to_string()))?;
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        let n = spool.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        copy.send(&buf[..n])
            .await
            .map_err(Loader::db(sql.to_string()))?;
    }
    copy.finish().await.map_err(Loader::db(sql.to_string()))
}

/// What [`copy_file`] does besides sending records: send only some fields, watch keys for
/// repeats, spool the full shaped records to a local file. Handed back after each file.
#[derive(Debug, Default)]
pub struct CopyExtras {
    /// Send only these fields (positions in the manifest's columns); `None`: all.
    pub fields: Option<Vec<usize>>,
    /// Watches keys for repeats.
    pub keys: Option<KeyTracker>,
    /// Receives every full record in COPY text format.
    pub spool: Option<tokio::fs::File>,
}

/// Inserts one file's records into the SQLite stage with batched multi-row prepared inserts.
async fn insert_file(
    tx: &mut sqlx::SqliteConnection,
    table: &str,
    columns: &[Ident],
    store: &Store,
    file: &DataFile,
    rf: &ReadFormat,
) -> Result<u64> {
    let ncols = columns.len().max(1);
    let batch = (32_000 / ncols).clamp(1, 200);
    let cols = columns
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let row = format!("({})", vec!["?"; ncols].join(", "));
    let sql_for = |n: usize| {
        format!(
            "INSERT INTO {table} ({cols}) VALUES {}",
            vec![row.as_str(); n].join(", ")
        )
    };
    let full_sql = sql_for(batch);
    let reader = store.reader(&file.key).await?;
    let mut rr = RecordReader::new(reader, rf, columns, &file.key);
    let mut arena: Vec<u8> = Vec::new();
    let mut fields: Vec<Option<(usize, usize)>> = Vec::with_capacity(batch * ncols);
    let mut total = 0u64;
    let mut pending = 0usize;
    loop {
        let rec = rr.next().await?;
        let end = rec.is_none();
        if let Some(rec) = rec {
            for f in rec.iter() {
                fields.push(f.map(|b| {
                    let s = arena.len();
                    arena.extend_from_slice(b);
                    (s, arena.len())
                }));
            }
            pending += 1;
        }
        if pending == batch || (end && pending > 0) {
            let sql = if pending == batch {
                full_sql.clone()
            } else {
                sql_for(pending)
            };
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for f in &fields {
                let v =
                    match f {
                        Some((s, e)) => Some(std::str::from_utf8(&arena[*s..*e]).map_err(
                            |_| Error::Data {
                                file: file.key.clone(),
                                record: rr.line_number(),
                                message: "invalid UTF-8 in a field".into(),
                            },
                        )?),
                        None => None,
                    };
                q = q.bind(v);
            }
            q.execute(&mut *tx).await.map_err(|e| Error::Database {
                context: format!(
                    "insert into {table} <- {} (records before line {})",
                    file.key,
                    rr.line_number()
                ),
                source: e,
            })?;
            total += pending as u64;
            pending = 0;
            fields.clear();
            arena.clear();
        }
        if end {
            return Ok(total);
        }
    }
}
