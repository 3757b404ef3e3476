//! Bench for `redshift-upsert` against a real PostgreSQL (TEST_POSTGRES_URL, and `psql` on PATH).
//!
//! 1. `psql \copy` of N CSV rows into an empty table (the baseline);
//! 2. the library's COPY path alone (object store -> shaping -> COPY FROM STDIN), same file;
//! 3. a full blueshift load (merge) of the same file into an empty table;
//! 4. a merge of the N rows into a table of M rows with 10% overlapping keys (the batch's
//!    keys continue the table's: the overlap is at the top of its key range), and the same
//!    with the overlapping keys spread over the whole table.
//!
//! Each is the median of 3 runs (all runs are printed too).
//!
//! `RSU_BENCH_ROWS` (default 1 000 000) and `RSU_BENCH_BASE_ROWS` (default 10 000 000) scale it.
//! Run: `TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo run --release -p benches --bin redshift_upsert_load`

use std::io::Write;
use std::time::{Duration, Instant};

use redshift_upsert::sqlx::{self, Connection, PgConnection};
use redshift_upsert::{
    DataFile, LoadOptions, Loader, Manifest, ManifestFormat, Store, TableName, WarehouseUrl,
    copy_file,
};

fn env_n(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

async fn exec(c: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(c)
        .await
        .unwrap();
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[tokio::main]
async fn main() {
    // RUST_LOG=redshift_upsert=debug shows the time of every plan step.
    lifecycle::logging::init(lifecycle::logging::LogFormat::Text);
    let url = std::env::var("TEST_POSTGRES_URL").expect("set TEST_POSTGRES_URL");
    let rows = env_n("RSU_BENCH_ROWS", 1_000_000);
    let base = env_n("RSU_BENCH_BASE_ROWS", 10_000_000);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("in");
    std::fs::create_dir_all(&data_dir).unwrap();
    // Batch keys: 10% overlap the base table's last keys.
    let first = base.saturating_sub(rows / 10) + 1;
    let csv = data_dir.join("part-0000.csv");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
        for id in first..first + rows {
            writeln!(w, "{id},\"value {id}, quoted\",{}", id % 1000).unwrap();
        }
    }
    // The same number of rows, 10% of them matching keys spread over the whole base table
    // (so the key range covers the table), the rest new keys above it.
    let spread_dir = dir.path().join("spread");
    std::fs::create_dir_all(&spread_dir).unwrap();
    {
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(spread_dir.join("part-0000.csv")).unwrap(),
        );
        let step = (base / (rows / 10).max(1)).max(1);
        for i in 0..rows {
            let id = if i % 10 == 0 {
                (i / 10) * step + 1
            } else {
                base + i
            };
            writeln!(w, "{id},\"value {id}, quoted\",{}", id % 1000).unwrap();
        }
    }
    let size = std::fs::metadata(&csv).unwrap().len();
    let manifest = r#"{:table "rsu_bench_target" :pk-columns ["id"] :columns ["id" "v" "n"] :options ["CSV"] :data-pattern ".*\\.csv"}"#;
    std::fs::write(data_dir.join("manifest.edn"), manifest).unwrap();
    std::fs::write(spread_dir.join("manifest.edn"), manifest).unwrap();
    println!(
        "{rows} rows, {:.1} MiB CSV; base table {base} rows",
        size as f64 / 1048576.0
    );

    let mut c = PgConnection::connect(&url).await.unwrap();
    let ddl = |t: &str| {
        format!(
            "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (id BIGINT PRIMARY KEY, v TEXT, n BIGINT)"
        )
    };

    // 1. psql \copy (median of 3)
    let mut psql_runs = Vec::new();
    for _ in 0..3 {
        exec(&mut c, &ddl("rsu_bench_psql")).await;
        let t = Instant::now();
        let st = std::process::Command::new("psql")
            .args([
                url.as_str(),
                "-q",
                "-c",
                &format!(
                    "\\copy rsu_bench_psql FROM '{}' WITH (FORMAT csv)",
                    csv.display()
                ),
            ])
            .status()
            .unwrap();
        assert!(st.success());
        psql_runs.push(t.elapsed());
    }
    psql_runs.sort();
    let psql = psql_runs[1];

    // 2. library COPY path alone (median of 3)
    let local = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    let store = Store::new(
        std::sync::Arc::new(local),
        "",
        None,
        dir.path().display().to_string(),
    );
    // The COPY path alone: the manifest names the table and how the file is read.
    let copy_manifest = Manifest::parse(
        r#"{:table "rsu_bench_copy" :pk-columns ["id"] :columns ["id" "v" "n"] :options ["CSV"] :data-pattern ".*"}"#,
        ManifestFormat::Edn,
        "bench/manifest.edn",
    )
    .unwrap();
    let file = DataFile {
        key: "in/part-0000.csv".into(),
        etag: None,
        size,
    };
    let mut lib_runs = Vec::new();
    for _ in 0..3 {
        exec(&mut c, &ddl("rsu_bench_copy")).await;
        let t = Instant::now();
        let mut tx = c.begin().await.unwrap();
        let n = copy_file(&mut tx, &copy_manifest, &store, &file)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        lib_runs.push(t.elapsed());
        assert_eq!(n, rows);
    }
    lib_runs.sort();
    let lib_copy = lib_runs[1];

    // 3. full load (merge) into an empty table, and 4. merge into the base table.
    let opts = LoadOptions {
        delete_loaded: false,
        history_table: TableName::parse("rsu_bench_history").unwrap(),
        ..LoadOptions::default()
    };
    let loader = Loader::new(WarehouseUrl::parse(&url).unwrap(), opts).unwrap();
    let re = regex::Regex::new(".*").unwrap();
    exec(&mut c, "DROP TABLE IF EXISTS rsu_bench_history").await;
    loader.ensure_history().await.unwrap();
    let ready = blueshift::watcher::scan(&store, &re).await.unwrap().ready;
    let top = ready.iter().find(|d| d.directory == "in").unwrap();
    let spread = ready.iter().find(|d| d.directory == "spread").unwrap();
    // 3. (median of 3) a fresh empty table each time.
    let mut empty_runs = Vec::new();
    for _ in 0..3 {
        exec(&mut c, &ddl("rsu_bench_target")).await;
        exec(&mut c, "TRUNCATE rsu_bench_history").await;
        let t = Instant::now();
        let rep = loader.load(&store, top).await.unwrap();
        empty_runs.push(t.elapsed());
        assert_eq!(rep.rows, rows);
    }
    empty_runs.sort();
    let full_empty = empty_runs[1];

    // 4. (median of 3 each) the base table is rebuilt each time; overlapping keys at the top
    // of the table's key range, then spread over all of it.
    let mut merge_sets: Vec<Vec<Duration>> = Vec::new();
    for d in [top, spread] {
        let mut runs = Vec::new();
        for _ in 0..3 {
            exec(&mut c, "DROP TABLE IF EXISTS rsu_bench_target").await;
            let t = Instant::now();
            exec(
                &mut c,
                &format!(
                    "CREATE TABLE rsu_bench_target AS SELECT g::bigint AS id, 'base ' || g AS v, (g % 1000)::bigint AS n FROM generate_series(1, {base}) g; \
                     ALTER TABLE rsu_bench_target ADD PRIMARY KEY (id); ANALYZE rsu_bench_target; CHECKPOINT"
                ),
            )
            .await;
            println!("(base table built in {:.1} s)", secs(t.elapsed()));
            exec(&mut c, "TRUNCATE rsu_bench_history").await;
            let t = Instant::now();
            let rep = loader.load(&store, d).await.unwrap();
            runs.push(t.elapsed());
            assert_eq!(rep.rows, rows);
            let total: i64 = sqlx::query_scalar("SELECT count(*) FROM rsu_bench_target")
                .fetch_one(&mut c)
                .await
                .unwrap();
            assert_eq!(total as u64, base + rows - rows / 10);
        }
        runs.sort();
        merge_sets.push(runs);
    }
    let merge = merge_sets[0][1];
    let merge_spread = merge_sets[1][1];
    let all = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.2}", secs(*d)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "runs (s): psql {}; library COPY {}; empty-table load {}; merge {}; merge, spread keys {}",
        all(&psql_runs),
        all(&lib_runs),
        all(&empty_runs),
        all(&merge_sets[0]),
        all(&merge_sets[1])
    );

    println!("| measurement | seconds | ratio |");
    println!("|---|---|---|");
    println!(
        "| psql \\copy of {rows} rows (baseline) | {:.2} | 1.00 |",
        secs(psql)
    );
    println!(
        "| library COPY path (store -> shaping -> COPY FROM STDIN) | {:.2} | {:.2}x psql |",
        secs(lib_copy),
        secs(lib_copy) / secs(psql)
    );
    println!(
        "| full merge load into an empty table | {:.2} | {:.2}x psql |",
        secs(full_empty),
        secs(full_empty) / secs(psql)
    );
    println!(
        "| merge of {rows} rows into {base} rows, 10% overlap | {:.2} | {:.2}x psql, {:.2}x library COPY |",
        secs(merge),
        secs(merge) / secs(psql),
        secs(merge) / secs(lib_copy)
    );
    println!(
        "| merge of {rows} rows into {base} rows, 10% overlap spread over the table | {:.2} | {:.2}x psql, {:.2}x library COPY |",
        secs(merge_spread),
        secs(merge_spread) / secs(psql),
        secs(merge_spread) / secs(lib_copy)
    );
    exec(&mut c, "DROP TABLE rsu_bench_psql; DROP TABLE rsu_bench_copy; DROP TABLE rsu_bench_target; DROP TABLE rsu_bench_history").await;
}
