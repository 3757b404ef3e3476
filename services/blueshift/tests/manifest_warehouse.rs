//! Whoever can write to the bucket must not steer the service: a manifest's `:jdbc-url` is
//! refused (naming the directory and the key) before anything is created or contacted,
//! unless the operator allows its server; a SQLite path never is.

mod common;

use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;

fn manifest_naming(url: &str) -> String {
    format!(
        r#"{{:table "t" :pk-columns ["id"] :columns ["id" "v"] :options ["CSV"] :data-pattern ".*csv$" :jdbc-url "{url}"}}"#
    )
}

/// Whether someone connected to `l` within `wait` (the connection is closed at once, so a
/// client fails fast instead of waiting for an answer).
fn contacted(l: &TcpListener, wait: Duration) -> bool {
    let started = Instant::now();
    loop {
        match l.accept() {
            Ok(_) => return true,
            Err(e) if e.kind() == ErrorKind::WouldBlock && started.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn manifest_named_warehouses_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let evil_db = dir.path().join("evil.db");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    write(
        &store,
        "sqlite/manifest.edn",
        manifest_naming(&format!("sqlite://{}", evil_db.display())).as_bytes(),
    );
    write(&store, "sqlite/a.csv", b"1,one\n");
    write(
        &store,
        "pg/manifest.edn",
        manifest_naming(&format!("postgres://u:secret@127.0.0.1:{port}/db")).as_bytes(),
    );
    write(&store, "pg/a.csv", b"2,two\n");
    let store_url = format!("file://{}", store.display());
    let default_wh = format!("sqlite://{}", dir.path().join("wh.db").display());

    let mut svc = service(&store_url, &default_wh, "blueshift_load_history");
    let out = poll(&mut svc).await;
    assert!(out.loaded.is_empty());
    let mut failed: Vec<(String, String)> = out
        .failed
        .iter()
        .map(|(d, e)| (d.clone(), e.to_string()))
        .collect();
    failed.sort();
    assert_eq!(failed.len(), 2, "{failed:?}");
    let (pg_dir, pg_err) = &failed[0];
    assert_eq!(pg_dir, "pg");
    assert!(
        pg_err.contains("directory pg")
            && pg_err.contains("pg/manifest.edn")
            && pg_err.contains(":jdbc-url")
            && pg_err.contains(&format!("127.0.0.1:{port} is not allowed")),
        "{pg_err}"
    );
    assert!(
        !pg_err.contains("secret"),
        "the password is not shown: {pg_err}"
    );
    let (sqlite_dir, sqlite_err) = &failed[1];
    assert_eq!(sqlite_dir, "sqlite");
    assert!(
        sqlite_err.contains("directory sqlite")
            && sqlite_err.contains(":jdbc-url")
            && sqlite_err.contains("never name a SQLite file"),
        "{sqlite_err}"
    );
    assert!(!evil_db.exists(), "a manifest's SQLite path was created");
    assert!(
        !contacted(&listener, Duration::from_millis(300)),
        "a refused server was contacted"
    );
    assert!(
        !dir.path().join("wh.db").exists(),
        "nothing was loaded anywhere"
    );
    assert!(store.join("pg/a.csv").exists() && store.join("sqlite/a.csv").exists());

    // Allowed by the operator: the server is contacted (this one hangs up, so the load
    // fails and the files stay). SQLite stays refused whatever is allowed.
    let mut args = args(&store_url, &default_wh, "blueshift_load_history");
    args.allow_manifest_warehouse = vec![format!("127.0.0.1:{port}"), "localhost".into()];
    let mut svc = blueshift::Service::new(args).unwrap();
    // Accepting (and hanging up) while the poll runs: the loader fails at once.
    let watcher = std::thread::spawn(move || contacted(&listener, Duration::from_secs(10)));
    let out = poll(&mut svc).await;
    assert_eq!(out.failed.len(), 2);
    assert!(
        watcher.join().unwrap(),
        "an allowed server was not contacted"
    );
    assert!(!evil_db.exists());
    assert!(store.join("pg/a.csv").exists());
}
