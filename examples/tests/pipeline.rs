//! The whole pipeline (syslog -> Kafka -> object storage -> warehouse) run by its binary: at
//! a small size on embedded defaults; with the S3 API server as the store and PostgreSQL as
//! the warehouse; and with its bifrost stage killed mid-run and restarted.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use redshift_upsert::sqlx::{self, Connection, Row};

fn pipeline(args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PIPELINE_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn")
        .args(["--timeout", "150s"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The last line, which must say the four counts agree at `n`.
fn assert_agrees(o: &Output, n: u64) {
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        out.lines().last(),
        Some(format!("sent={n} kafka={n} archived={n} loaded={n}").as_str()),
        "{out}"
    );
}

async fn sqlite(path: &Path) -> sqlx::SqliteConnection {
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_run_agrees_and_the_rows_are_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap().to_string();
    let o = tokio::task::spawn_blocking(move || pipeline(&["--messages", "3000", "--out", &out]))
        .await
        .unwrap();
    assert_agrees(&o, 3000);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("messages per host and severity"), "{text}");

    let mut c = sqlite(&dir.path().join("warehouse.db")).await;
    let (rows, keys): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT topic || '/' || kafka_partition || '/' || kafka_offset) FROM syslog_events",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!((rows, keys), (3000, 3000));
    // Every message the client sent is there once, parsed: RFC 5424 (even sequence
    // numbers) and RFC 3164 (odd) alike.
    for (conn, seq) in [(0u64, 0u64), (1, 1), (4, 2)] {
        let needle = format!("request {conn}-{seq} served in%");
        let row = sqlx::query(
            "SELECT host, app, severity, facility, ts, message FROM syslog_events WHERE message LIKE ?",
        )
        .bind(&needle)
        .fetch_one(&mut c)
        .await
        .unwrap_or_else(|e| panic!("{needle}: {e}"));
        let host: String = row.get(0);
        let app: String = row.get(1);
        let ts: String = row.get(4);
        assert!(
            ["web-1", "web-2", "db-1", "cache-1"].contains(&host.as_str()),
            "{host}"
        );
        assert!(
            ["nginx", "postgres", "api"].contains(&app.as_str()),
            "{app}"
        );
        assert!(ts.starts_with("2026-11-30T12:00:0"), "{ts}");
        assert!(
            row.get::<Option<String>, _>(2).is_some() && row.get::<Option<String>, _>(3).is_some()
        );
    }
    // The archive is in the standard layout.
    let part0 = dir.path().join("store/archive/pipeline/syslog");
    assert!(
        std::fs::read_dir(&part0).unwrap().count() >= 1,
        "{}",
        part0.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_as_the_store_and_postgresql_as_the_warehouse() {
    let Some(endpoint) = test_services::service_url(test_services::S3_ENDPOINT, "pipeline_s3_pg")
    else {
        return;
    };
    let Some(pg) = test_services::service_url(test_services::POSTGRES, "pipeline_s3_pg") else {
        return;
    };
    let bucket = test_services::create_s3_bucket(&endpoint, "pipeline-");
    let schema = test_services::postgres::ScratchSchema::create(&pg, "pipeline_").await;
    let (store, option, wh) = (
        format!("s3://{bucket}/runs"),
        format!("aws_endpoint={endpoint}"),
        schema.url.clone(),
    );
    let o = tokio::task::spawn_blocking(move || {
        pipeline(&[
            "--messages",
            "2000",
            "--store",
            &store,
            "--store-option",
            &option,
            "--warehouse",
            &wh,
        ])
    })
    .await
    .unwrap();
    assert_agrees(&o, 2000);
    let mut c = sqlx::PgConnection::connect(&schema.url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM syslog_events")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 2000);
    c.close().await.unwrap();
    // The archive objects are in the bucket, in the standard layout, and verify cleanly.
    let report = bifrost::verify(&bifrost::VerifyArgs {
        store: format!("s3://{bucket}/runs"),
        store_options: lifecycle::store::StoreOptions {
            store_options: vec![("aws_endpoint".into(), endpoint.clone())],
        },
        prefix: "archive".into(),
        deep: true,
    })
    .await
    .unwrap();
    assert!(report.ok(), "{}", report.text());
    assert_eq!(
        report.partitions.iter().map(|p| p.records).sum::<u64>(),
        2000
    );
    assert!(
        report.partitions[0]
            .dir
            .starts_with("runs/archive/pipeline/syslog/partition=")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bifrost_killed_mid_run_and_restarted_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap().to_string();
    let o = tokio::task::spawn_blocking(move || {
        pipeline(&[
            "--messages",
            "8000",
            "--restart-bifrost-after",
            "1",
            "--out",
            &out,
        ])
    })
    .await
    .unwrap();
    assert_agrees(&o, 8000);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bifrost stage aborted"), "{err}");
    let mut c = sqlite(&dir.path().join("warehouse.db")).await;
    let (rows, keys): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT topic || '/' || kafka_partition || '/' || kafka_offset) FROM syslog_events",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!((rows, keys), (8000, 8000));
}
