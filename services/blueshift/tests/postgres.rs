//! Loads against the real PostgreSQL (TEST_POSTGRES_URL).

mod common;

use std::time::Duration;

use blueshift::watcher::scan;
use common::*;
use redshift_upsert::sqlx::{self, Connection, PgConnection, Row};
use redshift_upsert::{LoadOptions, Loader, TableName, WarehouseUrl};

async fn pg(test: &str) -> Option<(String, PgConnection)> {
    let url = test_services::service_url(test_services::POSTGRES, test)?;
    let c = PgConnection::connect(&url)
        .await
        .expect("connect to TEST_POSTGRES_URL");
    Some((url, c))
}

async fn exec(c: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(c)
        .await
        .unwrap();
}

async fn rows(c: &mut PgConnection, table: &str) -> Vec<(i64, Option<String>)> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, v FROM {table} ORDER BY id"
    )))
    .fetch_all(c)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get::<i64, _>(0), r.get::<Option<String>, _>(1)))
    .collect()
}

fn manifest(table: &str, extra: &str) -> String {
    format!(
        r#"{{:table "{table}" :pk-columns ["id"] :columns ["id" "v"]
 :options ["DELIMITER '\\t'" "IGNOREHEADER 1" "ESCAPE" "TRIMBLANKS"] :data-pattern ".*tsv$" {extra}}}"#
    )
}

fn s(x: &str) -> Option<String> {
    Some(x.to_string())
}

#[tokio::test]
async fn merge_replaces_matching_rows_inserts_new_and_latest_duplicate_wins() {
    let Some((url, mut c)) = pg("merge_replaces_matching_rows").await else {
        return;
    };
    let t = test_services::unique_name("rsu_merge_");
    let h = test_services::unique_name("rsu_hist_");
    exec(
        &mut c,
        &format!("CREATE TABLE {t} (id BIGINT, v TEXT, serial BIGSERIAL)"),
    )
    .await;
    exec(
        &mut c,
        &format!("INSERT INTO {t} (id, v) VALUES (1, 'one'), (2, 'two')"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "in/batch1/manifest.edn",
        manifest(&t, "").as_bytes(),
    );
    write(
        dir.path(),
        "in/batch1/a.tsv",
        b"id\tv\n2\tTWO  \n3\tthree\n",
    );
    write(
        dir.path(),
        "in/batch1/b.tsv",
        b"id\tv\n3\tTHREE\n4\t\\N\n5\ttab\\\there\n",
    );
    write(dir.path(), "in/batch1/ignored.csv", b"x");
    let store = format!("file://{}", dir.path().display());
    let mut svc = service(&store, &url, &h);
    let out = poll(&mut svc).await;
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(out.loaded.len(), 1);
    assert_eq!(out.loaded[0].files_loaded, 2);
    assert_eq!(out.loaded[0].rows, 5);
    assert_eq!(
        rows(&mut c, &t).await,
        vec![
            (1, s("one")),
            (2, s("TWO")),
            (3, s("THREE")),
            (4, None),
            (5, s("tab\there"))
        ]
    );
    // Loaded files are deleted, the manifest and non-matching files stay.
    assert_eq!(
        files_in(dir.path(), "in/batch1"),
        vec!["ignored.csv", "manifest.edn"]
    );
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {h} WHERE status = 'loaded'"
    )))
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(n, 2);
    // Nothing ready now.
    assert!(poll(&mut svc).await.loaded.is_empty());
    exec(&mut c, &format!("DROP TABLE {t}; DROP TABLE {h}")).await;
}

#[tokio::test]
async fn dedupe_order_column_append_and_replace() {
    let Some((url, mut c)) = pg("dedupe_append_replace").await else {
        return;
    };
    let t = test_services::unique_name("rsu_strat_");
    let h = test_services::unique_name("rsu_hist_");
    exec(
        &mut c,
        &format!("CREATE TABLE {t} (id BIGINT, v TEXT, ts BIGINT)"),
    )
    .await;
    exec(&mut c, &format!("INSERT INTO {t} VALUES (1, 'old', 0)")).await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let csv_manifest = |extra: &str| {
        format!(
            r#"{{:table "{t}" :pk-columns ["id"] :columns ["id" "v" "ts"] :options ["CSV" "GZIP"] :data-pattern ".*\\.csv\\.gz" {extra}}}"#
        )
    };
    // Merge with an order column: the greatest ts wins, whatever the file order.
    write(
        dir.path(),
        "d1/manifest.edn",
        csv_manifest(":dedupe-order-column \"ts\"").as_bytes(),
    );
    write(
        dir.path(),
        "d1/a.csv.gz",
        &gzip(b"2,late,9\n2,early,1\n1,\"new, quoted\",5\n"),
    );
    let mut svc = service(&store, &url, &h);
    let out = poll(&mut svc).await;
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(
        rows(&mut c, &t).await,
        vec![(1, s("new, quoted")), (2, s("late"))]
    );

    // Append: only absent keys are inserted.
    std::fs::remove_dir_all(dir.path().join("d1")).unwrap();
    write(dir.path(), "d2/manifest.toml", format!(
        "table = \"{t}\"\npk-columns = [\"id\"]\ncolumns = [\"id\", \"v\", \"ts\"]\noptions = [\"JSON 'auto'\", \"ZSTD\"]\ndata-pattern = \".*\\\\.json\\\\.zst\"\nstrategy = \"append\"\n"
    ).as_bytes());
    write(dir.path(), "d2/a.json.zst", &zstd(b"{\"id\": 2, \"v\": \"ignored\", \"ts\": 1}\n{\"id\": 3, \"v\": \"three\", \"ts\": 1}\n"));
    let out = poll(&mut svc).await;
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(
        rows(&mut c, &t).await,
        vec![(1, s("new, quoted")), (2, s("late")), (3, s("three"))]
    );

    // Replace: the table becomes the batch, in the same transaction.
    write(dir.path(), "d3/manifest.json", format!(
        r#"{{"table": "{t}", "pk-columns": ["id"], "columns": ["id", "v", "ts"], "options": ["DELIMITER '|'"], "data-pattern": ".*\\.txt", "strategy": "replace"}}"#
    ).as_bytes());
    write(dir.path(), "d3/a.txt", b"7|seven|0\n");
    let out = poll(&mut svc).await;
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(rows(&mut c, &t).await, vec![(7, s("seven"))]);
    exec(&mut c, &format!("DROP TABLE {t}; DROP TABLE {h}")).await;
}

#[tokio::test]
async fn a_malformed_row_rolls_everything_back_and_keeps_the_files() {
    let Some((url, mut c)) = pg("malformed_row_rolls_back").await else {
        return;
    };
    let t = test_services::unique_name("rsu_bad_");
    let h = test_services::unique_name("rsu_hist_");
    exec(&mut c, &format!("CREATE TABLE {t} (id BIGINT, v TEXT)")).await;
    exec(&mut c, &format!("INSERT INTO {t} VALUES (1, 'one')")).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "in/manifest.edn", manifest(&t, "").as_bytes());
    write(dir.path(), "in/a.tsv", b"id\tv\n1\tchanged\n2\ttwo\n");
    // Second file: a field count error on record 3, and a type error would fail too.
    write(dir.path(), "in/b.tsv", b"id\tv\n3\tthree\n4\n");
    let store = format!("file://{}", dir.path().display());
    let mut svc = service(&store, &url, &h);
    let out = poll(&mut svc).await;
    assert!(out.loaded.is_empty());
    assert_eq!(out.failed.len(), 1);
    let msg = out.failed[0].1.to_string();
    assert!(
        msg.contains("in/b.tsv") && msg.contains("record 3"),
        "{msg}"
    );
    assert_eq!(rows(&mut c, &t).await, vec![(1, s("one"))]);
    assert_eq!(
        files_in(dir.path(), "in"),
        vec!["a.tsv", "b.tsv", "manifest.edn"]
    );
    // A type error inside PostgreSQL rolls back the same way.
    write(dir.path(), "in/b.tsv", b"id\tv\nnot-a-number\tthree\n");
    let mut svc = service(&store, &url, &h);
    let out = poll(&mut svc).await;
    assert_eq!(out.failed.len(), 1, "{:?}", out.loaded);
    assert_eq!(rows(&mut c, &t).await, vec![(1, s("one"))]);
    let loaded: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {h} WHERE status = 'loaded'"
    )))
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(loaded, 0);
    exec(&mut c, &format!("DROP TABLE {t}; DROP TABLE {h}")).await;
}

#[tokio::test]
async fn a_kill_between_commit_and_delete_reloads_nothing() {
    let Some((url, mut c)) = pg("kill_between_commit_and_delete").await else {
        return;
    };
    let t = test_services::unique_name("rsu_kill_");
    let h = test_services::unique_name("rsu_hist_");
    exec(
        &mut c,
        &format!("CREATE TABLE {t} (id BIGINT, v TEXT, serial BIGSERIAL)"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "in/manifest.edn", manifest(&t, "").as_bytes());
    write(dir.path(), "in/a.tsv", b"id\tv\n1\tone\n2\ttwo\n");
    let store_url = format!("file://{}", dir.path().display());
    let store = store(&store_url, None);
    // First process: commits, then "dies" before deleting (delete_loaded = false).
    let opts = LoadOptions {
        delete_loaded: false,
        history_table: TableName::parse(&h).unwrap(),
        ..LoadOptions::default()
    };
    let first = Loader::new(WarehouseUrl::parse(&url).unwrap(), opts).unwrap();
    let ready = scan(&store, &regex::Regex::new(".*").unwrap())
        .await
        .unwrap()
        .ready;
    let rep = first.load(&store, &ready[0]).await.unwrap();
    assert_eq!((rep.files_loaded, rep.files_deleted, rep.rows), (1, 0, 2));
    let before: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT serial FROM {t} ORDER BY id"
    )))
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(files_in(dir.path(), "in"), vec!["a.tsv", "manifest.edn"]);
    // Restarted service: skips the loaded file (history), deletes it, loads nothing again.
    let mut svc = service(&store_url, &url, &h);
    let out = poll(&mut svc).await;
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(out.loaded[0].files_skipped, 1);
    assert_eq!(out.loaded[0].files_loaded, 0);
    assert_eq!(out.loaded[0].files_deleted, 1);
    let after: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT serial FROM {t} ORDER BY id"
    )))
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(before, after, "rows were reloaded");
    assert_eq!(files_in(dir.path(), "in"), vec!["manifest.edn"]);
    // A new file under the same key with new content is loaded.
    write(dir.path(), "in/a.tsv", b"id\tv\n1\tuno, again\n");
    let out = poll(&mut svc).await;
    assert_eq!(out.loaded[0].files_loaded, 1, "{:?}", out.failed);
    exec(&mut c, &format!("DROP TABLE {t}; DROP TABLE {h}")).await;
}

#[tokio::test]
async fn two_loaders_on_one_table_both_succeed() {
    let Some((url, mut c)) = pg("two_loaders_one_table").await else {
        return;
    };
    let t = test_services::unique_name("rsu_two_");
    let h = test_services::unique_name("rsu_hist_");
    exec(&mut c, &format!("CREATE TABLE {t} (id BIGINT, v TEXT)")).await;
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("file://{}", dir.path().display());
    let store = store(&store_url, None);
    let mut expected = Vec::new();
    for d in 0..4 {
        write(
            dir.path(),
            &format!("d{d}/manifest.edn"),
            manifest(&t, "").as_bytes(),
        );
        let mut data = b"id\tv\n".to_vec();
        for i in 0..500 {
            // Overlapping keys between directories: the merge must never duplicate them.
            let id = (d * 300 + i) as i64;
            data.extend_from_slice(format!("{id}\td{d}\n").as_bytes());
        }
        write(dir.path(), &format!("d{d}/a.tsv"), &data);
    }
    for id in 0..(3 * 300 + 500) {
        expected.push(id as i64);
    }
    let ready = scan(&store, &regex::Regex::new(".*").unwrap())
        .await
        .unwrap()
        .ready;
    assert_eq!(ready.len(), 4);
    // Separate loaders = separate pools, as two processes would have.
    let opts = || LoadOptions {
        history_table: TableName::parse(&h).unwrap(),
        ..LoadOptions::default()
    };
    let a = Loader::new(WarehouseUrl::parse(&url).unwrap(), opts()).unwrap();
    let b = Loader::new(WarehouseUrl::parse(&url).unwrap(), opts()).unwrap();
    // Both create the history table concurrently too.
    let (r0, r1, r2, r3) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(
            a.load(&store, &ready[0]),
            b.load(&store, &ready[1]),
            a.load(&store, &ready[2]),
            b.load(&store, &ready[3])
        )
    })
    .await
    .unwrap();
    for r in [r0, r1, r2, r3] {
        assert_eq!(r.unwrap().files_loaded, 1);
    }
    let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {t} ORDER BY id"
    )))
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(ids, expected);
    exec(&mut c, &format!("DROP TABLE {t}; DROP TABLE {h}")).await;
}

#[tokio::test]
async fn a_hostile_manifest_is_refused_and_touches_nothing() {
    let Some((url, mut c)) = pg("hostile_manifest").await else {
        return;
    };
    let t = test_services::unique_name("rsu_hostile_");
    let h = test_services::unique_name("rsu_hist_");
    exec(&mut c, &format!("CREATE TABLE {t} (id BIGINT, v TEXT)")).await;
    let dir = tempfile::tempdir().unwrap();
    for (d, text) in [
        (
            "q",
            format!(
                r#"{{:table "{t}\" ; DROP TABLE {t}; --" :pk-columns ["id"] :columns ["id" "v"] :data-pattern ".*tsv"}}"#
            ),
        ),
        (
            "c",
            format!(
                r#"{{:table "{t}" :pk-columns ["id"] :columns ["id" "v); DROP TABLE {t}; --"] :data-pattern ".*tsv"}}"#
            ),
        ),
        (
            "o",
            format!(
                r#"{{:table "{t}" :pk-columns ["id"] :columns ["id" "v"] :options ["DELIMITER ','; DROP TABLE {t}"] :data-pattern ".*tsv"}}"#
            ),
        ),
        (
            "r",
            format!(
                r#"{{:table "{t}" :pk-columns ["id"] :columns ["id" "v"] :options ["IAM_ROLE 'arn:aws:iam::1:role/x'"] :data-pattern ".*tsv"}}"#
            ),
        ),
    ] {
        write(dir.path(), &format!("{d}/manifest.edn"), text.as_bytes());
        write(dir.path(), &format!("{d}/a.tsv"), b"1\tx\n");
    }
    let store = format!("file://{}", dir.path().display());
    let mut svc = service(&store, &url, &h);
    let out = poll(&mut svc).await;
    assert!(out.loaded.is_empty());
    assert_eq!(out.failed.len(), 4);
    for (d, e) in &out.failed {
        let e = e.to_string();
        assert!(e.contains(&format!("{d}/manifest.edn")), "{e}");
    }
    assert!(rows(&mut c, &t).await.is_empty());
    exec(&mut c, &format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn a_serialization_failure_40001_is_retried() {
    let Some((url, mut c)) = pg("serialization_failure_retried").await else {
        return;
    };
    let t = test_services::unique_name("rsu_ser_");
    let h = test_services::unique_name("rsu_hist_");
    exec(&mut c, &format!("CREATE TABLE {t} (id BIGINT, v TEXT)")).await;
    exec(&mut c, &format!("INSERT INTO {t} VALUES (1, 'one')")).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "in/manifest.edn", manifest(&t, "").as_bytes());
    write(dir.path(), "in/a.tsv", b"id\tv\n1\tnew\n");
    let store_url = format!("file://{}", dir.path().display());
    let store = store(&store_url, None);
    let ready = scan(&store, &regex::Regex::new(".*").unwrap())
        .await
        .unwrap()
        .ready;
    // The loader's transactions are SERIALIZABLE, so a concurrent update makes it fail with 40001.
    let sep = if url.contains('?') { '&' } else { '?' };
    let ser_url = format!("{url}{sep}options=-c%20default_transaction_isolation%3Dserializable");
    let opts = LoadOptions {
        history_table: TableName::parse(&h).unwrap(),
        ..LoadOptions::default()
    };
    let loader = Loader::new(WarehouseUrl::parse(&ser_url).unwrap(), opts).unwrap();
    loader.ensure_history().await.unwrap();
    let mut other = PgConnection::connect(&url).await.unwrap();
    exec(
        &mut other,
        &format!("BEGIN; UPDATE {t} SET v = 'concurrent' WHERE id = 1"),
    )
    .await;
    let load = tokio::spawn(async move {
        let r = loader.load(&store, &ready[0]).await;
        (r, loader)
    });
    // Wait (bounded) until the loader waits for the table lock held by the other transaction.
    let mut waited = false;
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM pg_locks WHERE relation = '{t}'::regclass AND NOT granted"
        )))
        .fetch_one(&mut c)
        .await
        .unwrap();
        if n > 0 {
            waited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waited, "the loader never waited for the table lock");
    exec(&mut other, "COMMIT").await;
    let (r, _loader) = tokio::time::timeout(Duration::from_secs(60), load)
        .await
        .unwrap()
        .unwrap();
    let rep = r.unwrap();
    assert_eq!(rep.attempts, 2, "{rep:?}");
    assert_eq!(rows(&mut c, &t).await, vec![(1, s("new"))]);
    exec(&mut c, &format!("DROP TABLE {t}; DROP TABLE {h}")).await;
}

#[tokio::test]
async fn a_merge_into_a_table_with_a_key_index() {
    let Some((url, mut c)) = pg("key_index_detection").await else {
        return;
    };
    let t = test_services::unique_name("rsu_idx_");
    let u = test_services::unique_name("rsu_noidx_");
    let h = test_services::unique_name("rsu_hist_");
    exec(&mut c, &format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY, v TEXT); CREATE TABLE {u} (a INT, b INT, v TEXT); CREATE INDEX ON {u} (b, a)")).await;
    // A merge into the indexed table (the probing plan) behaves like any merge.
    exec(
        &mut c,
        &format!("INSERT INTO {t} VALUES (1, 'one'), (2, 'two')"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "in/manifest.edn", manifest(&t, "").as_bytes());
    write(
        dir.path(),
        "in/a.tsv",
        b"id\tv\n2\tTWO\n3\tthree\n3\tTHREE\n",
    );
    let mut svc = service(&format!("file://{}", dir.path().display()), &url, &h);
    let out = poll(&mut svc).await;
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(
        rows(&mut c, &t).await,
        vec![(1, s("one")), (2, s("TWO")), (3, s("THREE"))]
    );
    exec(
        &mut c,
        &format!("DROP TABLE {t}; DROP TABLE {u}; DROP TABLE {h}"),
    )
    .await;
}

#[tokio::test]
async fn a_merge_into_an_empty_table_loads_what_the_general_path_loads() {
    let Some((url, mut c)) = pg("merge_into_empty_table").await else {
        return;
    };
    let h = test_services::unique_name("rsu_hist_");
    // `e*`: empty (copied straight in); `f*`: holds an unrelated row (staged merge).
    let names: Vec<String> = ["rsu_e_pk_", "rsu_f_pk_", "rsu_e_nopk_", "rsu_f_nopk_"]
        .iter()
        .map(|p| test_services::unique_name(p))
        .collect();
    for (i, t) in names.iter().enumerate() {
        let pk = if i < 2 { "PRIMARY KEY" } else { "" };
        exec(
            &mut c,
            &format!("CREATE TABLE {t} (id BIGINT {pk}, v TEXT)"),
        )
        .await;
        if i % 2 == 1 {
            exec(&mut c, &format!("INSERT INTO {t} VALUES (100, 'kept')")).await;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let batches: [&[(&str, &[u8])]; 3] = [
        // Unique keys over two files, with NULL, escapes and blanks.
        &[
            ("a.tsv", b"id\tv\n1\tone  \n2\t\\N\n"),
            ("b.tsv", b"id\tv\n3\ttab\\\there\n4\t\n"),
        ],
        // A key repeated across files: the latest row wins.
        &[
            ("a.tsv", b"id\tv\n5\tfive\n6\tsix\n"),
            ("b.tsv", b"id\tv\n6\tSIX\n7\tseven\n"),
        ],
        // Keys equal as numbers though not as text.
        &[("a.tsv", b"id\tv\n8\teight\n08\tEIGHT\n")],
    ];
    let mut got = Vec::new();
    for (i, t) in names.iter().enumerate() {
        let mut per_batch = Vec::new();
        for (b, files) in batches.iter().enumerate() {
            // Each batch starts from the table's initial state.
            exec(&mut c, &format!("DELETE FROM {t} WHERE id <> 100")).await;
            let d = format!("t{i}b{b}");
            write(
                dir.path(),
                &format!("{d}/manifest.edn"),
                manifest(t, "").as_bytes(),
            );
            for (name, data) in files.iter() {
                write(dir.path(), &format!("{d}/{name}"), data);
            }
            let mut svc = service(&format!("file://{}", dir.path().display()), &url, &h);
            let out = poll(&mut svc).await;
            assert!(out.failed.is_empty(), "{t} batch {b}: {:?}", out.failed);
            let mut r = rows(&mut c, t).await;
            r.retain(|(id, _)| *id != 100);
            per_batch.push(r);
            std::fs::remove_dir_all(dir.path().join(&d)).unwrap();
        }
        got.push(per_batch);
    }
    let want_unique = vec![(1, s("one")), (2, None), (3, s("tab\there")), (4, s(""))];
    let want_repeat = vec![(5, s("five")), (6, s("SIX")), (7, s("seven"))];
    for (i, t) in names.iter().enumerate() {
        assert_eq!(got[i][0], want_unique, "{t}");
        assert_eq!(got[i][1], want_repeat, "{t}");
    }
    // With a primary key the latest row wins; without one, text keys decide (as before).
    assert_eq!(got[0][2], vec![(8, s("EIGHT"))]);
    assert_eq!(got[1][2], vec![(8, s("EIGHT"))]);
    assert_eq!(got[2][2], got[3][2]);
    // The untouched row of the non-empty tables is still there.
    for t in [&names[1], &names[3]] {
        assert!(rows(&mut c, t).await.contains(&(100, s("kept"))), "{t}");
    }
    for t in &names {
        exec(&mut c, &format!("DROP TABLE {t}")).await;
    }
    exec(&mut c, &format!("DROP TABLE {h}")).await;
}

#[tokio::test]
async fn a_range_filtered_merge() {
    let Some((url, mut c)) = pg("key_range_detection").await else {
        return;
    };
    let t = test_services::unique_name("rsu_rng_");
    let u = test_services::unique_name("rsu_hash_");
    let h = test_services::unique_name("rsu_hist_");
    exec(&mut c, &format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY, v TEXT); CREATE TABLE {u} (id BIGINT, v TEXT); CREATE INDEX ON {u} USING hash (id)")).await;
    // Batch keys below, inside and above the table's range: only matching keys are replaced.
    exec(
        &mut c,
        &format!("INSERT INTO {t} VALUES (10, 'ten'), (20, 'twenty'), (30, 'thirty')"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "in/manifest.edn", manifest(&t, "").as_bytes());
    write(
        dir.path(),
        "in/a.tsv",
        b"id\tv\n5\tfive\n30\tTHIRTY\n25\tquarter\n10\tTEN\n40\tforty\n",
    );
    let mut svc = service(&format!("file://{}", dir.path().display()), &url, &h);
    let out = poll(&mut svc).await;
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(
        rows(&mut c, &t).await,
        vec![
            (5, s("five")),
            (10, s("TEN")),
            (20, s("twenty")),
            (25, s("quarter")),
            (30, s("THIRTY")),
            (40, s("forty"))
        ]
    );
    exec(
        &mut c,
        &format!("DROP TABLE {t}; DROP TABLE {u}; DROP TABLE {h}"),
    )
    .await;
}
