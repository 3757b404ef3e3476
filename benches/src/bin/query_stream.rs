//! Bench for the `query` tool's memory: the same query returning 10 000 and then 1 000 000
//! rows (SQLite generates them; nothing is stored), written as CSV, JSON lines and a table
//! to /dev/null, with the peak RSS of each `query` process. Rows stream (each statement's
//! output is spooled to a temporary file past 4 MiB), so the peak must not grow with the
//! row count.
//!
//! Run: `cargo build --release -p cli --bin query && cargo run --release -p benches --bin query_stream`
//! (`QUERY_BENCH_ROWS` sets the large count).

use std::process::{Command, Stdio};
use std::time::Instant;

/// Runs `query` with `args` and returns (seconds, peak RSS in KiB) of that child, reaped with
/// `wait4` (std's `wait` does not report resource usage).
#[allow(clippy::zombie_processes)]
fn measure(query: &std::path::Path, args: &[String]) -> (f64, i64) {
    let started = Instant::now();
    let child = Command::new(query)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("run query");
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: wait4 reaps this child (std never waits for it) and fills the rusage.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, usage.as_mut_ptr()) };
    let took = started.elapsed().as_secs_f64();
    assert_eq!(rc, pid, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "query {args:?} failed"
    );
    // SAFETY: filled by wait4 (rc == pid).
    let usage = unsafe { usage.assume_init() };
    (took, usage.ru_maxrss)
}

fn main() {
    let exe = std::env::current_exe().expect("current exe");
    let query = exe.with_file_name("query");
    assert!(
        query.exists(),
        "{} missing: cargo build --release -p cli --bin query",
        query.display()
    );
    let large: u64 = std::env::var("QUERY_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("empty.db");
    std::fs::File::create(&db).expect("create the database file");
    println!("| format | rows | seconds | peak RSS |");
    println!("|---|---|---|---|");
    for format in ["csv", "jsonl", "table"] {
        for rows in [10_000, large] {
            let sql = format!(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT {rows}) \
                 SELECT x AS id, 'row ' || x || ', quoted \"text\"' AS name, x * 0.5 AS half FROM c"
            );
            let args = vec![
                "--warehouse".to_string(),
                format!("sqlite://{}", db.display()),
                "--format".to_string(),
                format.to_string(),
                "-c".to_string(),
                sql,
            ];
            let (secs, rss) = measure(&query, &args);
            println!(
                "| {format} | {rows} | {secs:.2} | {:.1} MiB |",
                rss as f64 / 1024.0
            );
        }
    }
}
