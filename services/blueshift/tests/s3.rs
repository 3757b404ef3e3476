//! The watcher against a real S3 API server (TEST_S3_ENDPOINT, e.g. moto), loading into the
//! real PostgreSQL.

mod common;

use common::*;
use redshift_upsert::sqlx::{self, Connection, PgConnection, Row};

#[tokio::test]
async fn watcher_loads_from_s3_and_deletes_loaded_objects() {
    let Some(endpoint) = test_services::service_url(test_services::S3_ENDPOINT, "watcher_s3")
    else {
        return;
    };
    let Some(pg) = test_services::service_url(test_services::POSTGRES, "watcher_s3") else {
        return;
    };
    let bucket = test_services::create_s3_bucket(&endpoint, "rsu-");
    let mut c = PgConnection::connect(&pg).await.unwrap();
    let t = test_services::unique_name("rsu_s3_");
    let h = test_services::unique_name("rsu_hist_");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {t} (id BIGINT, v TEXT); INSERT INTO {t} VALUES (1, 'one')"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    let store_url = format!("s3://{bucket}/incoming");
    let store = store(&store_url, Some(&endpoint));
    let m = format!(
        r#"{{:table "{t}" :pk-columns ["id"] :columns ["id" "v"] :options ["CSV" "GZIP" "IGNOREHEADER 1"] :data-pattern ".*\\.csv\\.gz"}}"#
    );
    store
        .put("incoming/2026/a/manifest.edn", m.into_bytes())
        .await
        .unwrap();
    store
        .put("incoming/2026/a/p1.csv.gz", gzip(b"id,v\n1,uno\n2,two\n"))
        .await
        .unwrap();
    store
        .put("incoming/2026/a/p2.csv.gz", gzip(b"id,v\n3,three\n"))
        .await
        .unwrap();
    // Not matching --key-pattern: left alone.
    store
        .put("incoming/other/manifest.edn", b"{:broken".to_vec())
        .await
        .unwrap();
    let mut a = args(&store_url, &pg, &h);
    a.store_options = endpoint_option(&endpoint);
    a.key_pattern = "^incoming/2026/".into();
    let mut svc = blueshift::Service::new(a).unwrap();
    let out = poll(&mut svc).await;
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(out.loaded.len(), 1);
    assert_eq!(out.loaded[0].directory, "incoming/2026/a");
    let got: Vec<(i64, String)> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, v FROM {t} ORDER BY id"
    )))
    .fetch_all(&mut c)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    assert_eq!(
        got,
        vec![(1, "uno".into()), (2, "two".into()), (3, "three".into())]
    );
    let left: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.location.to_string())
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(
        left,
        vec![
            "incoming/2026/a/manifest.edn",
            "incoming/other/manifest.edn"
        ]
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE {t}; DROP TABLE {h}"
    )))
    .execute(&mut c)
    .await
    .unwrap();
}

/// The Redshift loader path up to COPY, against PostgreSQL speaking for Redshift: the
/// connection (no `extra_float_digits`), the history table, `LOCK`, the staging table and the
/// COPY manifest upload all run for real; PostgreSQL then refuses `COPY ... FROM 's3://'`,
/// which must roll everything back and keep the files.
#[tokio::test]
async fn redshift_path_uploads_the_copy_manifest_and_rolls_back_on_copy_failure() {
    let Some(endpoint) = test_services::service_url(test_services::S3_ENDPOINT, "redshift_path")
    else {
        return;
    };
    let Some(pg) = test_services::service_url(test_services::POSTGRES, "redshift_path") else {
        return;
    };
    let bucket = test_services::create_s3_bucket(&endpoint, "rsu-rs-");
    let mut c = PgConnection::connect(&pg).await.unwrap();
    let t = test_services::unique_name("rsu_rs_");
    let h = test_services::unique_name("rsu_hist_");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {t} (id BIGINT, v TEXT); INSERT INTO {t} VALUES (1, 'one')"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    let store_url = format!("s3://{bucket}");
    let store = store(&store_url, Some(&endpoint));
    let m = format!(
        r#"{{:table "{t}" :pk-columns ["id"] :columns ["id" "v"] :options ["DELIMITER '\\t'" "BZIP2"] :data-pattern ".*\\.tsv\\.bz2"}}"#
    );
    store.put("d/manifest.edn", m.into_bytes()).await.unwrap();
    store
        .put("d/a.tsv.bz2", b"not really bzip2".to_vec())
        .await
        .unwrap();
    let redshift_url =
        pg.replacen("postgres://", "redshift://", 1)
            .replacen("postgresql://", "redshift://", 1);
    let mut a = args(&store_url, &redshift_url, &h);
    a.store_options = endpoint_option(&endpoint);
    a.iam_role = Some("arn:aws:iam::123456789012:role/blueshift".into());
    let mut svc = blueshift::Service::new(a.clone()).unwrap();
    // Dry run: the Redshift plan, with BZIP2 passed through to COPY.
    let (text, failed) = svc.dry_run().await.unwrap();
    assert_eq!(failed, 0, "{text}");
    assert!(text.contains(&format!("FROM 's3://{bucket}/d/blueshift-copy-manifest.json' IAM_ROLE 'arn:aws:iam::123456789012:role/blueshift' MANIFEST DELIMITER '\\t' BZIP2")), "{text}");
    let out = poll(&mut svc).await;
    assert_eq!(out.failed.len(), 1);
    let e = out.failed[0].1.to_string();
    assert!(e.contains("COPY"), "{e}");
    let body = store
        .read_small("d/blueshift-copy-manifest.json", 1 << 20)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"entries": [{"url": format!("s3://{bucket}/d/a.tsv.bz2"), "mandatory": true}]})
    );
    let mut left: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.location.to_string())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![
            "d/a.tsv.bz2",
            "d/blueshift-copy-manifest.json",
            "d/manifest.edn"
        ]
    );
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {t}")))
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 1);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE {t}; DROP TABLE {h}"
    )))
    .execute(&mut c)
    .await
    .unwrap();
}
