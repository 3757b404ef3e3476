//! The planner: a manifest and a file list in, SQL statements out. Pure: no I/O.
//!
//! Every plan runs in one transaction (the loader adds `BEGIN`/`COMMIT`): stage the batch in
//! a temporary table, optionally keep only the latest row per key, lock the table, apply the
//! strategy (merge, append, replace), drop the stage.

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

/// A plan: steps to run in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The dialect.
    pub dialect: Dialect,
    /// The target table.
    pub table: TableName,
    /// The steps.
    pub steps: Vec<Step>,
    /// Redshift: the COPY manifest to upload first.
    pub copy_manifest: Option<CopyManifest>,
    /// PostgreSQL/SQLite: how the loader reads the files.
    pub read_format: Option<ReadFormat>,
    /// Options ignored because they mean nothing for this dialect (to log).
    pub notes: Vec<String>,
}

impl Plan {
    /// The statements as text (COPY/insert steps as they would be run, with a comment naming
    /// the file).
    pub fn statements(&self) -> Vec<String> {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Execute(sql) => sql.clone(),
                Step::CopyFromStdin { sql, file, .. } => {
                    format!("{sql} /* <- {} */", file.key.replace("*/", "*_/"))
                }
                Step::CopyFromSpool { sql } => {
                    format!("{sql} /* <- every file, spooled while staging the keys */")
                }
                Step::InsertRows {
                    table,
                    columns,
                    file,
                } => format!(
                    "INSERT INTO {table} ({}) VALUES (...) /* batched <- {} */",
                    join(columns.iter()),
                    file.key
                ),
            })
            .collect()
    }
}

impl fmt::Display for Plan {
    /// `BEGIN`, the statements, `COMMIT`, one per line, plus the COPY manifest and notes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(m) = &self.copy_manifest {
            writeln!(f, "-- COPY manifest {}: {}", m.url, m.body)?;
        }
        for n in &self.notes {
            writeln!(f, "-- note: {n}")?;
        }
        writeln!(f, "BEGIN;")?;
        for s in self.statements() {
            writeln!(f, "{s};")?;
        }
        writeln!(f, "COMMIT;")
    }
}

/// The staging table's name.
pub const STAGE: &str = "\"blueshift_stage\"";
/// The deduplicated stage's name.
pub const LATEST: &str = "\"blueshift_latest\"";
/// The materialised staging-select (MERGE plans).
pub const SELECTED: &str = "\"blueshift_selected\"";
const SEQ: &str = "\"blueshift_seq\"";

fn join<'a, I: Iterator<Item = &'a Ident>>(it: I) -> String {
    it.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// A stable 63-bit key for `pg_advisory_xact_lock` on a table (FNV-1a of `blueshift:<table>`).
pub fn advisory_lock_key(table: &TableName) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("blueshift:{}", table.plain()).bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 1) as i64
}

/// Makes the plan for loading `files` (all data files of one directory) as `manifest` says.
///
/// `redshift` is required for the Redshift dialects. Errors: no files; Redshift without a
/// target; options that PostgreSQL/SQLite cannot honour.
pub fn plan(
    manifest: &Manifest,
    files: &[DataFile],
    dialect: Dialect,
    redshift: Option<&RedshiftTarget>,
) -> Result<Plan> {
    plan_with(manifest, files, dialect, redshift, &TargetFacts::default())
}

/// Facts about the target table that the loader looked up and that change the plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetFacts {
    /// PostgreSQL: an index leads with exactly the key columns. The key match then probes
    /// that index (nested loop) instead of hashing the whole table, so a merge costs in
    /// proportion to the batch, not to the table.
    pub key_indexed: bool,
    /// PostgreSQL: the loader saw every key of the batch once (while staging it), so the
    /// "latest row per key" step is skipped.
    pub batch_keys_unique: bool,
    /// PostgreSQL: the key is one column that leads a plain btree index (default operator
    /// class and collation), so the table's least and greatest keys cost one index probe
    /// each. Merges then probe the table only for batch keys within that range: keys
    /// outside it cannot match (batches of new, increasing keys skip most probes).
    pub key_range: bool,
}

/// The key-only staging table of [`plan_keys_first`].
pub const KEYS: &str = "\"blueshift_keys\"";

/// PostgreSQL merges can load the rows straight into the table: stage only the keys first
/// (phase 1, the loader spools the shaped rows to a local file meanwhile), delete the rows
/// they match, then COPY the spool into the table (phase 2). That is valid only when no key
/// repeats within the batch, which the loader learns while running phase 1. Returns `None` when the manifest needs a full stage anyway (other
/// strategies, a staging-select, other dialects).
///
/// The returned phase 2 is the direct load; when keys repeat, the loader runs
/// [`plan_with`]'s steps after its first two (lock and settings) instead, then drops the
/// key stage.
pub fn plan_keys_first(
    manifest: &Manifest,
    files: &[DataFile],
    dialect: Dialect,
    facts: &TargetFacts,
) -> Result<Option<(Vec<Step>, Vec<Step>)>> {
    if dialect != Dialect::Postgres
        || manifest.strategy != Strategy::Merge
        || manifest.staging_select != StagingSelect::All
        || manifest.pk_columns.is_empty()
    {
        return Ok(None);
    }
    let full = plan_with(manifest, files, dialect, None, facts)?;
    let table = &manifest.table;
    let cols = join(manifest.columns.iter());
    let pk = &manifest.pk_columns;
    let pks = join(pk.iter());
    let key_idx: Vec<usize> = pk
        .iter()
        .filter_map(|k| manifest.columns.iter().position(|c| c == k))
        .collect();
    let ex = |s: String| Step::Execute(s);
    // Phase 1: the same lock and settings as the full plan, then the keys.
    let mut one: Vec<Step> = full.steps.iter().take(2).cloned().collect();
    one.push(ex(format!(
        "CREATE TEMP TABLE {KEYS} AS SELECT {pks} FROM {table} WITH NO DATA"
    )));
    for f in files {
        one.push(Step::CopyFromStdin {
            sql: format!("COPY {KEYS} ({pks}) FROM STDIN"),
            file: f.clone(),
            fields: Some(key_idx.clone()),
        });
    }
    // Phase 2: delete what the keys match, load the files into the table.
    let tname = &table.name;
    let pk_match = pk
        .iter()
        .map(|c| format!("{tname}.{c} = {KEYS}.{c}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let mut two = vec![ex(format!(
        "LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"
    ))];
    let mut pk_match = pk_match;
    if let ([k], true) = (pk.as_slice(), facts.key_range) {
        pk_match.push_str(&format!(
            " AND {KEYS}.{k} >= (SELECT {k} FROM {table} WHERE {k} IS NOT NULL ORDER BY {k} LIMIT 1) \
             AND {KEYS}.{k} <= (SELECT {k} FROM {table} WHERE {k} IS NOT NULL ORDER BY {k} DESC LIMIT 1)"
        ));
    }
    let knobs = ["enable_hashjoin", "enable_mergejoin"];
    if facts.key_indexed {
        two.extend(knobs.iter().map(|k| ex(format!("SET LOCAL {k} TO off"))));
    }
    two.push(ex(format!(
        "DELETE FROM {table} USING {KEYS} WHERE {pk_match}"
    )));
    if facts.key_indexed {
        two.extend(
            knobs
                .iter()
                .map(|k| ex(format!("SET LOCAL {k} TO DEFAULT"))),
        );
    }
    two.push(Step::CopyFromSpool {
        sql: format!("COPY {table} ({cols}) FROM STDIN"),
    });
    two.push(ex(format!("DROP TABLE {KEYS}")));
    Ok(Some((one, two)))
}

/// The savepoint the loader sets before [`plan_empty_target`]'s COPY, to fall back to.
pub const DIRECT_SAVEPOINT: &str = "\"blueshift_direct\"";

/// PostgreSQL merges into an empty table can COPY the files straight into it: with nothing
/// in the table there is nothing to delete, and when no key repeats within the batch the
/// "latest row per key" step keeps every row (keys are compared as text, as
/// [`plan_keys_first`]'s loader does). Returns the steps to run
/// once the loader holds the table lock and saw the table empty: the lock, a savepoint, one
/// COPY per file. The loader watches the keys while copying; when a key repeats (or the
/// table's unique index refuses a row) it rolls back to [`DIRECT_SAVEPOINT`] and runs the
/// full plan instead. `None` for other strategies and dialects, a staging-select, or no key
/// columns.
pub fn plan_empty_target(
    manifest: &Manifest,
    files: &[DataFile],
    dialect: Dialect,
) -> Result<Option<Vec<Step>>> {
    if dialect != Dialect::Postgres
        || manifest.strategy != Strategy::Merge
        || manifest.staging_select != StagingSelect::All
        || manifest.pk_columns.is_empty()
    {
        return Ok(None);
    }
    // Checks the options and the file list as the full plan does.
    plan_with(manifest, files, dialect, None, &TargetFacts::default())?;
    let table = &manifest.table;
    let cols = join(manifest.columns.iter());
    let mut steps = vec![
        Step::Execute(format!("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")),
        Step::Execute(format!("SAVEPOINT {DIRECT_SAVEPOINT}")),
    ];
    for f in files {
        steps.push(Step::CopyFromStdin {
            sql: format!("COPY {table} ({cols}) FROM STDIN"),
            file: f.clone(),
            fields: None,
        });
    }
    Ok(Some(steps))
}

/// [`plan`], given facts about the target table.
pub fn plan_with(
    manifest: &Manifest,
    files: &[DataFile],
    dialect: Dialect,
    redshift: Option<&RedshiftTarget>,
    facts: &TargetFacts,
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
    let mut steps = Vec::new();
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
            steps.push(ex(format!(
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
            steps.push(ex(copy));
            copy_manifest = Some(CopyManifest {
                key: rs.copy_manifest_key.clone(),
                url,
                body,
            });
        }
        Dialect::Postgres | Dialect::Sqlite => {
            let (rf, n) =
                ReadFormat::from_options(&manifest.options, manifest.data_format).map_err(perr)?;
            read_format = Some(rf);
            notes = n;
            if dialect == Dialect::Postgres {
                steps.push(ex(format!(
                    "SELECT pg_advisory_xact_lock({})",
                    advisory_lock_key(table)
                )));
                // Bulk statements: JIT compilation costs more than it saves here.
                steps.push(ex("SET LOCAL jit = off".to_string()));
                steps.push(ex(format!(
                    "CREATE TEMP TABLE {STAGE} AS SELECT {cols} FROM {table} WITH NO DATA"
                )));
                steps.push(ex(format!(
                    "ALTER TABLE {STAGE} ADD COLUMN {SEQ} BIGINT GENERATED ALWAYS AS IDENTITY"
                )));
                for f in files {
                    steps.push(Step::CopyFromStdin {
                        sql: format!("COPY {STAGE} ({cols}) FROM STDIN"),
                        file: f.clone(),
                        fields: None,
                    });
                }
            } else {
                steps.push(ex(format!(
                    "CREATE TEMP TABLE {STAGE} AS SELECT {cols} FROM {table} WHERE 0"
                )));
                for f in files {
                    steps.push(Step::InsertRows {
                        table: STAGE.into(),
                        columns: manifest.columns.clone(),
                        file: f.clone(),
                    });
                }
            }
        }
    }

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
    let keys_unique = dialect == Dialect::Postgres && facts.batch_keys_unique;
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
            for knob in ["enable_hashjoin", "enable_mergejoin"] {
                let v = if on { "off" } else { "DEFAULT" };
                steps.push(Step::Execute(format!("SET LOCAL {knob} TO {v}")));
            }
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
            steps.push(ex(format!(
                "DELETE FROM {table} WHERE EXISTS (SELECT 1 FROM {src} WHERE {})",
                pk_match(src)
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
    Ok(Plan {
        dialect,
        table: table.clone(),
        steps,
        copy_manifest,
        read_format,
        notes,
    })
}
