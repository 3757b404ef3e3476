//! The `report-fetcher` binary end to end: real HTTP API, real object stores (a local
//! directory, the S3 API server), a `kill -9` and a resume from the journal.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use examples::report_fetcher::convert::{RawReport, Report, is_gone, object_key, raw_report};

const BIN: &str = env!("CARGO_BIN_EXE_report-fetcher");
const TIMEOUT: Duration = Duration::from_secs(90);

struct Run {
    stdout: String,
    stderr: String,
    success: bool,
}

/// Waits for `child` (its output going to files in `dir`) at most `TIMEOUT`.
fn wait(mut child: Child, dir: &Path, name: &str) -> Run {
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("report-fetcher did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        stdout: std::fs::read_to_string(dir.join(format!("{name}.out"))).unwrap(),
        stderr: std::fs::read_to_string(dir.join(format!("{name}.err"))).unwrap(),
        success: status.success(),
    }
}

fn spawn(dir: &Path, name: &str, args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join(format!("{name}.out"))).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap())
        .spawn()
        .unwrap()
}

fn run(dir: &Path, name: &str, args: &[&str]) -> Run {
    let run = wait(spawn(dir, name, args), dir, name);
    assert!(
        run.success,
        "report-fetcher failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    run
}

/// The fields of the contract line, which must be the last line printed.
fn contract(stdout: &str) -> Vec<(String, f64)> {
    let last = stdout.lines().last().expect("some output");
    let fields: Vec<(String, f64)> = last
        .split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("key=value");
            (k.to_string(), v.parse::<f64>().expect("a number"))
        })
        .collect();
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["completed", "dead", "attempts", "elapsed", "throughput"],
        "last line: {last}"
    );
    fields
}

fn field(fields: &[(String, f64)], key: &str) -> u64 {
    fields.iter().find(|(k, _)| k == key).unwrap().1 as u64
}

/// The test's own conversion (rates and factors written out again, not taken from the code
/// under test).
fn expected_rows(raw: &RawReport) -> Vec<(String, i64, u64)> {
    let (num, den): (i64, i64) = match raw.currency.as_str() {
        "USD" => (1, 1),
        "EUR" => (108, 100),
        "GBP" => (127, 100),
        "CHF" => (113, 100),
        "SEK" => (96, 1000),
        other => panic!("unexpected currency {other}"),
    };
    raw.rows
        .iter()
        .map(|r| {
            let ng_per: u128 = match r.unit.as_str() {
                "g" => 1_000_000_000,
                "kg" => 1_000_000_000_000,
                "oz" => 28_349_523_125,
                "lb" => 453_592_370_000,
                other => panic!("unexpected unit {other}"),
            };
            // Half up: floor(x + 1/2) with exact rationals.
            let cents = (2 * r.revenue_minor * num + den).div_euclid(2 * den);
            let mg = (u128::from(r.quantity) * ng_per + 500_000) / 1_000_000;
            (r.sku.clone(), cents, mg as u64)
        })
        .collect()
}

/// Checks one stored report against the report the API serves for (client, day).
fn check_report(bytes: &[u8], client: u32, day: u32) {
    let stored: Report = serde_json::from_slice(bytes).unwrap();
    let raw = raw_report(client, day);
    assert_eq!(stored.client, client);
    assert_eq!(stored.date, raw.date);
    assert_eq!(stored.source_currency, raw.currency);
    let got: Vec<(String, i64, u64)> = stored
        .rows
        .iter()
        .map(|r| (r.sku.clone(), r.revenue_usd_cents, r.mass_mg))
        .collect();
    let want = expected_rows(&raw);
    assert_eq!(got, want, "client {client} day {day}");
    assert_eq!(
        stored.total_usd_cents,
        want.iter().map(|(_, c, _)| c).sum::<i64>()
    );
}

fn files_under(root: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = BTreeSet::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out
}

#[test]
fn run_writes_exactly_the_expected_converted_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let out: PathBuf = tmp.path().join("out");
    let (clients, days, gone_rate) = (6u32, 4u32, 0.15);
    let run = run(
        tmp.path(),
        "run",
        &[
            "--clients",
            "6",
            "--days",
            "4",
            "--concurrency",
            "8",
            "--failure-rate",
            "0.2",
            "--throttle-rate",
            "0.05",
            "--retry-after",
            "100ms",
            "--gone-rate",
            "0.15",
            "--api-latency",
            "5ms",
            "--max-attempts",
            "30",
            "--download-concurrency",
            "3",
            "--download-rate",
            "200",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let fields = contract(&run.stdout);
    let gone: Vec<(u32, u32)> = (0..clients)
        .flat_map(|c| (0..days).map(move |d| (c, d)))
        .filter(|&(c, d)| is_gone(c, d, gone_rate))
        .collect();
    assert!(!gone.is_empty(), "the parameters give some 404s");
    assert_eq!(field(&fields, "dead"), gone.len() as u64, "{}", run.stderr);
    assert_eq!(
        field(&fields, "completed"),
        u64::from(clients * days) - gone.len() as u64
    );
    assert!(field(&fields, "attempts") >= 3 * field(&fields, "completed"));
    assert!(
        run.stdout
            .contains(&format!("verified={}", field(&fields, "completed")))
    );

    // Exactly one object per report that exists, none for the gone ones, each converted right.
    let expected: BTreeSet<String> = (0..clients)
        .flat_map(|c| (0..days).map(move |d| (c, d)))
        .filter(|&(c, d)| !is_gone(c, d, gone_rate))
        .map(|(c, d)| object_key(c, d))
        .collect();
    assert_eq!(files_under(&out), expected);
    for c in 0..clients {
        for d in 0..days {
            if !is_gone(c, d, gone_rate) {
                check_report(&std::fs::read(out.join(object_key(c, d))).unwrap(), c, d);
            }
        }
    }
}

#[test]
fn serial_baseline_produces_the_same_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let run = run(
        tmp.path(),
        "serial",
        &[
            "--serial",
            "--clients",
            "3",
            "--days",
            "2",
            "--failure-rate",
            "0.2",
            "--throttle-rate",
            "0",
            "--api-latency",
            "1ms",
            "--max-attempts",
            "30",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let fields = contract(&run.stdout);
    assert_eq!(field(&fields, "completed"), 6);
    assert_eq!(field(&fields, "dead"), 0);
    assert!(run.stdout.contains("mode=serial"));
    let expected: BTreeSet<String> = (0..3)
        .flat_map(|c| (0..2).map(move |d| object_key(c, d)))
        .collect();
    assert_eq!(files_under(&out), expected);
    for c in 0..3 {
        for d in 0..2 {
            check_report(&std::fs::read(out.join(object_key(c, d))).unwrap(), c, d);
        }
    }
}

#[test]
fn kill_dash_nine_then_resume_from_the_journal_completes_every_report() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let journal = tmp.path().join("run.journal");
    let args = [
        "--clients",
        "10",
        "--days",
        "8",
        "--concurrency",
        "2",
        "--api-latency",
        "40ms",
        "--failure-rate",
        "0.1",
        "--throttle-rate",
        "0",
        "--max-attempts",
        "30",
        "--out",
        out.to_str().unwrap(),
        "--journal",
        journal.to_str().unwrap(),
    ];
    let mut first = spawn(tmp.path(), "first", &args);
    // Kill it once it has journaled some transitions.
    let deadline = Instant::now() + TIMEOUT;
    while std::fs::metadata(&journal).map_or(0, |m| m.len()) < 4_000 {
        assert!(Instant::now() < deadline, "no journal written");
        assert!(
            first.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    let second = run(tmp.path(), "second", &args);
    let line = second
        .stdout
        .lines()
        .find(|l| l.starts_with("journal: "))
        .expect("a journal line");
    let before: u64 = line
        .split(' ')
        .find_map(|kv| kv.strip_prefix("completed="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        before < 80,
        "the first run was killed before the end: {line}"
    );
    let fields = contract(&second.stdout);
    assert_eq!(field(&fields, "dead"), 0);
    assert_eq!(before + field(&fields, "completed"), 80, "{line}");
    assert!(second.stdout.contains("verified=80"));
    let expected: BTreeSet<String> = (0..10)
        .flat_map(|c| (0..8).map(move |d| object_key(c, d)))
        .collect();
    // object_store's local file system stages a put as `<key>#<n>` and renames it into
    // place, so the SIGKILL can leave one staging file behind (an S3 put is atomic). Every
    // report is there, and nothing else.
    let written: BTreeSet<String> = files_under(&out)
        .into_iter()
        .filter(|f| {
            f.rsplit_once('#')
                .is_none_or(|(_, n)| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    assert_eq!(written, expected);
    for c in 0..10 {
        for d in 0..8 {
            check_report(&std::fs::read(out.join(object_key(c, d))).unwrap(), c, d);
        }
    }
}
