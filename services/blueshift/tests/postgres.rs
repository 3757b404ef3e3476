//! The service against the real PostgreSQL (TEST_POSTGRES_URL): two loaders on one table,
//! hostile manifests, a retried serialization failure. What a load does (merge, append,
//! replace, dedupe, rollback, crash recovery, the fast paths) is the library's conformance
//! suite, `redshift-upsert/tests/conformance.rs`, run against PostgreSQL and SQLite.

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
