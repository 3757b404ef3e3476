//! bifrost's performance goals (see `benches/README.md`, section bifrost):
//!
//! - `gen FILE [MB]`: writes MB (162) of JSON events, one per line (seeded).
//! - `compress FILE [ROUNDS]`: the archiver's bottleneck. FILE holds one JSON event per line;
//!   its Baldr stream (the bytes bifrost compresses) is compressed in memory by the
//!   workspace's flate2 backend (gzip levels 1 and 6) and zstd (1, 3), and by GNU
//!   `gzip -6` and ISA-L `igzip -1` (Debian `isal`) on the same bytes; MB/s of input and
//!   output size, medians of ROUNDS (3).
//! - `archive FILE [PARTITIONS] [ROUNDS]`: a mock-cluster topic pre-filled with FILE's events
//!   (as many as the mock keeps: under 5 MB per partition), read by a bare rdkafka consumer
//!   and archived by bifrost (in process, local-directory store) with gzip level 0 (stored:
//!   the uncompressed archiving path), 4 (the default) and 6 and zstd 3; MB/s of message
//!   bytes from the tenth of the messages received (the group join and first fetches are
//!   not timed) to the last one read, or archived; and each archiver's speed against the
//!   bare reader's in the same round (median of the rounds' ratios).
//!   `BIFROST_BENCH_DIR=DIR` holds the spool and the store (e.g. `/dev/shm`);
//!   `BIFROST_BENCH_STORE=memory` keeps the objects in memory instead.
//!   `BIFROST_BENCH_PERF=FIFO` (with `perf record --control=fifo:FIFO -D -1`) profiles only
//!   those timed parts: of the archive runs, or of the bare reader with
//!   `BIFROST_BENCH_PERF_BARE=1`.
//! - `rss BIFROST_BIN [PARTITIONS] [BUDGET]`: a 500-partition topic archived by the bifrost
//!   binary (a child process) with `--memory-budget BUDGET`; its peak RSS (VmHWM).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};

/// Turns `perf record --control=fifo:FIFO -D -1` on or off around the timed part of the
/// `bare` reader or of the archive runs (`BIFROST_BENCH_PERF=FIFO`).
fn perf(bare: bool, on: bool) {
    let Ok(fifo) = std::env::var("BIFROST_BENCH_PERF") else {
        return;
    };
    if bare != std::env::var("BIFROST_BENCH_PERF_BARE").is_ok() {
        return;
    }
    let cmd: &[u8] = if on { b"enable\n" } else { b"disable\n" };
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(fifo) {
        let _ = f.write_all(cmd);
    }
}

/// Writes `mb` MB of JSON events, one per line, from a seeded generator.
fn generate(file: &Path, mb: usize) {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut out = std::io::BufWriter::new(std::fs::File::create(file).unwrap());
    let words = [
        "alpha", "beta", "gamma", "delta", "timeout", "retry", "cache", "miss", "hit", "upstream",
        "db", "slow",
    ];
    let uas = [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
        "curl/8.4.0",
        "okhttp/4.12.0",
        "Go-http-client/2.0",
    ];
    let paths = [
        "/api/v1/items/",
        "/api/v1/users/",
        "/checkout/",
        "/search?q=",
        "/static/js/app.",
        "/health",
    ];
    let (mut written, mut ms) = (0usize, 1_764_500_000_000u64);
    while written < mb * 1_000_000 {
        ms += rng.u64(0..10);
        let msg: Vec<&str> = (0..rng.usize(0..7))
            .map(|_| words[rng.usize(..words.len())])
            .collect();
        let line = format!(
            r#"{{"ts":"{}.{:03}","host":"web-{:02}","level":"{}","method":"{}","path":"{}{}","status":{},"bytes":{},"ms":{:.1},"ua":"{}","req":"{:032x}","msg":"{}"}}"#,
            ms / 1000,
            ms % 1000,
            rng.u8(0..40),
            [
                "info", "info", "info", "info", "info", "info", "info", "info", "warn", "error"
            ][rng.usize(..10)],
            ["GET", "GET", "GET", "POST", "PUT"][rng.usize(..5)],
            paths[rng.usize(..paths.len())],
            rng.u32(1..100_000),
            [200, 200, 200, 200, 201, 204, 301, 404, 500][rng.usize(..9)],
            rng.u32(0..50_000),
            -20.0 * (1.0 - rng.f64()).ln(),
            uas[rng.usize(..uas.len())],
            rng.u128(..),
            msg.join(" "),
        );
        writeln!(out, "{line}").unwrap();
        written += line.len() + 1;
    }
    out.flush().unwrap();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn events(file: &Path) -> Vec<Vec<u8>> {
    let f = std::fs::File::open(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    std::io::BufReader::new(f)
        .split(b'\n')
        .map(|l| l.unwrap())
        .filter(|l| !l.is_empty())
        .collect()
}

fn baldr_stream(events: &[Vec<u8>]) -> Vec<u8> {
    let mut w = baldr::Writer::new(Vec::new());
    for e in events {
        w.write_record(e).unwrap();
    }
    w.finish().unwrap()
}

fn mb(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

fn compress(file: &Path, rounds: usize) {
    let stream = baldr_stream(&events(file));
    let n = stream.len();
    println!(
        "input: {} events file, Baldr stream {:.1} MB",
        file.display(),
        n as f64 / 1e6
    );
    println!("| compressor | MB/s (median of {rounds}) | output MB | ratio |");
    println!("|---|---|---|---|");
    let row = |name: &str, f: &mut dyn FnMut() -> usize| {
        let mut times = Vec::new();
        let mut out = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            out = f();
            times.push(t.elapsed().as_secs_f64());
        }
        let s = median(times);
        println!(
            "| {name} | {:.1} | {:.1} | {:.2} |",
            mb(n, s),
            out as f64 / 1e6,
            n as f64 / out as f64
        );
    };
    for level in [1u32, 2, 3, 4, 5, 6] {
        row(&format!("flate2 (zlib-rs) gzip level {level}"), &mut || {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(n / 4),
                flate2::Compression::new(level),
            );
            e.write_all(&stream).unwrap();
            e.finish().unwrap().len()
        });
    }
    for level in [1, 3] {
        row(&format!("zstd level {level}"), &mut || {
            zstd::stream::encode_all(&stream[..], level).unwrap().len()
        });
    }
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &stream).unwrap();
    for (tool, args) in [
        ("gzip", vec!["-6", "-c"]),
        ("igzip", vec!["-1", "-c"]),
        ("gzip", vec!["-1", "-c"]),
    ] {
        if Command::new(tool).arg("--version").output().is_err() {
            println!("| `{tool} {}` | not installed | | |", args.join(" "));
            continue;
        }
        row(
            &format!("`{tool} {}` (process, file in page cache)", args[0]),
            &mut || {
                let out = Command::new(tool)
                    .args(&args)
                    .arg(tmp.path())
                    .stderr(Stdio::null())
                    .output()
                    .unwrap();
                out.stdout.len()
            },
        );
    }
}

async fn fill(brokers: &str, topic: &str, events: &[Vec<u8>], partitions: i32) -> (usize, usize) {
    let producer = kafka_seq::ProducerConfig::new(brokers).create().unwrap();
    let mut sink = producer.sink(topic);
    let mut bytes = 0;
    for (i, e) in events.iter().enumerate() {
        let p = (i % partitions as usize) as i32;
        bytes += e.len();
        sink.feed(kafka_seq::Record::new(e.clone()).partition(p))
            .await
            .unwrap();
    }
    sink.close().await.unwrap();
    (events.len(), bytes)
}

async fn bare(brokers: &str, topic: &str, n: usize) -> f64 {
    let c: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", test_services::unique_name("bare-"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // As bifrost sets it: with librdkafka's default (1 s) the bare reader stalls a
        // second whenever its local queue fills, which made it bimodal (0.16 or 0.29 s).
        .set("fetch.queue.backoff.ms", "20")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut stream = c.stream();
    let mut first = None;
    let mut sum = 0usize;
    for i in 0..n {
        let m = stream.next().await.unwrap().unwrap();
        if i == n / 10 {
            first = Some(Instant::now());
            perf(true, true);
        }
        sum += m.payload().map_or(0, <[u8]>::len);
    }
    let s = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    perf(true, false);
    drop(stream);
    std::hint::black_box(sum);
    s
}

async fn seq(brokers: &str, topic: &str, n: usize, pattern: bool) -> f64 {
    let c = kafka_seq::ConsumerConfig::new(brokers, test_services::unique_name("seq-"));
    let c = if pattern {
        c.pattern(&format!("^({topic})$"))
            .set("queued.max.messages.kbytes", "131072")
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "1048576")
            .set("receive.message.max.bytes", "52494336")
    } else {
        c.topics([topic])
    };
    let mut stream = c.subscribe().unwrap();
    let control = stream.control();
    let mut first = None;
    let mut sum = 0usize;
    for i in 0..n {
        let m = stream.next().await.unwrap().unwrap();
        if i == n / 10 {
            first = Some(Instant::now());
        }
        sum += m.payload.as_ref().map_or(0, |p| p.len());
        m.ack.ack();
    }
    let s = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    drop(stream);
    let _ = control.closed().await;
    std::hint::black_box(sum);
    s
}

fn counter(recorder: &telemetry::Recorder, name: &str, topic: &str) -> u64 {
    recorder.counter_sum(name, &[("topic", topic)])
}

async fn archive_once(
    brokers: &str,
    topic: &str,
    partitions: i32,
    n: usize,
    recorder: &telemetry::Recorder,
    codec: bifrost::Codec,
    level: i32,
) -> f64 {
    // BIFROST_BENCH_DIR (e.g. /dev/shm) takes the disk out of the measurement.
    let dir = match std::env::var("BIFROST_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    };
    // BIFROST_BENCH_STORE=memory: objects kept in memory (bifrost's own work, without a
    // file system's cost of writing them).
    let store = match std::env::var("BIFROST_BENCH_STORE").as_deref() {
        Ok("memory") => "memory:///".to_string(),
        _ => format!("file://{}/archive", dir.path().display()),
    };
    let mut a = bifrost::Args::new(brokers, test_services::unique_name("arch-"), topic, &store);
    a.compression = codec;
    a.compression_level = Some(level);
    a.rotate_records = std::env::var("BIFROST_BENCH_ROTATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or((n / partitions as usize / 4).max(1) as u64);
    a.rotate_bytes = 64 << 20;
    if let Some(d) = std::env::var("BIFROST_BENCH_INTERVAL")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
    {
        a.rotate_interval = d;
    }
    a.memory_budget = 512 << 20;
    a.spool_dir = Some(dir.path().join("spool"));
    if let Ok(props) = std::env::var("BIFROST_BENCH_X") {
        a.kafka_properties = props
            .split(',')
            .filter_map(|p| kafka_seq::parse_property(p).ok())
            .collect();
    }
    let stop = lifecycle::CancellationToken::new();
    let before_recv = counter(recorder, "bifrost_messages_received_total", topic);
    let before = counter(recorder, "bifrost_records_archived_total", topic);
    let task = tokio::spawn(bifrost::run(a, stop.clone()));
    // Timed from the tenth of the messages on (as the readers above): the group join and
    // the first fetches are not the archiver's speed.
    while counter(recorder, "bifrost_messages_received_total", topic) < before_recv + n as u64 / 10
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = Instant::now();
    perf(false, true);
    if std::env::var("BIFROST_BENCH_CURVE").is_ok() {
        let mut last = Instant::now();
        loop {
            let r = counter(recorder, "bifrost_messages_received_total", topic) - before_recv;
            let a = counter(recorder, "bifrost_records_archived_total", topic) - before;
            if last.elapsed() > Duration::from_millis(100) {
                let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
                let f: Vec<&str> = stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                let cpu = f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
                    + f.get(12).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0);
                eprintln!(
                    "{:.2}s received {r} archived {a} cpu {cpu} ticks",
                    t.elapsed().as_secs_f64()
                );
                last = Instant::now();
            }
            if a >= n as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut received = None;
    while counter(recorder, "bifrost_records_archived_total", topic) < before + n as u64 {
        if received.is_none()
            && counter(recorder, "bifrost_messages_received_total", topic) >= before_recv + n as u64
        {
            received = Some(t.elapsed().as_secs_f64());
            eprintln!("all received after {received:?} s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let s = t.elapsed().as_secs_f64();
    perf(false, false);
    eprintln!("{codec:?} {level}: all received after {received:?} s, archived after {s:.2} s");
    stop.cancel();
    let outcome = task.await.unwrap().unwrap();
    eprintln!("{codec:?} {level}: {outcome:?}");
    s
}

async fn archive(file: &Path, partitions: i32, rounds: usize) {
    let recorder = telemetry::Recorder::new();
    metrics::set_global_recorder(recorder.clone()).unwrap();
    let all = events(file);
    // The mock keeps under 5 MB per partition: take what fits.
    let avg = all.iter().map(Vec::len).sum::<usize>() / all.len().max(1);
    let per = (4_500_000 / (avg + 40)).min(90_000);
    let per = per - per % 4;
    let take = (per * partitions as usize).min(all.len() - all.len() % partitions as usize);
    let kafka = test_services::kafka::KafkaCluster::start(1);
    kafka.set_initial_rebalance_delay(Duration::from_millis(100));
    let brokers = kafka.bootstrap_servers().to_string();
    let topic = test_services::unique_name("bench-");
    kafka.create_topic(&topic, partitions);
    let (n, bytes) = fill(&brokers, &topic, &all[..take], partitions).await;
    println!(
        "topic: {partitions} partitions, {n} messages, {:.1} MB of values",
        bytes as f64 / 1e6
    );
    let mut results: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        let b = bare(&brokers, &topic, n).await;
        results
            .entry("bare rdkafka StreamConsumer (borrowed payloads)")
            .or_default()
            .push(b);
        if std::env::var("BIFROST_BENCH_SEQ").is_ok() {
            let k = seq(&brokers, &topic, n, false).await;
            results
                .entry("kafka-seq KafkaStream, topic list, ack each")
                .or_default()
                .push(k);
            let k = seq(&brokers, &topic, n, true).await;
            results
                .entry("kafka-seq KafkaStream, pattern, bifrost's fetch settings, ack each")
                .or_default()
                .push(k);
        }
        let only = std::env::var("BIFROST_BENCH_ONLY").unwrap_or_default();
        for (name, codec, level) in [
            (
                "bifrost gzip level 0 (stored: uncompressed path)",
                bifrost::Codec::Gzip,
                0,
            ),
            ("bifrost gzip level 4 (default)", bifrost::Codec::Gzip, 4),
            ("bifrost gzip level 6", bifrost::Codec::Gzip, 6),
            ("bifrost zstd level 3", bifrost::Codec::Zstd, 3),
        ] {
            if !only.is_empty() && !only.split(',').any(|l| l == level.to_string()) {
                continue;
            }
            let s = archive_once(&brokers, &topic, partitions, n, &recorder, codec, level).await;
            results.entry(name).or_default().push(s);
        }
        eprintln!("round {round} done");
    }
    // Each round runs the bare reader and then each archiver: the speed ratio of a round's
    // pair saw the same host (this VM's speed drifts by 1.5x within minutes), so the
    // median of the per-round ratios is the figure to compare with a target.
    let bare_runs = results
        .get("bare rdkafka StreamConsumer (borrowed payloads)")
        .cloned()
        .unwrap_or_default();
    println!(
        "| reader | MB/s (median of {rounds}) | runs, s | x bare (median of per-round ratios) |"
    );
    println!("|---|---|---|---|");
    for (name, v) in results {
        let runs = v
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(" ");
        let ratios: Vec<f64> = bare_runs.iter().zip(&v).map(|(b, s)| b / s).collect();
        println!(
            "| {name} | {:.1} | {runs} | {:.2} |",
            mb(bytes - bytes / 10, median(v)),
            median(ratios)
        );
    }
}

fn vm_hwm(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

async fn rss(bin: &Path, partitions: i32, budget: &str) {
    let kafka = test_services::kafka::KafkaCluster::start(1);
    kafka.set_initial_rebalance_delay(Duration::from_millis(100));
    let brokers = kafka.bootstrap_servers().to_string();
    let topic = test_services::unique_name("rss-");
    kafka.create_topic(&topic, partitions);
    let per: usize = std::env::var("BIFROST_BENCH_PER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let value = vec![b'x'; 200];
    let evs: Vec<Vec<u8>> = (0..per * partitions as usize)
        .map(|i| {
            let mut v = value.clone();
            v.extend_from_slice(i.to_string().as_bytes());
            v
        })
        .collect();
    let (n, bytes) = fill(&brokers, &topic, &evs, partitions).await;
    println!(
        "topic: {partitions} partitions, {n} messages, {:.1} MB",
        bytes as f64 / 1e6
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let mut child = Command::new(bin)
        .args([
            "--brokers",
            &brokers,
            "--group",
            "rss",
            "--topics",
            &topic,
            "--store",
            &format!("file://{}", root.display()),
            "--spool-dir",
            &dir.path().join("spool").display().to_string(),
            "--memory-budget",
            budget,
            "--rotate-records",
            &(per / 2).to_string(),
            "--rotate-bytes",
            "1MiB",
            "--rotate-interval",
            "10s",
        ])
        // Extra flags for experiments: BIFROST_BENCH_ARGS="-X queued.min.messages=1000".
        .args(
            std::env::var("BIFROST_BENCH_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .env("RUST_LOG", "warn")
        .envs(
            std::env::var("BIFROST_BENCH_MALLOC")
                .ok()
                .map(|v| ("MALLOC_ARENA_MAX".to_string(), v)),
        )
        .spawn()
        .unwrap();
    let pid = child.id();
    let start = Instant::now();
    let mut peak = 0;
    loop {
        peak = peak.max(vm_hwm(pid).unwrap_or(0));
        let objects = walk(&root);
        if objects >= 2 * partitions as usize || start.elapsed() > Duration::from_secs(300) {
            println!(
                "objects {objects} after {:.1}s",
                start.elapsed().as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    peak = peak.max(vm_hwm(pid).unwrap_or(0));
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let st = child.wait().unwrap();
    println!(
        "peak RSS (VmHWM) {:.1} MiB with --memory-budget {budget} ({partitions} partitions); exit {st}",
        peak as f64 / (1 << 20) as f64
    );
}

fn walk(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if bifrost::parse_key(&p.to_string_lossy()).is_some() {
                n += 1;
            }
        }
    }
    n
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var("RUST_LOG").is_ok() {
        lifecycle::logging::init(lifecycle::logging::LogFormat::Text);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match arg(0) {
        Some("gen") => generate(
            Path::new(arg(1).unwrap_or("/tmp/events.json")),
            arg(2).and_then(|s| s.parse().ok()).unwrap_or(162),
        ),
        Some("compress") => compress(
            Path::new(arg(1).unwrap_or("/tmp/events.json")),
            arg(2).and_then(|s| s.parse().ok()).unwrap_or(3),
        ),
        Some("archive") => {
            archive(
                Path::new(arg(1).unwrap_or("/tmp/events.json")),
                arg(2).and_then(|s| s.parse().ok()).unwrap_or(32),
                arg(3).and_then(|s| s.parse().ok()).unwrap_or(3),
            )
            .await
        }
        Some("rss") => {
            rss(
                Path::new(arg(1).unwrap_or("target/release/bifrost")),
                arg(2).and_then(|s| s.parse().ok()).unwrap_or(500),
                arg(3).unwrap_or("64MiB"),
            )
            .await
        }
        _ => eprintln!(
            "usage: bifrost_archive gen FILE [MB] | compress FILE [ROUNDS] | archive FILE [PARTITIONS] [ROUNDS] | rss BIFROST_BIN [PARTITIONS] [BUDGET]"
        ),
    }
}
