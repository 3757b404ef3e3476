//! The `bifrost` binary: killed at random moments (SIGKILL) while messages are produced and
//! restarted, it ends with every message in exactly one object; its exit codes, variables
//! and subcommands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::SinkExt;
use test_services::kafka::KafkaCluster;
use test_services::unique_name;

fn bifrost() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bifrost"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BIFROST_") {
            c.env_remove(k);
        }
    }
    c.env(
        "RUST_LOG",
        std::env::var("BIFROST_TEST_LOG").unwrap_or_else(|_| "warn".into()),
    );
    c
}

/// Kills the child when dropped (a failed test leaves no process behind).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn value(p: i32, i: usize) -> String {
    format!("{p}/{i}")
}

async fn produce(brokers: &str, topic: &str, range: std::ops::Range<usize>) {
    let producer = kafka_seq::ProducerConfig::new(brokers).create().unwrap();
    let mut sink = producer.sink(topic);
    for i in range {
        for p in 0..2 {
            sink.feed(kafka_seq::Record::new(value(p, i)).partition(p))
                .await
                .unwrap();
        }
    }
    tokio::time::timeout(Duration::from_secs(30), sink.close())
        .await
        .unwrap()
        .unwrap();
}

/// Every object under `root`: per partition, (first, last, values) in offset order.
fn archive(root: &Path) -> BTreeMap<i32, Vec<(i64, i64, Vec<String>)>> {
    let mut out: BTreeMap<i32, Vec<(i64, i64, Vec<String>)>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let Some(k) = bifrost::parse_key(&rel) else {
                continue;
            };
            let data = std::fs::read(&path).unwrap();
            let r = bifrost::ObjectRange::parse(&data[..data.len().min(512)]).unwrap();
            let values = baldr::open_reader(&data[..])
                .unwrap()
                .map(|r| String::from_utf8(r.unwrap().to_vec()).unwrap())
                .collect();
            out.entry(k.partition)
                .or_default()
                .push((r.first, r.last, values));
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

fn records(root: &Path) -> usize {
    archive(root).values().flatten().map(|o| o.2.len()).sum()
}

fn sigterm(child: &Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            start.elapsed() < within,
            "bifrost did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn service_args(brokers: &str, topic: &str, store: &str, spool: &Path, rotate: u64) -> Vec<String> {
    [
        "--brokers",
        brokers,
        "--group",
        "crash",
        "--topics",
        topic,
        "--store",
        store,
        "--rotate-interval",
        "300ms",
        "--memory-budget",
        "32MiB",
        "--rotate-bytes",
        "1MiB",
        "--finish-timeout",
        "5s",
        "--drain-timeout",
        "15s",
        "-X",
        "session.timeout.ms=1000",
        "-X",
        "heartbeat.interval.ms=100",
        "-X",
        "topic.metadata.refresh.interval.ms=500",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--rotate-records".into(),
        rotate.to_string(),
        "--spool-dir".into(),
        spool.display().to_string(),
    ])
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_and_restarted_every_message_is_in_exactly_one_object() {
    let started = Instant::now();
    let kafka = KafkaCluster::start(1);
    kafka.set_initial_rebalance_delay(Duration::from_millis(50));
    let brokers = kafka.bootstrap_servers().to_string();
    let topic = unique_name("crash-");
    kafka.create_topic(&topic, 2);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let store = format!("file://{}", root.display());
    let spool: PathBuf = dir.path().join("spool");
    // A reproducible sequence of kill moments (xorshift), printed for a failing run.
    let mut seed: u64 = std::env::var("BIFROST_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    eprintln!("crash test seed {seed}");
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let per_round = 25;
    let mut produced = 0;
    for round in 0..20u64 {
        let mut child = KillOnDrop(
            bifrost()
                .args(service_args(
                    &brokers,
                    &topic,
                    &store,
                    &spool,
                    3 + next() % 9,
                ))
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        // Messages arrive while it runs; it dies at a random moment.
        let kill_after = Duration::from_millis(300 + next() % 1700);
        let t = Instant::now();
        produce(&brokers, &topic, produced..produced + per_round).await;
        produced += per_round;
        if let Some(rest) = kill_after.checked_sub(t.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "round {round}: bifrost exited by itself"
        );
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
    }
    let before_last = records(&root);
    eprintln!(
        "crash test: {before_last} of {} messages archived by the killed runs",
        produced * 2
    );
    assert!(
        before_last > 0,
        "the killed runs archived something before dying"
    );
    // A last run archives the rest and stops cleanly.
    let mut child = KillOnDrop(
        bifrost()
            .args(service_args(&brokers, &topic, &store, &spool, 10))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let want = produced * 2;
    let deadline = Instant::now() + Duration::from_secs(60);
    while records(&root) < want {
        assert!(
            Instant::now() < deadline,
            "archived {} of {want}",
            records(&root)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sigterm(&child.0);
    let status = wait_exit(&mut child.0, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "SIGTERM: drained, exit 0");
    let archive = archive(&root);
    for p in 0..2 {
        let mut next_offset = 0;
        let mut values = Vec::new();
        for (first, last, v) in &archive[&p] {
            assert_eq!(
                *first,
                next_offset,
                "partition {p}: no overlap, no gap: {:?}",
                archive[&p].iter().map(|o| (o.0, o.1)).collect::<Vec<_>>()
            );
            next_offset = last + 1;
            values.extend(v.iter().cloned());
        }
        let expected: Vec<String> = (0..produced).map(|i| value(p, i)).collect();
        assert_eq!(
            values, expected,
            "partition {p}: every message in exactly one object"
        );
    }
    eprintln!(
        "crash test: 20 kills, {want} messages, {:?}",
        started.elapsed()
    );
    // Nothing left in the spool of the processes that were killed (removed at restart).
    let left: Vec<_> = std::fs::read_dir(&spool).unwrap().flatten().collect();
    assert!(left.len() <= 1, "stale spool directories: {left:?}");
}

#[test]
fn bad_configuration_exits_2_and_flags_read_variables() {
    let dir = tempfile::tempdir().unwrap();
    let out = bifrost().output().unwrap();
    assert_eq!(out.status.code(), Some(2), "missing required flags");
    let out = bifrost()
        .args([
            "--brokers",
            "127.0.0.1:1",
            "--group",
            "g",
            "--topics",
            "(",
            "--store",
        ])
        .arg(format!("file://{}", dir.path().display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--topics"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bifrost()
        .env("BIFROST_BROKERS", "127.0.0.1:1")
        .env("BIFROST_GROUP", "g")
        .env("BIFROST_TOPICS", "t")
        .env("BIFROST_STORE", format!("file://{}", dir.path().display()))
        .env("BIFROST_ROTATE_BYTES", "1GiB")
        .env("BIFROST_MEMORY_BUDGET", "64MiB")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--rotate-bytes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn verify_reports_and_fails_on_an_overlap_and_replay_writes_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let object = |first: i64, last: i64| {
        let mut gz = flate2::GzBuilder::new()
            .extra(bifrost::ObjectRange::gzip_extra())
            .write(Vec::new(), flate2::Compression::new(1));
        let n = (last - first + 1) as u64;
        for _ in 0..n {
            std::io::Write::write_all(&mut gz, &[0u8; 8]).unwrap();
        }
        let mut o = gz.finish().unwrap();
        bifrost::ObjectRange {
            first,
            last,
            records: n,
            bytes: 8 * n,
        }
        .fill(&mut o, false);
        o
    };
    let part = root.join("g/t/partition=0");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::write(part.join("0000000000.baldr.gz"), object(0, 9)).unwrap();
    std::fs::write(part.join("0000000010.baldr.gz"), object(10, 19)).unwrap();
    std::fs::write(part.join("0000000025.baldr.gz"), object(25, 29)).unwrap();
    let store = format!("file://{}", root.display());
    let out = bifrost()
        .args(["verify", "--store", &store, "--deep"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        text,
        "g/t/partition=0: 3 objects, 25 records, offsets 0..=19 25..=29, gaps 20..=24\n"
    );
    // An overlap fails (and BIFROST_STORE serves the subcommand too).
    std::fs::write(part.join("0000000015.baldr.gz"), object(15, 22)).unwrap();
    let out = bifrost()
        .args(["verify", "--prefix", "g/t"])
        .env("BIFROST_STORE", &store)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("OVERLAPS") && text.contains("0000000015.baldr.gz"),
        "{text}"
    );

    let out = bifrost()
        .args([
            "replay",
            "--store",
            &store,
            "--group",
            "g",
            "--topic",
            "t",
            "--partition",
            "0",
            "--from",
            "12",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("REPLACED"));
    assert_eq!(
        std::fs::read_to_string(part.join(bifrost::TOKEN_NAME)).unwrap(),
        "t 0 12 replay\n"
    );
}
