//! Loaders: run plans against PostgreSQL, Redshift and SQLite in one transaction, with a
//! load-history table (written in the same transaction) for exactly-once loading, table
//! locks (in process and across processes) and retries of serialization conflicts.
//!
//! The loader executes the plan's [`LoadStrategy`] phase by phase, by name: a fast path's
//! phases, then (when the data rules it out) the fallback the plan names.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use sqlx::{AssertSqlSafe, Connection};
use tokio::sync::Mutex;

use crate::batch::{Batch, COPY_MANIFEST_NAME};
use crate::error::{Error, Result};
use crate::history::{Entry, LoadHistory, Status, split_done};
use crate::manifest::{Ident, Manifest, TableName};
use crate::options::ReadFormat;
use crate::plan::{
    DataFile, Dialect, DirectIntoEmpty, FastPaths, KeysFirst, LoadStrategy, Plan, RedshiftTarget,
    Step, TargetFacts, advisory_lock_key, plan_with,
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
    /// The PostgreSQL fast paths the planner may offer (all by default). Turning one off
    /// changes how fast a load is, not the rows it leaves (see [`FastPaths`] for the one
    /// exception: keys equal as values but not as text, without a unique index).
    pub fast_paths: FastPaths,
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
                name: Ident::known(DEFAULT_HISTORY_TABLE),
            },
            fast_paths: FastPaths::default(),
        }
    }
}

/// The path a load took through its plan's [`LoadStrategy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadPath {
    /// The files were copied straight into the empty table
    /// ([`LoadStrategy::DirectIntoEmpty`]).
    DirectIntoEmpty,
    /// The keys were staged, the rows copied from the local spool into the table
    /// ([`LoadStrategy::KeysFirst`]).
    KeysFirst,
    /// Every row was staged, then applied ([`Plan::staged`]): the general path, and the
    /// fallback of the fast paths.
    Staged {
        /// The loader saw every key of the batch once while staging and skipped the "latest
        /// row per key" step ([`StagedLoad::apply_keys_unique`](crate::StagedLoad::apply_keys_unique)).
        dedupe_skipped: bool,
    },
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
    /// The path the committed attempt took; `None` when every file was loaded before.
    pub path: Option<LoadPath>,
}

/// A loader for one warehouse.
#[derive(Debug)]
pub struct Loader {
    url: WarehouseUrl,
    pool: Pool,
    opts: LoadOptions,
    history: LoadHistory,
    table_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    history_ready: tokio::sync::OnceCell<()>,
}

/// Rows loaded per file (`None`: not counted per file, Redshift).
type FileRows = Vec<(DataFile, Option<i64>)>;

/// A database error on `table` while doing `context`.
fn db(table: &TableName, context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Error {
    let table = table.plain();
    let context = context.into();
    move |source| Error::Database {
        table,
        file: None,
        context,
        source,
    }
}

impl Loader {
    /// A loader (connections are opened on first use).
    ///
    /// # Errors
    /// [`Error::Warehouse`] when the URL is not a valid connection URL.
    pub fn new(url: WarehouseUrl, opts: LoadOptions) -> Result<Loader> {
        let pool = connect(&url, 4)?;
        let history = LoadHistory::new(opts.history_table.clone(), &url);
        Ok(Loader {
            url,
            pool,
            opts,
            history,
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

    /// The Redshift target for a batch in a store, when this warehouse is Redshift.
    ///
    /// # Errors
    /// [`Error::RedshiftSetup`]: the store is not S3, or no IAM role is set.
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

    /// The plan this loader would run for every file of `batch`, without looking at the
    /// table (a dry run: the facts a load looks up, such as a key index, are left out).
    ///
    /// # Errors
    /// What [`plan_with`] and [`Loader::redshift_target`] refuse.
    pub fn plan(&self, store: &Store, batch: &Batch) -> Result<Plan> {
        self.make_plan(store, batch, &batch.files, &TargetFacts::default())
    }

    async fn table_lock(&self, table: &TableName) -> Arc<Mutex<()>> {
        let mut m = self.table_locks.lock().await;
        m.entry(table.plain()).or_default().clone()
    }

    /// Creates the history table if it does not exist (once per loader).
    ///
    /// # Errors
    /// [`Error::Database`] naming the history table.
    pub async fn ensure_history(&self) -> Result<()> {
        self.history_ready
            .get_or_try_init(|| self.create_history())
            .await
            .map(|_| ())
    }

    async fn create_history(&self) -> Result<()> {
        let h = self.history.table();
        let ddl = self.history.create_sql();
        match &self.pool {
            Pool::Pg(p) => {
                let mut tx = p.begin().await.map_err(db(h, "begin"))?;
                if matches!(self.url, WarehouseUrl::Postgres(_)) {
                    // Serialises concurrent CREATE TABLE IF NOT EXISTS across processes.
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(advisory_lock_key(h))
                        .execute(&mut *tx)
                        .await
                        .map_err(db(h, "pg_advisory_xact_lock"))?;
                }
                sqlx::raw_sql(AssertSqlSafe(ddl.clone()))
                    .execute(&mut *tx)
                    .await
                    .map_err(db(h, ddl))?;
                tx.commit().await.map_err(db(h, "commit"))?;
            }
            Pool::Sqlite(p) => {
                sqlx::raw_sql(AssertSqlSafe(ddl.clone()))
                    .execute(p)
                    .await
                    .map_err(db(h, ddl))?;
            }
        }
        Ok(())
    }

    /// Loads one directory: all its data files in one transaction, then deletes them.
    /// Files the history lists as loaded (same key and ETag/size) are skipped and deleted.
    /// Serialization conflicts are retried with backoff.
    ///
    /// # Errors
    /// Whatever failed, naming the table and, where there is one, the file; the
    /// transaction is rolled back, the files are kept, and the history gets a `failed` row
    /// per file.
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
        let table = dir.manifest.table.plain();
        for f in &dir.files {
            let entry = Entry {
                directory: &dir.directory,
                file: f,
                rows: None,
                status: Status::Failed,
                target_table: &table,
                error: Some(&msg),
            };
            let r = match &self.pool {
                Pool::Pg(p) => self.history.record(p, &entry).await,
                Pool::Sqlite(p) => self.history.record(p, &entry).await,
            };
            if let Err(err) = r {
                tracing::warn!(error = %err, "could not record a failed load in the history");
                return;
            }
        }
    }

    fn make_plan(
        &self,
        store: &Store,
        dir: &Batch,
        todo: &[DataFile],
        facts: &TargetFacts,
    ) -> Result<Plan> {
        let rs = self.redshift_target(store, dir)?;
        let p = plan_with(
            &dir.manifest,
            todo,
            self.dialect(),
            rs.as_ref(),
            facts,
            self.opts.fast_paths,
        )?;
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
        let table = m.table.plain();
        let mut report = LoadReport {
            directory: dir.directory.clone(),
            table: table.clone(),
            ..Default::default()
        };
        let mut conn = pool
            .acquire()
            .await
            .map_err(db(&m.table, format!("connect to {}", self.url.redacted())))?;
        let mut tx = conn.begin().await.map_err(db(&m.table, "begin"))?;
        // Serialise loads into this table across processes before reading the history.
        if matches!(self.url, WarehouseUrl::Redshift(_)) {
            let sql = format!("LOCK {}", m.table);
            sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                .execute(&mut *tx)
                .await
                .map_err(db(&m.table, sql))?;
        } else {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(advisory_lock_key(&m.table))
                .execute(&mut *tx)
                .await
                .map_err(db(&m.table, "pg_advisory_xact_lock"))?;
        }
        let done = self.history.loaded(&mut *tx, &dir.directory).await?;
        let (todo, skipped) = split_done(&dir.files, &done);
        report.files_skipped = skipped;
        if todo.is_empty() {
            tx.commit().await.map_err(db(&m.table, "commit"))?;
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
        let run = PgRun::new(&p, m, store);
        let (mut file_rows, path) = run.execute(&mut tx).await?;
        tracing::debug!(directory = %dir.directory, ?path, "plan done");
        report.path = Some(path);
        report.rows = file_rows
            .iter()
            .map(|(_, n)| n.unwrap_or(0).max(0) as u64)
            .sum();
        if p.copy_manifest.is_some() {
            let n: i64 = sqlx::query_scalar("SELECT pg_last_copy_count()::BIGINT")
                .fetch_one(&mut *tx)
                .await
                .map_err(db(&m.table, "pg_last_copy_count()"))?;
            report.rows = n.max(0) as u64;
            file_rows = todo.iter().map(|f| (f.clone(), None)).collect();
        }
        for (f, n) in &file_rows {
            let entry = Entry {
                directory: &dir.directory,
                file: f,
                rows: *n,
                status: Status::Loaded,
                target_table: &table,
                error: None,
            };
            self.history.record(&mut *tx, &entry).await?;
        }
        tx.commit().await.map_err(db(&m.table, "commit"))?;
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
        let table = m.table.plain();
        let mut report = LoadReport {
            directory: dir.directory.clone(),
            table: table.clone(),
            ..Default::default()
        };
        let mut conn = pool
            .acquire()
            .await
            .map_err(db(&m.table, format!("open {}", self.url.redacted())))?;
        // BEGIN IMMEDIATE takes the database's write lock: loads are serialised across processes.
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db(&m.table, "BEGIN IMMEDIATE"))?;
        let done = self.history.loaded(&mut *tx, &dir.directory).await?;
        let (todo, skipped) = split_done(&dir.files, &done);
        report.files_skipped = skipped;
        if todo.is_empty() {
            tx.commit().await.map_err(db(&m.table, "commit"))?;
            return Ok(report);
        }
        let p = self.make_plan(store, dir, &todo, &TargetFacts::default())?;
        // SQLite plans are always staged; they never have an `apply_keys_unique`.
        let s = &p.staged;
        let mut file_rows = Vec::new();
        for phase in [&s.prelude, &s.stage, &s.apply] {
            for step in phase {
                match step {
                    Step::Execute(sql) => {
                        sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                            .execute(&mut *tx)
                            .await
                            .map_err(db(&m.table, sql.clone()))?;
                    }
                    Step::InsertRows {
                        table: stage,
                        columns,
                        file,
                    } => {
                        let rf = p.read_format.as_ref().ok_or_else(|| Error::Plan {
                            table: table.clone(),
                            message: "inserts without a read format".into(),
                        })?;
                        let n =
                            insert_file(&mut tx, &m.table, stage, columns, store, file, rf).await?;
                        report.rows += n;
                        file_rows.push((file.clone(), n as i64));
                    }
                    Step::CopyFromStdin { .. } | Step::CopyFromSpool { .. } => {
                        return Err(Error::Plan {
                            table: table.clone(),
                            message: "COPY FROM STDIN needs PostgreSQL".into(),
                        });
                    }
                }
            }
        }
        report.path = Some(LoadPath::Staged {
            dedupe_skipped: false,
        });
        for (f, n) in &file_rows {
            let entry = Entry {
                directory: &dir.directory,
                file: f,
                rows: Some(*n),
                status: Status::Loaded,
                target_table: &table,
                error: None,
            };
            self.history.record(&mut *tx, &entry).await?;
        }
        tx.commit().await.map_err(db(&m.table, "commit"))?;
        report.files_loaded = todo.len();
        Ok(report)
    }
}

/// What the direct copy into an empty table found.
enum Direct {
    /// Done: the rows per file.
    Loaded(FileRows),
    /// The table holds rows: nothing was done but taking the lock.
    NotEmpty,
    /// A key repeats within the batch (or the tracker gave up, or a unique index refused
    /// keys equal as values but not as text): undone back to the savepoint.
    KeysRepeat,
}

/// One PostgreSQL or Redshift plan being run.
struct PgRun<'a> {
    plan: &'a Plan,
    m: &'a Manifest,
    store: &'a Store,
    /// The key columns' positions in the manifest's columns.
    key_idx: Vec<usize>,
}

impl<'a> PgRun<'a> {
    fn new(plan: &'a Plan, m: &'a Manifest, store: &'a Store) -> PgRun<'a> {
        let key_idx = m
            .pk_columns
            .iter()
            .filter_map(|k| m.columns.iter().position(|c| c == k))
            .collect();
        PgRun {
            plan,
            m,
            store,
            key_idx,
        }
    }

    fn tracker(&self) -> KeyTracker {
        KeyTracker::new(self.key_idx.clone(), MAX_TRACKED_KEYS)
    }

    /// Runs the plan's strategy: the rows per file and the path taken.
    async fn execute(&self, tx: &mut sqlx::PgConnection) -> Result<(FileRows, LoadPath)> {
        match &self.plan.strategy {
            LoadStrategy::Staged => self.staged(tx, true).await,
            LoadStrategy::KeysFirst(k) => self.keys_first(tx, k).await,
            LoadStrategy::DirectIntoEmpty(d) => match self.direct_into_empty(tx, d).await? {
                Direct::Loaded(rows) => Ok((rows, LoadPath::DirectIntoEmpty)),
                // The staged load's dedupe, without reading the files once more to stage
                // only the keys.
                Direct::KeysRepeat => self.staged(tx, false).await,
                Direct::NotEmpty => match &d.if_not_empty {
                    Some(k) => self.keys_first(tx, k).await,
                    None => self.staged(tx, true).await,
                },
            },
        }
    }

    /// The staged load. With `watch_keys` (and an `apply_keys_unique` to take), keys are
    /// watched while staging; when none repeated, `apply_keys_unique` runs instead of `apply`.
    async fn staged(
        &self,
        tx: &mut sqlx::PgConnection,
        watch_keys: bool,
    ) -> Result<(FileRows, LoadPath)> {
        let s = &self.plan.staged;
        self.steps(tx, &s.prelude, CopyExtras::default()).await?;
        let watch = watch_keys && s.apply_keys_unique.is_some() && !self.key_idx.is_empty();
        let extras = CopyExtras {
            keys: watch.then(|| self.tracker()),
            ..CopyExtras::default()
        };
        let (rows, _, extras) = self.steps(tx, &s.stage, extras).await?;
        let unique = extras.keys.is_some_and(|k| k.state() == KeyState::Unique);
        let apply = match (&s.apply_keys_unique, unique) {
            (Some(apply_unique), true) => apply_unique,
            _ => &s.apply,
        };
        self.steps(tx, apply, CopyExtras::default()).await?;
        Ok((
            rows,
            LoadPath::Staged {
                dedupe_skipped: unique,
            },
        ))
    }

    /// [`KeysFirst`]: stage the keys (spooling the shaped rows locally and watching for
    /// repeated keys); without repeats, COPY the spool straight into the table, otherwise
    /// stage the files whole and keep the latest row per key.
    async fn keys_first(
        &self,
        tx: &mut sqlx::PgConnection,
        k: &KeysFirst,
    ) -> Result<(FileRows, LoadPath)> {
        let staged = &self.plan.staged;
        self.steps(tx, &staged.prelude, CopyExtras::default())
            .await?;
        let spool = tempfile::tempfile().map_err(|source| Error::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        let extras = CopyExtras {
            fields: None,
            keys: Some(self.tracker()),
            spool: Some(tokio::fs::File::from_std(spool)),
        };
        let (keys_rows, _, extras) = self.steps(tx, &k.stage_keys, extras).await?;
        let unique = extras
            .keys
            .as_ref()
            .is_some_and(|k| k.state() == KeyState::Unique);
        tracing::debug!(table = %self.m.table.plain(), unique, "keys staged");
        if unique {
            exec_sql(tx, &self.m.table, &k.savepoint.set_sql()).await?;
            match self.steps(tx, &k.apply, extras).await {
                Ok((_, spooled, _)) => {
                    let staged_rows: u64 = keys_rows
                        .iter()
                        .map(|(_, n)| n.unwrap_or(0).max(0) as u64)
                        .sum();
                    if spooled != staged_rows {
                        return Err(Error::Plan {
                            table: self.m.table.plain(),
                            message: format!(
                                "spooled {spooled} rows but staged {staged_rows} keys"
                            ),
                        });
                    }
                    exec_sql(tx, &self.m.table, &k.savepoint.release_sql()).await?;
                    return Ok((keys_rows, LoadPath::KeysFirst));
                }
                // Keys distinct as text may still be equal as values (`1`, `01`): a unique
                // index then refuses the direct load, which is undone.
                Err(e) if is_unique_violation(&e) => {
                    exec_sql(tx, &self.m.table, &k.savepoint.rollback_sql()).await?;
                }
                Err(e) => return Err(e),
            }
        } else {
            drop(extras);
        }
        // The fallback: the staged load after its prelude (already run), then the key stage
        // is dropped.
        let (rows, _, _) = self.steps(tx, &staged.stage, CopyExtras::default()).await?;
        self.steps(tx, &staged.apply, CopyExtras::default()).await?;
        self.steps(
            tx,
            std::slice::from_ref(&k.drop_keys),
            CopyExtras::default(),
        )
        .await?;
        Ok((
            rows,
            LoadPath::Staged {
                dedupe_skipped: false,
            },
        ))
    }

    /// [`DirectIntoEmpty`]: takes the table lock and, when the table is empty, COPYs the
    /// files straight into it while watching the keys.
    async fn direct_into_empty(
        &self,
        tx: &mut sqlx::PgConnection,
        d: &DirectIntoEmpty,
    ) -> Result<Direct> {
        let table = &self.m.table;
        self.steps(tx, std::slice::from_ref(&d.lock), CopyExtras::default())
            .await?;
        let empty: bool = sqlx::query_scalar(AssertSqlSafe(d.empty_check.clone()))
            .fetch_one(&mut *tx)
            .await
            .map_err(db(table, d.empty_check.clone()))?;
        if !empty {
            return Ok(Direct::NotEmpty);
        }
        exec_sql(tx, table, &d.savepoint.set_sql()).await?;
        let extras = CopyExtras {
            keys: Some(self.tracker()),
            ..CopyExtras::default()
        };
        match self.steps(tx, &d.copy, extras).await {
            Ok((rows, _, extras))
                if extras
                    .keys
                    .as_ref()
                    .is_some_and(|k| k.state() == KeyState::Unique) =>
            {
                exec_sql(tx, table, &d.savepoint.release_sql()).await?;
                Ok(Direct::Loaded(rows))
            }
            // Keys repeat (or too many to tell).
            Ok(_) => {
                exec_sql(tx, table, &d.savepoint.rollback_sql()).await?;
                Ok(Direct::KeysRepeat)
            }
            // Keys equal as values though not as text (e.g. `1`, `01`).
            Err(e) if is_unique_violation(&e) => {
                exec_sql(tx, table, &d.savepoint.rollback_sql()).await?;
                Ok(Direct::KeysRepeat)
            }
            Err(e) => Err(e),
        }
    }

    /// Runs steps; returns the rows of each COPY step, the rows COPYed from the spool, and
    /// the extras after they saw every COPY step's records.
    async fn steps(
        &self,
        tx: &mut sqlx::PgConnection,
        steps: &[Step],
        mut extras: CopyExtras,
    ) -> Result<(FileRows, u64, CopyExtras)> {
        let m = self.m;
        let mut rows = Vec::new();
        let mut spooled_rows = 0;
        for step in steps {
            let started = Instant::now();
            match step {
                Step::Execute(sql) => exec_sql(tx, &m.table, sql).await?,
                Step::CopyFromStdin { sql, file, fields } => {
                    let rf = self.plan.read_format.as_ref().ok_or_else(|| Error::Plan {
                        table: m.table.plain(),
                        message: "COPY FROM STDIN without a read format".into(),
                    })?;
                    extras.fields = fields.clone();
                    let target = CopyTarget {
                        table: &m.table,
                        sql,
                        columns: &m.columns,
                        format: rf,
                    };
                    let (n, x) = copy_records(tx, &target, self.store, file, extras).await?;
                    extras = x;
                    rows.push((file.clone(), Some(n as i64)));
                }
                Step::CopyFromSpool { sql } => {
                    let spool = extras.spool.as_mut().ok_or_else(|| Error::Plan {
                        table: m.table.plain(),
                        message: "COPY from a spool that was not written".into(),
                    })?;
                    spooled_rows += copy_spool(tx, &m.table, sql, spool).await?;
                }
                Step::InsertRows { .. } => {
                    return Err(Error::Plan {
                        table: m.table.plain(),
                        message: "insert steps need SQLite".into(),
                    });
                }
            }
            tracing::debug!(table = %m.table.plain(), step = %step, elapsed = ?started.elapsed(), "plan step done");
        }
        Ok((rows, spooled_rows, extras))
    }
}

/// Executes one statement.
async fn exec_sql(tx: &mut sqlx::PgConnection, table: &TableName, sql: &str) -> Result<()> {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(&mut *tx)
        .await
        .map_err(db(table, sql))?;
    Ok(())
}

/// Whether an error is PostgreSQL's unique_violation (23505).
fn is_unique_violation(e: &Error) -> bool {
    matches!(e, Error::Database { source: sqlx::Error::Database(db), .. }
        if db.code().as_deref() == Some("23505"))
}

/// Whether a PostgreSQL index on `table` leads with exactly the key columns (any order).
pub(crate) async fn key_indexed(
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
        .map_err(db(table, "look up an index on the key columns"))
}

/// Whether the key is one column that leads a plain btree index on `table` (no predicate,
/// the column's default operator class and collation): its least and greatest values are
/// then one index probe each (see [`TargetFacts::key_range`]).
pub(crate) async fn key_range(
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
        .map_err(db(table, "look up a btree index on the key column"))
}

/// PostgreSQL: streams one data file, read and shaped as `manifest`'s options say, straight
/// into its table with `COPY table (columns) FROM STDIN`, in the caller's connection or
/// transaction, and returns the rows copied. No staging, no dedupe, no load history: the
/// loader's COPY path alone (it is what [`Loader::load`] runs per file), for callers that
/// manage the table themselves.
///
/// # Errors
/// [`Error::ManifestUnsupported`] for options PostgreSQL cannot honour; [`Error::Data`]
/// naming the file and record for a record that cannot be shaped (the COPY is aborted);
/// [`Error::Database`] naming the table and file; [`Error::Store`] naming the key.
pub async fn copy_file(
    conn: &mut sqlx::PgConnection,
    manifest: &Manifest,
    store: &Store,
    file: &DataFile,
) -> Result<u64> {
    let (format, _) =
        ReadFormat::from_options(&manifest.options, manifest.data_format).map_err(|message| {
            Error::ManifestUnsupported {
                manifest: manifest.file.clone(),
                key: ":options".into(),
                table: manifest.table.plain(),
                message,
            }
        })?;
    let cols = manifest
        .columns
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("COPY {} ({cols}) FROM STDIN", manifest.table);
    let target = CopyTarget {
        table: &manifest.table,
        sql: &sql,
        columns: &manifest.columns,
        format: &format,
    };
    let (n, _) = copy_records(conn, &target, store, file, CopyExtras::default()).await?;
    Ok(n)
}

/// Where [`copy_records`] sends a file's records.
struct CopyTarget<'a> {
    /// The table loaded (for errors).
    table: &'a TableName,
    /// The `COPY ... FROM STDIN` statement.
    sql: &'a str,
    /// The manifest's columns (the fields of each record).
    columns: &'a [Ident],
    /// How the file is read.
    format: &'a ReadFormat,
}

/// Streams one file into `COPY ... FROM STDIN` and returns the rows copied: a task reads,
/// decompresses and shapes records into 1 MiB chunks (bounded channel), this task sends
/// them. A bad record aborts the COPY with an error naming the file and record.
async fn copy_records(
    tx: &mut sqlx::PgConnection,
    target: &CopyTarget<'_>,
    store: &Store,
    file: &DataFile,
    extras: CopyExtras,
) -> Result<(u64, CopyExtras)> {
    let sql = target.sql;
    let db_err = |source| Error::Database {
        table: target.table.plain(),
        file: Some(file.key.clone()),
        context: sql.to_string(),
        source,
    };
    let reader = store.reader(&file.key).await?;
    let mut rr = RecordReader::new(reader, target.format, target.columns, &file.key);
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
    let mut copy = tx.copy_in_raw(sql).await.map_err(db_err)?;
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
        return Err(db_err(e));
    }
    let n = copy.finish().await.map_err(db_err)?;
    Ok((n, extras))
}

/// Streams a spool file (PostgreSQL COPY text, written by [`copy_records`]) into `sql`.
async fn copy_spool(
    tx: &mut sqlx::PgConnection,
    table: &TableName,
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
    let mut copy = tx.copy_in_raw(sql).await.map_err(db(table, sql))?;
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        let n = spool.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        copy.send(&buf[..n]).await.map_err(db(table, sql))?;
    }
    copy.finish().await.map_err(db(table, sql))
}

/// What [`copy_records`] does besides sending records: send only some fields, watch keys
/// for repeats, spool the full shaped records to a local file. Handed back after each file.
#[derive(Debug, Default)]
struct CopyExtras {
    /// Send only these fields (positions in the manifest's columns); `None`: all.
    fields: Option<Vec<usize>>,
    /// Watches keys for repeats.
    keys: Option<KeyTracker>,
    /// Receives every full record in COPY text format.
    spool: Option<tokio::fs::File>,
}

/// Inserts one file's records into the SQLite stage with batched multi-row prepared inserts.
async fn insert_file(
    tx: &mut sqlx::SqliteConnection,
    target: &TableName,
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
                table: target.plain(),
                file: Some(file.key.clone()),
                context: format!(
                    "insert into {table} (records before line {})",
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn pg(test: &str) -> Option<sqlx::PgConnection> {
        let url = test_services::service_url(test_services::POSTGRES, test)?;
        Some(sqlx::PgConnection::connect(&url).await.unwrap())
    }

    async fn exec(c: &mut sqlx::PgConnection, sql: &str) {
        sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(c)
            .await
            .unwrap();
    }

    fn id(s: &str) -> Ident {
        Ident::new(s).unwrap()
    }

    fn tn(s: &str) -> TableName {
        TableName::parse(s).unwrap()
    }

    #[tokio::test]
    async fn key_index_detection() {
        let Some(mut c) = pg("key_index_detection").await else {
            return;
        };
        let t = test_services::unique_name("rsu_idx_");
        let u = test_services::unique_name("rsu_noidx_");
        exec(&mut c, &format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY, v TEXT); CREATE TABLE {u} (a INT, b INT, v TEXT); CREATE INDEX ON {u} (b, a)")).await;
        assert!(key_indexed(&mut c, &tn(&t), &[id("id")]).await.unwrap());
        assert!(!key_indexed(&mut c, &tn(&t), &[id("v")]).await.unwrap());
        assert!(!key_indexed(&mut c, &tn(&t), &[]).await.unwrap());
        assert!(
            key_indexed(&mut c, &tn(&u), &[id("a"), id("b")])
                .await
                .unwrap()
        );
        assert!(!key_indexed(&mut c, &tn(&u), &[id("a")]).await.unwrap());
        assert!(
            !key_indexed(&mut c, &tn("rsu_no_such_table"), &[id("a")])
                .await
                .unwrap()
        );
        exec(&mut c, &format!("DROP TABLE {t}; DROP TABLE {u}")).await;
    }

    #[tokio::test]
    async fn key_range_detection() {
        let Some(mut c) = pg("key_range_detection").await else {
            return;
        };
        let t = test_services::unique_name("rsu_rng_");
        let u = test_services::unique_name("rsu_hash_");
        exec(&mut c, &format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY, v TEXT); CREATE TABLE {u} (id BIGINT, v TEXT); CREATE INDEX ON {u} USING hash (id)")).await;
        assert!(key_range(&mut c, &tn(&t), &[id("id")]).await.unwrap());
        assert!(!key_range(&mut c, &tn(&t), &[id("v")]).await.unwrap());
        assert!(
            !key_range(&mut c, &tn(&t), &[id("id"), id("v")])
                .await
                .unwrap()
        );
        assert!(!key_range(&mut c, &tn(&u), &[id("id")]).await.unwrap());
        exec(&mut c, &format!("DROP TABLE {t}; DROP TABLE {u}")).await;
    }
}
