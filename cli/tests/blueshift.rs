//! The `blueshift` binary's contract: flags and `BLUESHIFT_*` variables, `--once` exit codes,
//! `--dry-run`. Uses the embedded SQLite warehouse (no external service).

use std::path::Path;
use std::process::Command;

use redshift_upsert::sqlx::{self, Connection, Row, SqliteConnection};

const MANIFEST: &str = r#"{:table "testing" :pk-columns ["foo"] :columns ["foo" "bar"]
 :options ["DELIMITER '\\t'" "IGNOREHEADER 1" "ESCAPE" "TRIMBLANKS"] :data-pattern ".*tsv$"}"#;

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn blueshift() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_blueshift"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BLUESHIFT_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    c
}

async fn warehouse(dir: &Path) -> (String, SqliteConnection) {
    let db = dir.join("wh.db");
    let url = format!("sqlite://{}", db.display());
    let mut c = SqliteConnection::connect(&format!("{url}?mode=rwc"))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE testing (foo INTEGER, bar TEXT); INSERT INTO testing VALUES (1, 'old')",
    )
    .execute(&mut c)
    .await
    .unwrap();
    (url, c)
}

async fn rows(c: &mut SqliteConnection) -> Vec<(i64, String)> {
    sqlx::query("SELECT foo, bar FROM testing ORDER BY foo")
        .fetch_all(c)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn once_loads_everything_ready_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (wh, mut c) = warehouse(dir.path()).await;
    let store = dir.path().join("store");
    write(&store, "in/manifest.edn", MANIFEST.as_bytes());
    write(&store, "in/a.tsv", b"foo\tbar\n1\tnew\n2\ttwo\n");
    let out = blueshift()
        .args([
            "--store",
            &format!("file://{}", store.display()),
            "--warehouse",
            &wh,
            "--once",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        rows(&mut c).await,
        vec![(1, "new".into()), (2, "two".into())]
    );
    assert!(!store.join("in/a.tsv").exists());
}

#[tokio::test]
async fn variables_work_like_flags_and_a_failed_directory_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (wh, mut c) = warehouse(dir.path()).await;
    let store = dir.path().join("store");
    write(&store, "good/manifest.edn", MANIFEST.as_bytes());
    write(&store, "good/a.tsv", b"foo\tbar\n3\tthree\n");
    write(&store, "bad/manifest.edn", MANIFEST.as_bytes());
    write(&store, "bad/a.tsv", b"foo\tbar\n4\tfour\textra field\n");
    let out = blueshift()
        .env("BLUESHIFT_STORE", format!("file://{}", store.display()))
        .env("BLUESHIFT_WAREHOUSE", &wh)
        .env("BLUESHIFT_ONCE", "true")
        .env("BLUESHIFT_POLL_INTERVAL", "1s")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad/a.tsv"), "{err}");
    assert_eq!(
        rows(&mut c).await,
        vec![(1, "old".into()), (3, "three".into())]
    );
    assert!(store.join("bad/a.tsv").exists());
    // --key-pattern excludes the bad directory: everything ready loads, exit 0.
    let out = blueshift()
        .env("BLUESHIFT_STORE", format!("file://{}", store.display()))
        .env("BLUESHIFT_WAREHOUSE", &wh)
        .args(["--once", "--key-pattern", "^good"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn dry_run_prints_the_plan_and_loads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (wh, mut c) = warehouse(dir.path()).await;
    let store = dir.path().join("store");
    write(&store, "in/manifest.edn", MANIFEST.as_bytes());
    write(&store, "in/a.tsv", b"foo\tbar\n1\tnew\n");
    let out = blueshift()
        .args([
            "--store",
            &format!("file://{}", store.display()),
            "--warehouse",
            &wh,
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("BEGIN;") && text.contains(r#"INSERT INTO "testing" ("foo", "bar")"#),
        "{text}"
    );
    assert_eq!(rows(&mut c).await, vec![(1, "old".into())]);
    assert!(store.join("in/a.tsv").exists());
}

#[test]
fn bad_flags_and_configuration_exit_2() {
    let out = blueshift()
        .args(["--store", "file:///tmp/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = blueshift()
        .args([
            "--store",
            &format!("file://{}", store.display()),
            "--warehouse",
            "mysql://x",
            "--once",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mysql://x"));
    assert!(
        !store.exists(),
        "a refused configuration created the store directory"
    );
}

#[tokio::test]
async fn the_service_polls_until_sigterm_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (wh, mut c) = warehouse(dir.path()).await;
    let store = dir.path().join("store");
    let mut child = KillOnDrop(
        blueshift()
            .args([
                "--store",
                &format!("file://{}", store.display()),
                "--warehouse",
                &wh,
                "--poll-interval",
                "100ms",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Files arriving while it runs are loaded by a later poll (written, then renamed into
    // place: object stores make whole objects appear at once too).
    write(&store, "tmp/m.part", MANIFEST.as_bytes());
    write(&store, "tmp/a.part", b"foo\tbar\n5\tfive\n");
    std::fs::create_dir_all(store.join("in")).unwrap();
    std::fs::rename(store.join("tmp/m.part"), store.join("in/manifest.edn")).unwrap();
    std::fs::rename(store.join("tmp/a.part"), store.join("in/a.tsv")).unwrap();
    let mut loaded = false;
    for _ in 0..200 {
        if !store.join("in/a.tsv").exists() {
            loaded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(loaded, "the running service did not load the file");
    assert_eq!(
        rows(&mut c).await,
        vec![(1, "old".into()), (5, "five".into())]
    );
    let st = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut code = None;
    for _ in 0..200 {
        if let Some(s) = child.0.try_wait().unwrap() {
            code = s.code();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(code, Some(0));
}

/// A "PostgreSQL server" that accepts connections and never answers: a load into it hangs
/// (until sqlx's 30 s acquire timeout), which lets tests signal a service busy loading.
fn silent_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        // Bounded: a test opens a handful of connections.
        for s in l.incoming().take(64) {
            held.push(s);
        }
    });
    port
}

/// Starts blueshift loading one directory into the silent server, with `extra` flags; returns
/// once the load is under way (the store's file still there after a few polls' time).
async fn busy_blueshift(dir: &Path, extra: &[&str]) -> KillOnDrop {
    let store = dir.join("store");
    write(&store, "in/manifest.edn", MANIFEST.as_bytes());
    write(&store, "in/a.tsv", b"foo\tbar\n1\tx\n");
    let port = silent_server();
    let child = KillOnDrop(
        blueshift()
            .args([
                "--store",
                &format!("file://{}", store.display()),
                "--warehouse",
                &format!("postgres://postgres@127.0.0.1:{port}/db"),
                "--poll-interval",
                "100ms",
            ])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    child
}

fn sigterm(child: &KillOnDrop) {
    let st = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Waits (bounded) for the child's exit status.
async fn exit_code(child: &mut KillOnDrop, within: std::time::Duration) -> Option<i32> {
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if let Some(s) = child.0.try_wait().unwrap() {
            return s.code();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no exit within {within:?}");
}

#[tokio::test]
async fn a_service_stuck_in_a_load_is_cut_off_at_the_drain_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = busy_blueshift(dir.path(), &["--drain-timeout", "500ms"]).await;
    let signalled = std::time::Instant::now();
    sigterm(&child);
    let code = exit_code(&mut child, std::time::Duration::from_secs(20)).await;
    assert_eq!(
        code,
        Some(1),
        "work unfinished at the deadline is a failure"
    );
    let took = signalled.elapsed();
    assert!(took >= std::time::Duration::from_millis(450), "{took:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("drain deadline"), "{err}");
    assert!(
        dir.path().join("store/in/a.tsv").exists(),
        "nothing loaded, nothing deleted"
    );
}

#[tokio::test]
async fn a_second_signal_exits_at_once_with_130() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = busy_blueshift(dir.path(), &["--drain-timeout", "1h"]).await;
    sigterm(&child);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(child.0.try_wait().unwrap().is_none(), "draining, not gone");
    sigterm(&child);
    let code = exit_code(&mut child, std::time::Duration::from_secs(10)).await;
    assert_eq!(code, Some(130));
}

#[tokio::test]
async fn a_config_file_is_read_and_flags_and_variables_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let (wh, mut c) = warehouse(dir.path()).await;
    let store = dir.path().join("store");
    write(&store, "good/manifest.edn", MANIFEST.as_bytes());
    write(&store, "good/a.tsv", b"foo\tbar\n3\tthree\n");
    write(&store, "other/manifest.edn", MANIFEST.as_bytes());
    write(&store, "other/a.tsv", b"foo\tbar\n4\tfour\n");
    let config = dir.path().join("blueshift.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"file://{}\"\nwarehouse = \"{wh}\"\nonce = true\nkey-pattern = \"^other\"\npoll-interval = \"1s\"\n",
            store.display()
        ),
    )
    .unwrap();
    // The variable overrides the file's key pattern: only `good` loads.
    let out = blueshift()
        .args(["--config", config.to_str().unwrap()])
        .env("BLUESHIFT_KEY_PATTERN", "^good")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        rows(&mut c).await,
        vec![(1, "old".into()), (3, "three".into())]
    );
    assert!(store.join("other/a.tsv").exists());
    // A flag overrides both.
    let out = blueshift()
        .args([
            "--config",
            config.to_str().unwrap(),
            "--key-pattern",
            "^oth",
        ])
        .env("BLUESHIFT_KEY_PATTERN", "^good")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!store.join("other/a.tsv").exists());
    // A key that is no flag: exit 2, naming the file and the key.
    std::fs::write(&config, "stor = \"x\"\n").unwrap();
    let out = blueshift()
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("blueshift.toml") && err.contains("`stor`"),
        "{err}"
    );
}

#[tokio::test]
async fn logs_are_plain_text_off_a_terminal_and_json_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let (wh, _c) = warehouse(dir.path()).await;
    let store = dir.path().join("store");
    write(&store, "in/manifest.edn", MANIFEST.as_bytes());
    write(&store, "in/a.tsv", b"foo\tbar\n1\tnew\n");
    let store_url = format!("file://{}", store.display());
    let run = |extra: &[&str]| {
        blueshift()
            .env("RUST_LOG", "info")
            .args(["--store", &store_url, "--warehouse", &wh, "--once"])
            .args(extra)
            .output()
            .unwrap()
    };
    let text = run(&[]);
    assert_eq!(text.status.code(), Some(0));
    let err = String::from_utf8_lossy(&text.stderr);
    assert!(err.contains("INFO") && err.contains("loaded"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "colour codes in a log that is not a terminal: {err}"
    );

    write(&store, "in/b.tsv", b"foo\tbar\n2\ttwo\n");
    let json = run(&["--log-format", "json"]);
    assert_eq!(json.status.code(), Some(0));
    let err = String::from_utf8_lossy(&json.stderr);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let loaded = lines
        .iter()
        .find(|v| v["fields"]["message"] == "loaded")
        .unwrap_or_else(|| panic!("no `loaded` line in {err}"));
    assert_eq!(loaded["level"], "INFO");
    assert_eq!(loaded["fields"]["directory"], "in");
}

/// Kills the child process when the test ends, passing or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Riemann protocol server: decodes each length-prefixed `Msg`, answers `ok`, and passes
/// the events on.
async fn riemann_server() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::Receiver<telemetry::riemann::proto::Event>,
) {
    use prost::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(10_000);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    let mut len = [0u8; 4];
                    if sock.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
                    sock.read_exact(&mut buf).await.unwrap();
                    let msg = telemetry::riemann::proto::Msg::decode(&buf[..]).unwrap();
                    for e in msg.events {
                        let _ = tx.send(e).await;
                    }
                    let ok = telemetry::riemann::proto::Msg {
                        ok: Some(true),
                        ..Default::default()
                    }
                    .encode_to_vec();
                    sock.write_all(&(ok.len() as u32).to_be_bytes())
                        .await
                        .unwrap();
                    sock.write_all(&ok).await.unwrap();
                }
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn a_once_run_sends_its_final_report_to_riemann() {
    let dir = tempfile::tempdir().unwrap();
    let (wh, _c) = warehouse(dir.path()).await;
    let store = dir.path().join("store");
    write(&store, "in/manifest.edn", MANIFEST.as_bytes());
    write(&store, "in/a.tsv", b"foo\tbar\n1\tnew\n2\ttwo\n3\tthree\n");
    let (addr, mut events) = riemann_server().await;
    let mut cmd = blueshift();
    cmd.args([
        "--store",
        &format!("file://{}", store.display()),
        "--warehouse",
        &wh,
        "--once",
        "--riemann",
        &addr.to_string(),
        "--riemann-interval",
        "1h",
        "--riemann-tag",
        "ci",
    ]);
    // The Riemann server runs on this runtime: wait for the child off it.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The interval is an hour: what arrives is the report sent at shutdown.
    let mut seen = Vec::new();
    while let Ok(Some(e)) =
        tokio::time::timeout(std::time::Duration::from_secs(5), events.recv()).await
    {
        seen.push(e);
        if seen.iter().any(|e| {
            e.service
                .as_deref()
                .is_some_and(|s| s.starts_with("blueshift blueshift_rows_loaded_total"))
        }) {
            break;
        }
    }
    let rows = seen
        .iter()
        .find(|e| {
            e.service
                .as_deref()
                .is_some_and(|s| s.starts_with("blueshift blueshift_rows_loaded_total"))
        })
        .unwrap_or_else(|| panic!("no rows_loaded event among {seen:?}"));
    assert_eq!(rows.metric_sint64, Some(3));
    assert_eq!(rows.state.as_deref(), Some("ok"));
    assert!(rows.tags.iter().any(|t| t == "ci"));
}

#[tokio::test]
async fn the_running_service_serves_prometheus_metrics() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (wh, _c) = warehouse(dir.path()).await;
    let store = dir.path().join("store");
    write(&store, "in/manifest.edn", MANIFEST.as_bytes());
    write(&store, "in/a.tsv", b"foo\tbar\n7\tseven\n");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _child = KillOnDrop(
        blueshift()
            .args([
                "--store",
                &format!("file://{}", store.display()),
                "--warehouse",
                &wh,
                "--poll-interval",
                "100ms",
                "--metrics-listen",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut body = String::new();
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let Ok(mut sock) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            continue;
        };
        sock.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        body.clear();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            sock.read_to_string(&mut body),
        )
        .await;
        if body.contains("blueshift_rows_loaded_total{table=\"testing\"} 1") {
            break;
        }
    }
    assert!(
        body.starts_with("HTTP/1.") && body.contains(" 200 "),
        "{body}"
    );
    assert!(
        body.contains("blueshift_rows_loaded_total{table=\"testing\"} 1"),
        "{body}"
    );
}
