//! The service loading into SQLite (no external service needed): scanning, deleting loaded
//! files, a failed directory keeping its files, manifests in every format, the dry run.

mod common;

use common::*;
use redshift_upsert::sqlx::{self, Connection, Row, SqliteConnection};

async fn db(path: &std::path::Path, ddl: &str) -> SqliteConnection {
    let mut c = SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl.to_string()))
        .execute(&mut c)
        .await
        .unwrap();
    c
}

async fn rows(c: &mut SqliteConnection) -> Vec<(i64, Option<String>)> {
    sqlx::query("SELECT id, v FROM t ORDER BY id")
        .fetch_all(c)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i64, _>(0), r.get::<Option<String>, _>(1)))
        .collect()
}

fn s(x: &str) -> Option<String> {
    Some(x.to_string())
}

const README_MANIFEST: &str = r#"{:table "t" :pk-columns ["id"] :columns ["id" "v"]
 :options ["DELIMITER '\\t'" "IGNOREHEADER 1" "ESCAPE" "TRIMBLANKS"] :data-pattern ".*tsv$"}"#;

#[tokio::test]
async fn sqlite_merge_dedupes_and_deletes_files() {
    let dir = tempfile::tempdir().unwrap();
    let dbp = dir.path().join("wh.db");
    let mut c = db(
        &dbp,
        "CREATE TABLE t (id INTEGER, v TEXT); INSERT INTO t VALUES (1, 'one'), (2, 'two');",
    )
    .await;
    let data = dir.path().join("store");
    write(&data, "in/manifest.edn", README_MANIFEST.as_bytes());
    let mut big = b"id\tv\n".to_vec();
    for i in 10..1010 {
        big.extend_from_slice(format!("{i}\tv{i}\n").as_bytes());
    }
    write(
        &data,
        "in/a.tsv",
        b"id\tv\n2\tTWO \n3\tthree\n3\tTHREE\n4\t\\N\n",
    );
    write(&data, "in/b.tsv", &big);
    write(&data, "in/ignored.csv", b"x");
    let mut svc = service(
        &format!("file://{}", data.display()),
        &format!("sqlite://{}", dbp.display()),
        "blueshift_load_history",
    );
    let out = poll(&mut svc).await;
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(out.loaded[0].rows, 1004);
    let r = rows(&mut c).await;
    assert_eq!(r.len(), 4 + 1000);
    assert_eq!(
        r[..4],
        [(1, s("one")), (2, s("TWO")), (3, s("THREE")), (4, None)]
    );
    // The loaded files are deleted; the manifest and what its pattern leaves out stay.
    assert_eq!(files_in(&data, "in"), vec!["ignored.csv", "manifest.edn"]);
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM blueshift_load_history WHERE status = 'loaded'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(n, 2);
    // Nothing is ready any more.
    let out = poll(&mut svc).await;
    assert!(out.loaded.is_empty() && out.failed.is_empty(), "{out:?}");
}

#[tokio::test]
async fn sqlite_malformed_row_rolls_back_then_append_and_replace() {
    let dir = tempfile::tempdir().unwrap();
    let dbp = dir.path().join("wh.db");
    let mut c = db(
        &dbp,
        "CREATE TABLE t (id INTEGER, v TEXT); INSERT INTO t VALUES (1, 'one');",
    )
    .await;
    let data = dir.path().join("store");
    write(&data, "in/manifest.edn", README_MANIFEST.as_bytes());
    write(&data, "in/a.tsv", b"id\tv\n1\tchanged\n");
    write(&data, "in/b.tsv", b"id\tv\n2\ttwo\nbroken\n");
    let wh = format!("sqlite://{}", dbp.display());
    let store = format!("file://{}", data.display());
    let mut svc = service(&store, &wh, "hist");
    let out = poll(&mut svc).await;
    assert_eq!(out.failed.len(), 1);
    assert!(
        out.failed[0].1.to_string().contains("in/b.tsv"),
        "{}",
        out.failed[0].1
    );
    assert_eq!(rows(&mut c).await, vec![(1, s("one"))]);
    assert_eq!(
        files_in(&data, "in"),
        vec!["a.tsv", "b.tsv", "manifest.edn"]
    );

    std::fs::remove_dir_all(data.join("in")).unwrap();
    write(&data, "ap/manifest.json", br#"{"table": "t", "pk-columns": ["id"], "columns": ["id", "v"], "data-pattern": ".*csv", "data-format": "csv", "strategy": "append"}"#);
    write(&data, "ap/a.csv", b"1,ignored\n5,\"five, quoted\"\n");
    let mut svc = service(&store, &wh, "hist");
    let out = poll(&mut svc).await;
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(
        rows(&mut c).await,
        vec![(1, s("one")), (5, s("five, quoted"))]
    );

    write(&data, "rp/manifest.toml", b"table = \"t\"\npk-columns = [\"id\"]\ncolumns = [\"id\", \"v\"]\ndata-pattern = \".*jsonl\"\ndata-format = \"json-lines\"\nstrategy = \"replace\"\n");
    write(&data, "rp/a.jsonl", b"{\"id\": 9, \"v\": \"nine\"}\n");
    let out = poll(&mut svc).await;
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(rows(&mut c).await, vec![(9, s("nine"))]);
}

#[tokio::test]
async fn sqlite_dry_run_prints_the_plan_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dbp = dir.path().join("wh.db");
    let mut c = db(&dbp, "CREATE TABLE t (id INTEGER, v TEXT);").await;
    let data = dir.path().join("store");
    write(&data, "in/manifest.edn", README_MANIFEST.as_bytes());
    write(&data, "in/a.tsv", b"id\tv\n1\tx\n");
    let mut a = args(
        &format!("file://{}", data.display()),
        &format!("sqlite://{}", dbp.display()),
        "hist",
    );
    a.dry_run = true;
    let mut svc = blueshift::Service::new(a).unwrap();
    let (text, failed) = svc.dry_run().await.unwrap();
    assert_eq!(failed, 0);
    assert!(text.contains("-- directory in ->"), "{text}");
    assert!(
        text.contains(r#"DELETE FROM "t" WHERE ("id") IN (SELECT"#),
        "{text}"
    );
    assert!(rows(&mut c).await.is_empty());
    assert_eq!(files_in(&data, "in"), vec!["a.tsv", "manifest.edn"]);
}
