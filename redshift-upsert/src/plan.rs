//! The planner: a manifest and a file list in, a load strategy and its SQL statements out.
//! Pure: no I/O.
//!
//! Every plan runs in one transaction (the loader adds `BEGIN`/`COMMIT`). The general path is
//! the [`StagedLoad`]: stage the batch in a temporary table, optionally keep only the latest
//! row per key, lock the table, apply the strategy (merge, append, replace), drop the stage.
//! PostgreSQL merges also get fast paths ([`LoadStrategy`]), each a named set of phases with
//! a named fallback: the loader runs phases by name and never splices step lists.

use std::fmt;

use crate::error::{Error, Result};
use crate::manifest::{Ident, Manifest, StagingSelect, Strategy, TABLE_PLACEHOLDER, TableName};
use crate::options::{ReadFormat, quote_literal};

/// The SQL dialect (and loading method) of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Redshift: COPY from S3 with a COPY manifest, DELETE + INSERT.
    Redshift,
    /// Redshift with `MERGE` for the merge strategy.
    RedshiftMerge,
    /// PostgreSQL: `COPY ... FROM STDIN` fed by the loader.
    Postgres,
    /// SQLite: batched prepared inserts.
    Sqlite,
}

/// One data file of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// The object key (relative to the bucket or store root).
    pub key: String,
    /// The object's ETag, if the store reports one.
    pub etag: Option<String>,
    /// Size in bytes.
    pub size: u64,
}

/// What Redshift plans need besides the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedshiftTarget {
    /// Where data files live, e.g. `s3://bucket` (file keys are appended after a `/`).
    pub s3_base: String,
    /// The key at which the loader writes the COPY manifest.
    pub copy_manifest_key: String,
    /// The IAM role for COPY.
    pub iam_role: String,
}

/// A Redshift COPY manifest to upload before the plan runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyManifest {
    /// Its key in the store.
    pub key: String,
    /// Its `s3://` URL, as the COPY statement names it.
    pub url: String,
    /// The JSON body listing every file, each mandatory.
    pub body: String,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Execute this statement.
    Execute(String),
    /// PostgreSQL: run this `COPY ... FROM STDIN` and stream the file's rows into it.
    CopyFromStdin {
        /// The COPY statement.
        sql: String,
        /// The file to stream.
        file: DataFile,
        /// Only these fields of each record (positions in the manifest's columns), in this
        /// order; `None`: all.
        fields: Option<Vec<usize>>,
    },
    /// PostgreSQL: run this `COPY ... FROM STDIN` fed with the rows of every file, which the
    /// loader spooled (already shaped) to a local temporary file while staging the keys.
    CopyFromSpool {
        /// The COPY statement.
        sql: String,
    },
    /// SQLite: insert the file's rows into the stage with batched prepared inserts.
    InsertRows {
        /// The quoted stage table.
        table: String,
        /// The columns, in file order.
        columns: Vec<Ident>,
        /// The file to read.
        file: DataFile,
    },
}

impl fmt::Display for Step {
    /// The statement as it is run; COPY and insert steps with a comment naming the file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Execute(sql) => f.write_str(sql),
            Step::CopyFromStdin { sql, file, .. } => {
                write!(f, "{sql} /* <- {} */", file.key.replace("*/", "*_/"))
            }
            Step::CopyFromSpool { sql } => {
                write!(
                    f,
                    "{sql} /* <- every file, spooled while staging the keys */"
                )
            }
            Step::InsertRows {
                table,
                columns,
                file,
            } => write!(
                f,
                "INSERT INTO {table} ({}) VALUES (...) /* batched <- {} */",
                join(columns.iter()),
                file.key
            ),
        }
    }
}

/// Which fast paths the planner may offer for PostgreSQL loads. All are on by default;
/// turning one off changes how fast a load is, not which rows it leaves in the table — with
/// one exception: the fast paths tell repeated keys apart as text, the staged load's "latest
/// row per key" step as values. Keys equal as values but not as text (`8`, `08` in a numeric
/// column) are therefore both kept by a fast path when no unique index on the key refuses
/// the second (with one, the fast path is undone and the staged load keeps the latest row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastPaths {
    /// Offer [`LoadStrategy::DirectIntoEmpty`]: when the table is empty under its lock and no
    /// key repeats within the batch, COPY the files straight into it.
    pub direct_into_empty: bool,
    /// Offer [`LoadStrategy::KeysFirst`]: stage only the keys (spooling the rows locally),
    /// delete what they match, COPY the spool into the table.
    pub keys_first: bool,
    /// Offer [`StagedLoad::apply_keys_unique`]: when the loader saw every key of the batch once
    /// while staging, skip the "latest row per key" step.
    pub skip_unique_dedupe: bool,
}

impl FastPaths {
    /// Every fast path on (the default).
    pub const ALL: FastPaths = FastPaths {
        direct_into_empty: true,
        keys_first: true,
        skip_unique_dedupe: true,
    };
    /// Every fast path off: every load is staged, with its "latest row per key" step.
    pub const NONE: FastPaths = FastPaths {
        direct_into_empty: false,
        keys_first: false,
        skip_unique_dedupe: false,
    };
}

impl Default for FastPaths {
    fn default() -> FastPaths {
        FastPaths::ALL
    }
}

/// A savepoint a fast path sets before it writes into the table, to undo its work and fall
/// back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Savepoint {
    /// The quoted name.
    pub name: String,
}

impl Savepoint {
    /// `SAVEPOINT name`.
    pub fn set_sql(&self) -> String {
        format!("SAVEPOINT {}", self.name)
    }
    /// `RELEASE SAVEPOINT name` (the fast path succeeded).
    pub fn release_sql(&self) -> String {
        format!("RELEASE SAVEPOINT {}", self.name)
    }
    /// `ROLLBACK TO SAVEPOINT name` (the fast path is undone before its fallback runs).
    pub fn rollback_sql(&self) -> String {
        format!("ROLLBACK TO SAVEPOINT {}", self.name)
    }
}

/// The general path, and every fast path's fallback: stage every row, then apply.
///
/// The loader runs `prelude`, then `stage`, then `apply` — or `apply_keys_unique` when there
/// is one and it watched every key of the batch go by once while running `stage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedLoad {
    /// PostgreSQL: the advisory lock on the table (held by the loader already; serialises
    /// loads across processes) and session settings. Empty for other dialects.
    pub prelude: Vec<Step>,
    /// Creates the staging table and fills it: one COPY (PostgreSQL) or batched insert
    /// (SQLite) per file, or one COPY of every file through the COPY manifest (Redshift).
    pub stage: Vec<Step>,
    /// Keeps the latest row per key (when that is a statement of its own), locks the table,
    /// applies the strategy, drops the staging tables.
    pub apply: Vec<Step>,
    /// PostgreSQL tables with key columns: `apply` without the "latest row per key" step,
    /// which keeps every row when no key repeats. `None` when there is no such step to skip
    /// (no key columns, other dialects) or [`FastPaths::skip_unique_dedupe`] is off.
    pub apply_keys_unique: Option<Vec<Step>>,
}

impl StagedLoad {
    /// `prelude`, `stage` and `apply`: the statements run when keys may repeat.
    pub fn statements(&self) -> Vec<String> {
        self.prelude
            .iter()
            .chain(&self.stage)
            .chain(&self.apply)
            .map(Step::to_string)
            .collect()
    }
}

/// [`LoadStrategy::KeysFirst`]: a PostgreSQL merge that stages only the keys.
///
/// The loader runs the staged load's `prelude`, then `stage_keys` (spooling every shaped
/// record to a local temporary file and watching the keys); when no key repeated it sets
/// `savepoint` and runs `apply`. When a key repeated, or a unique index refused keys that
/// differ as text but not as values (after a rollback to `savepoint`), it runs the staged
/// load's `stage` and `apply`, then `drop_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysFirst {
    /// Creates the key stage and COPYs each file's key fields into it.
    pub stage_keys: Vec<Step>,
    /// Set before `apply`.
    pub savepoint: Savepoint,
    /// Locks the table, deletes the rows the keys match (probing the key's index and only
    /// for keys within the table's key range when the facts allow), COPYs the spool into the
    /// table, drops the key stage.
    pub apply: Vec<Step>,
    /// Drops the key stage after the fallback.
    pub drop_keys: Step,
}

/// [`LoadStrategy::DirectIntoEmpty`]: a PostgreSQL merge into a table that is empty.
///
/// The loader runs `lock`, then asks `empty_check`. Empty: it sets `savepoint` and runs
/// `copy`, watching the keys; when none repeated the load is done. When a key repeated (or a
/// unique index refused a row) it rolls back to `savepoint` and runs the whole staged load
/// without watching keys (`apply`: the latest row per key wins). Not empty: it goes on with
/// `if_not_empty` when there is one, else with the staged load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectIntoEmpty {
    /// Takes the table lock.
    pub lock: Step,
    /// A query answering (one boolean) whether the table is empty.
    pub empty_check: String,
    /// Set before `copy`.
    pub savepoint: Savepoint,
    /// One COPY per file, straight into the table.
    pub copy: Vec<Step>,
    /// What the loader does when the table holds rows; `None`: the staged load.
    pub if_not_empty: Option<KeysFirst>,
}

/// How the loader runs a plan: the general path or a fast path, each with named phases and
/// a named fallback (always ending at [`Plan::staged`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadStrategy {
    /// The staged load only ([`Plan::staged`]): Redshift, SQLite, and PostgreSQL loads that
    /// are not plain merges (append, replace, a staging-select) or have their fast paths off.
    Staged,
    /// A PostgreSQL merge that stages only the keys first.
    KeysFirst(KeysFirst),
    /// A PostgreSQL merge that COPYs straight into the table when it is empty.
    DirectIntoEmpty(DirectIntoEmpty),
}

impl LoadStrategy {
    /// The paths the loader may take, in the order it tries them (the last is always the
    /// staged load).
    pub fn paths(&self) -> Vec<&'static str> {
        match self {
            LoadStrategy::Staged => vec!["staged"],
            LoadStrategy::KeysFirst(_) => vec!["keys first", "staged"],
            LoadStrategy::DirectIntoEmpty(d) if d.if_not_empty.is_some() => {
                vec!["direct into an empty table", "keys first", "staged"]
            }
            LoadStrategy::DirectIntoEmpty(_) => vec!["direct into an empty table", "staged"],
        }
    }
}

/// A plan: a strategy and the statements of its phases, all run in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The dialect.
    pub dialect: Dialect,
    /// The target table.
    pub table: TableName,
    /// What the loader tries first; every path falls back to `staged`.
    pub strategy: LoadStrategy,
    /// The general path.
    pub staged: StagedLoad,
    /// Redshift: the COPY manifest to upload first.
    pub copy_manifest: Option<CopyManifest>,
    /// Options ignored because they mean nothing for this dialect (to log).
    pub notes: Vec<String>,
    /// PostgreSQL/SQLite: how the loader reads the files.
    pub(crate) read_format: Option<ReadFormat>,
}

impl Plan {
    /// The statements of the staged load (the general path) as text: `prelude`, `stage` and
    /// `apply`, COPY and insert steps with a comment naming the file.
    pub fn statements(&self) -> Vec<String> {
        self.staged.statements()
    }
}

fn write_steps(f: &mut fmt::Formatter<'_>, steps: &[Step]) -> fmt::Result {
    for s in steps {
        writeln!(f, "{s};")?;
    }
    Ok(())
}

fn write_keys_first(f: &mut fmt::Formatter<'_>, k: &KeysFirst, staged: &StagedLoad) -> fmt::Result {
    writeln!(f, "-- keys first: stage the keys, spooling the rows")?;
    write_steps(f, &staged.prelude)?;
    write_steps(f, &k.stage_keys)?;
    writeln!(f, "-- when no key repeats:")?;
    writeln!(f, "{};", k.savepoint.set_sql())?;
    write_steps(f, &k.apply)?;
    writeln!(f, "{};", k.savepoint.release_sql())?;
    writeln!(
        f,
        "-- when a key repeats ({} if a unique index refused one): the staged load's stage and apply, then",
        k.savepoint.rollback_sql()
    )?;
    writeln!(f, "{};", k.drop_keys)
}

impl fmt::Display for Plan {
    /// The COPY manifest and notes, then `BEGIN`, each path's statements (commented with
    /// when it is taken), `COMMIT`, one statement per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(m) = &self.copy_manifest {
            writeln!(f, "-- COPY manifest {}: {}", m.url, m.body)?;
        }
        for n in &self.notes {
            writeln!(f, "-- note: {n}")?;
        }
        writeln!(f, "-- strategy: {}", self.strategy.paths().join(", else "))?;
        writeln!(f, "BEGIN;")?;
        match &self.strategy {
            LoadStrategy::Staged => {}
            LoadStrategy::KeysFirst(k) => write_keys_first(f, k, &self.staged)?,
            LoadStrategy::DirectIntoEmpty(d) => {
                writeln!(f, "-- direct into an empty table:")?;
                writeln!(f, "{};", d.lock)?;
                writeln!(f, "{};", d.empty_check)?;
                writeln!(f, "-- when the table is empty:")?;
                writeln!(f, "{};", d.savepoint.set_sql())?;
                write_steps(f, &d.copy)?;
                writeln!(f, "{};", d.savepoint.release_sql())?;
                writeln!(
                    f,
                    "-- when a key repeats: {}, then the staged load",
                    d.savepoint.rollback_sql()
                )?;
                writeln!(f, "-- when the table holds rows:")?;
                if let Some(k) = &d.if_not_empty {
                    write_keys_first(f, k, &self.staged)?;
                }
            }
        }
        if !matches!(self.strategy, LoadStrategy::Staged) {
            writeln!(f, "-- staged:")?;
        }
        write_steps(f, &self.staged.prelude)?;
        write_steps(f, &self.staged.stage)?;
        if self.staged.apply_keys_unique.is_some() {
            writeln!(f, "-- when a key may repeat:")?;
        }
        write_steps(f, &self.staged.apply)?;
        if let Some(unique) = &self.staged.apply_keys_unique {
            writeln!(f, "-- when every key was seen once while staging:")?;
            write_steps(f, unique)?;
        }
        writeln!(f, "COMMIT;")
    }
}

/// The staging table's name.
const STAGE: &str = "\"blueshift_stage\"";
/// The deduplicated stage's name.
const LATEST: &str = "\"blueshift_latest\"";
/// The materialised staging-select (MERGE plans).
const SELECTED: &str = "\"blueshift_selected\"";
const SEQ: &str = "\"blueshift_seq\"";
/// The key-only staging table of [`KeysFirst`].
const KEYS: &str = "\"blueshift_keys\"";
/// The savepoint of the fast paths.
const DIRECT_SAVEPOINT: &str = "\"blueshift_direct\"";

fn join<'a, I: Iterator<Item = &'a Ident>>(it: I) -> String {
    it.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// A stable 63-bit key for `pg_advisory_xact_lock` on a table (FNV-1a of `blueshift:<table>`).
pub(crate) fn advisory_lock_key(table: &TableName) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("blueshift:{}", table.plain()).bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 1) as i64
}

/// Facts about the target table that the loader looked up and that change the plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetFacts {
    /// PostgreSQL: an index leads with exactly the key columns. The key match then probes
    /// that index (nested loop) instead of hashing the whole table, so a merge costs in
    /// proportion to the batch, not to the table.
    pub key_indexed: bool,
    /// PostgreSQL: the key is one column that leads a plain btree index (default operator
    /// class and collation), so the table's least and greatest keys cost one index probe
    /// each. Keys-first merges then probe the table only for batch keys within that range:
    /// keys outside it cannot match (batches of new, increasing keys skip most probes).
    pub key_range: bool,
}

/// Makes the plan for loading `files` (all data files of one directory) as `manifest` says,
/// with every fast path on and no facts about the table (what a dry run shows).
///
/// `redshift` is required for the Redshift dialects. Errors: no files; Redshift without a
/// target; options that PostgreSQL/SQLite cannot honour.
pub fn plan(
    manifest: &Manifest,
    files: &[DataFile],
    dialect: Dialect,
    redshift: Option<&RedshiftTarget>,
) -> Result<Plan> {
    plan_with(
        manifest,
        files,
        dialect,
        redshift,
        &TargetFacts::default(),
        FastPaths::default(),
    )
}

/// [`plan`], given facts about the target table and the fast paths allowed.
pub fn plan_with(
    manifest: &Manifest,
    files: &[DataFile],
    dialect: Dialect,
    redshift: Option<&RedshiftTarget>,
    facts: &TargetFacts,
    fast: FastPaths,
) -> Result<Plan> {
    let table = &manifest.table;
    let perr = |message: String| Error::Plan {
        table: table.plain(),
        message,
    };
    if files.is_empty() {
        return Err(perr("no data files to load".into()));
    }
    let cols = join(manifest.columns.iter());
    let mut prelude = Vec::new();
    let mut stage = Vec::new();
    let mut copy_manifest = None;
    let mut read_format = None;
    let mut notes = Vec::new();
    let ex = |s: String| Step::Execute(s);

    // 1. Stage.
    match dialect {
        Dialect::Redshift | Dialect::RedshiftMerge => {
            let rs = redshift
                .ok_or_else(|| perr("Redshift plans need an S3 base and an IAM role".into()))?;
            if rs.iam_role.is_empty() {
                return Err(perr("Redshift plans need an IAM role for COPY".into()));
            }
            let entries: Vec<serde_json::Value> = files
                .iter()
                .map(|f| serde_json::json!({"url": format!("{}/{}", rs.s3_base.trim_end_matches('/'), f.key), "mandatory": true}))
                .collect();
            let url = format!(
                "{}/{}",
                rs.s3_base.trim_end_matches('/'),
                rs.copy_manifest_key
            );
            let body = serde_json::json!({ "entries": entries }).to_string();
            stage.push(ex(format!(
                "CREATE TEMP TABLE {STAGE} (LIKE {table} INCLUDING DEFAULTS)"
            )));
            let mut copy = format!(
                "COPY {STAGE} ({cols}) FROM {} IAM_ROLE {} MANIFEST",
                quote_literal(&url),
                quote_literal(&rs.iam_role)
            );
            for o in &manifest.options {
                copy.push(' ');
                copy.push_str(&o.to_string());
            }
            stage.push(ex(copy));
            copy_manifest = Some(CopyManifest {
                key: rs.copy_manifest_key.clone(),
                url,
                body,
            });
        }
        Dialect::Postgres | Dialect::Sqlite => {
            let (rf, n) = ReadFormat::from_options(&manifest.options, manifest.data_format)
                .map_err(|message| Error::ManifestUnsupported {
                    manifest: manifest.file.clone(),
                    key: ":options".into(),
                    table: table.plain(),
                    message,
                })?;
            read_format = Some(rf);
            notes = n;
            if dialect == Dialect::Postgres {
                prelude.push(ex(format!(
                    "SELECT pg_advisory_xact_lock({})",
                    advisory_lock_key(table)
                )));
                // Bulk statements: JIT compilation costs more than it saves here.
                prelude.push(ex("SET LOCAL jit = off".to_string()));
                stage.push(ex(format!(
                    "CREATE TEMP TABLE {STAGE} AS SELECT {cols} FROM {table} WITH NO DATA"
                )));
                stage.push(ex(format!(
                    "ALTER TABLE {STAGE} ADD COLUMN {SEQ} BIGINT GENERATED ALWAYS AS IDENTITY"
                )));
                for f in files {
                    stage.push(Step::CopyFromStdin {
                        sql: format!("COPY {STAGE} ({cols}) FROM STDIN"),
                        file: f.clone(),
                        fields: None,
                    });
                }
            } else {
                stage.push(ex(format!(
                    "CREATE TEMP TABLE {STAGE} AS SELECT {cols} FROM {table} WHERE 0"
                )));
                for f in files {
                    stage.push(Step::InsertRows {
                        table: STAGE.into(),
                        columns: manifest.columns.clone(),
                        file: f.clone(),
                    });
                }
            }
        }
    }

    // 2.-5. Latest row per key, lock, apply, drop the stage.
    let has_keys = !manifest.pk_columns.is_empty();
    let apply = apply_steps(manifest, dialect, facts, false);
    let apply_keys_unique = (dialect == Dialect::Postgres && has_keys && fast.skip_unique_dedupe)
        .then(|| apply_steps(manifest, dialect, facts, true));
    let staged = StagedLoad {
        prelude,
        stage,
        apply,
        apply_keys_unique,
    };

    // The fast paths: plain PostgreSQL merges only.
    let plain_merge = dialect == Dialect::Postgres
        && manifest.strategy == Strategy::Merge
        && manifest.staging_select == StagingSelect::All
        && has_keys;
    let keys_first = (plain_merge && fast.keys_first).then(|| keys_first(manifest, files, facts));
    let strategy = if plain_merge && fast.direct_into_empty {
        LoadStrategy::DirectIntoEmpty(direct_into_empty(manifest, files, keys_first))
    } else if let Some(k) = keys_first {
        LoadStrategy::KeysFirst(k)
    } else {
        LoadStrategy::Staged
    };
    Ok(Plan {
        dialect,
        table: table.clone(),
        strategy,
        staged,
        copy_manifest,
        notes,
        read_format,
    })
}

/// The staged load's steps after the stage: the latest row per key (skipped when
/// `keys_unique`, PostgreSQL only), the table lock, the strategy, dropping the stage.
fn apply_steps(
    manifest: &Manifest,
    dialect: Dialect,
    facts: &TargetFacts,
    keys_unique: bool,
) -> Vec<Step> {
    let table = &manifest.table;
    let cols = join(manifest.columns.iter());
    let mut steps = Vec::new();
    let ex = |s: String| Step::Execute(s);

    // 2. Latest row per key within the batch.
    let pk = &manifest.pk_columns;
    let seq = match dialect {
        Dialect::Postgres => Some(SEQ),
        Dialect::Sqlite => Some("rowid"),
        _ => None,
    };
    let order = match (&manifest.dedupe_order_column, seq) {
        (Some(c), Some(s)) => Some(format!("{c} DESC NULLS LAST, {s} DESC")),
        (Some(c), None) => Some(format!("{c} DESC NULLS LAST")),
        (None, Some(s)) => Some(format!("{s} DESC")),
        (None, None) => None,
    };
    // `src`: the relation keys are matched against; `src_from`: what rows are read from.
    // PostgreSQL reads the latest rows through a subquery (no second temporary table) unless
    // a staging-select needs a named relation.
    let mut src = STAGE;
    let mut src_from = STAGE.to_string();
    let keys_unique = dialect == Dialect::Postgres && keys_unique;
    if let (Some(order), false, false) = (order, pk.is_empty(), keys_unique) {
        let part = join(pk.iter());
        if dialect == Dialect::Postgres {
            let latest =
                format!("SELECT DISTINCT ON ({part}) {cols} FROM {STAGE} ORDER BY {part}, {order}");
            if matches!(manifest.staging_select, StagingSelect::Sql(_)) {
                steps.push(ex(format!("CREATE TEMP TABLE {LATEST} AS {latest}")));
                src = LATEST;
                src_from = LATEST.to_string();
            } else {
                src_from = format!("({latest}) AS {LATEST}");
            }
        } else {
            steps.push(ex(format!(
                "CREATE TEMP TABLE {LATEST} AS SELECT {cols} FROM (SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {part} ORDER BY {order}) AS \"blueshift_rn\" FROM {STAGE}) AS \"blueshift_ranked\" WHERE \"blueshift_rn\" = 1"
            )));
            src = LATEST;
            src_from = LATEST.to_string();
        }
    }

    // 3. What gets inserted.
    let select = match &manifest.staging_select {
        StagingSelect::All => format!("SELECT {cols} FROM {src_from}"),
        StagingSelect::Distinct => format!("SELECT DISTINCT {cols} FROM {src_from}"),
        StagingSelect::Sql(s) => s.replace(TABLE_PLACEHOLDER, src),
    };

    // 4. Lock and apply.
    match dialect {
        Dialect::Redshift | Dialect::RedshiftMerge => steps.push(ex(format!("LOCK {table}"))),
        Dialect::Postgres => steps.push(ex(format!(
            "LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"
        ))),
        Dialect::Sqlite => {} // BEGIN IMMEDIATE holds the database's write lock.
    }
    let tname = &table.name;
    let pk_match = |other: &str| {
        pk.iter()
            .map(|c| format!("{tname}.{c} = {other}.{c}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    // PostgreSQL with an index on the key: match keys by probing it.
    let use_probe = dialect == Dialect::Postgres && facts.key_indexed;
    let probe = |steps: &mut Vec<Step>, on: bool| {
        if use_probe {
            steps.extend(probe_knobs(on));
        }
    };
    match (manifest.strategy, dialect) {
        (Strategy::Merge, Dialect::RedshiftMerge) => {
            let mut from = src.to_string();
            if !matches!(manifest.staging_select, StagingSelect::All) {
                steps.push(ex(format!("CREATE TEMP TABLE {SELECTED} AS {select}")));
                from = SELECTED.to_string();
            }
            let non_pk: Vec<&Ident> = manifest
                .columns
                .iter()
                .filter(|c| !pk.contains(c))
                .collect();
            let set_cols = if non_pk.is_empty() {
                pk.iter().collect()
            } else {
                non_pk
            };
            let set = set_cols
                .iter()
                .map(|c| format!("{c} = {from}.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            let vals = manifest
                .columns
                .iter()
                .map(|c| format!("{from}.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            steps.push(ex(format!(
                "MERGE INTO {table} USING {from} ON {} WHEN MATCHED THEN UPDATE SET {set} WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({vals})",
                pk_match(&from)
            )));
            if from == SELECTED {
                steps.push(ex(format!("DROP TABLE {SELECTED}")));
            }
        }
        (Strategy::Merge, Dialect::Sqlite) => {
            // Row-value IN: SQLite walks the batch's keys and probes the table's key index
            // (a correlated EXISTS scanned the whole table once per load, probing the batch
            // without an index: quadratic as the table grows).
            let keys = join(pk.iter());
            steps.push(ex(format!(
                "DELETE FROM {table} WHERE ({keys}) IN (SELECT {keys} FROM {src})"
            )));
            steps.push(ex(format!("INSERT INTO {table} ({cols}) {select}")));
        }
        (Strategy::Merge, _) => {
            probe(&mut steps, true);
            steps.push(ex(format!(
                "DELETE FROM {table} USING {src} WHERE {}",
                pk_match(src)
            )));
            probe(&mut steps, false);
            steps.push(ex(format!("INSERT INTO {table} ({cols}) {select}")));
        }
        (Strategy::Append, _) => {
            let new = "\"blueshift_new\"";
            probe(&mut steps, true);
            steps.push(ex(format!(
                "INSERT INTO {table} ({cols}) SELECT {cols} FROM ({select}) AS {new} WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {})",
                pk_match(new)
            )));
            probe(&mut steps, false);
        }
        (Strategy::Replace, _) => {
            steps.push(ex(format!("DELETE FROM {table}")));
            steps.push(ex(format!("INSERT INTO {table} ({cols}) {select}")));
        }
    }

    // 5. Drop the stage.
    if src == LATEST {
        steps.push(ex(format!("DROP TABLE {LATEST}")));
    }
    steps.push(ex(format!("DROP TABLE {STAGE}")));
    steps
}

/// PostgreSQL: turn hash and merge joins off (`on`) so that a key match probes the key's
/// index, or back to their defaults.
fn probe_knobs(on: bool) -> impl Iterator<Item = Step> {
    let v = if on { "off" } else { "DEFAULT" };
    ["enable_hashjoin", "enable_mergejoin"]
        .into_iter()
        .map(move |knob| Step::Execute(format!("SET LOCAL {knob} TO {v}")))
}

/// The keys-first fast path of a plain PostgreSQL merge (see [`KeysFirst`]).
fn keys_first(manifest: &Manifest, files: &[DataFile], facts: &TargetFacts) -> KeysFirst {
    let table = &manifest.table;
    let cols = join(manifest.columns.iter());
    let pk = &manifest.pk_columns;
    let pks = join(pk.iter());
    let key_idx: Vec<usize> = pk
        .iter()
        .filter_map(|k| manifest.columns.iter().position(|c| c == k))
        .collect();
    let ex = |s: String| Step::Execute(s);
    let mut stage_keys = vec![ex(format!(
        "CREATE TEMP TABLE {KEYS} AS SELECT {pks} FROM {table} WITH NO DATA"
    ))];
    for f in files {
        stage_keys.push(Step::CopyFromStdin {
            sql: format!("COPY {KEYS} ({pks}) FROM STDIN"),
            file: f.clone(),
            fields: Some(key_idx.clone()),
        });
    }
    let tname = &table.name;
    let mut pk_match = pk
        .iter()
        .map(|c| format!("{tname}.{c} = {KEYS}.{c}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    if let ([k], true) = (pk.as_slice(), facts.key_range) {
        pk_match.push_str(&format!(
            " AND {KEYS}.{k} >= (SELECT {k} FROM {table} WHERE {k} IS NOT NULL ORDER BY {k} LIMIT 1) \
             AND {KEYS}.{k} <= (SELECT {k} FROM {table} WHERE {k} IS NOT NULL ORDER BY {k} DESC LIMIT 1)"
        ));
    }
    let mut apply = vec![ex(format!(
        "LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"
    ))];
    if facts.key_indexed {
        apply.extend(probe_knobs(true));
    }
    apply.push(ex(format!(
        "DELETE FROM {table} USING {KEYS} WHERE {pk_match}"
    )));
    if facts.key_indexed {
        apply.extend(probe_knobs(false));
    }
    apply.push(Step::CopyFromSpool {
        sql: format!("COPY {table} ({cols}) FROM STDIN"),
    });
    apply.push(ex(format!("DROP TABLE {KEYS}")));
    KeysFirst {
        stage_keys,
        savepoint: Savepoint {
            name: DIRECT_SAVEPOINT.into(),
        },
        apply,
        drop_keys: ex(format!("DROP TABLE {KEYS}")),
    }
}

/// The direct-copy fast path of a plain PostgreSQL merge (see [`DirectIntoEmpty`]). With
/// nothing in the table there is nothing to delete, and when no key repeats within the batch
/// the "latest row per key" step keeps every row (keys are compared as text).
fn direct_into_empty(
    manifest: &Manifest,
    files: &[DataFile],
    if_not_empty: Option<KeysFirst>,
) -> DirectIntoEmpty {
    let table = &manifest.table;
    let cols = join(manifest.columns.iter());
    DirectIntoEmpty {
        lock: Step::Execute(format!("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")),
        empty_check: format!("SELECT NOT EXISTS (SELECT 1 FROM {table})"),
        savepoint: Savepoint {
            name: DIRECT_SAVEPOINT.into(),
        },
        copy: files
            .iter()
            .map(|f| Step::CopyFromStdin {
                sql: format!("COPY {table} ({cols}) FROM STDIN"),
                file: f.clone(),
                fields: None,
            })
            .collect(),
        if_not_empty,
    }
}
