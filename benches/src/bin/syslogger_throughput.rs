//! syslogger's throughput and memory beside the bare rdkafka producer and rsyslog's own
//! `imtcp` -> `omkafka`, on the same in-process mock cluster and the same input: N
//! syslog messages of 200 bytes sent over loopback.
//!
//! `cargo run --release -p benches --bin syslogger_throughput -- [MESSAGES] [ROUNDS]`
//! (defaults 300000, 3). Variants, each in its own child process (so its peak RSS,
//! `VmHWM`, is its own):
//! - `bare`: a `ThreadedProducer` (idempotent, `linger.ms=2`, syslogger's default)
//!   producing the messages;
//! - `tcp`: syslogger (`--format raw --key host`), one TCP connection, LF framing;
//! - `relp`: syslogger, one RELP session, a window of 4096 unanswered transactions (omrelp `windowSize="4096"`);
//! - `rsyslog`: `rsyslogd -n` with `imtcp` -> `omkafka` (Debian `rsyslog-kafka`), one TCP
//!   connection (skipped when rsyslogd is missing).
//!
//! One warm-up message goes through each variant first (connections and producer ids
//! made), untimed; then time runs from the first byte sent (for `bare`, from telling the
//! ready child to go) until the topic's high watermarks, polled by the parent, add up to
//! N (+1): every variant is timed the same way. `SYSLOGGER_BENCH_ONLY=tcp,relp`
//! runs only those variants; `SYSLOGGER_BENCH_CONNS=2` sends over two TCP connections (to
//! syslogger and to rsyslog alike; RELP keeps one session); `SYSLOGGER_BENCH_HEADERS=1` has
//! syslogger add the parsed fields as headers (`--headers`). Each round runs every variant
//! on a fresh 8-partition topic; the median round is reported, with the ratios of the
//! medians and the median of each round's ratios. Targets: tcp >= 0.7x bare and >= 1.0x
//! rsyslog; relp >= 0.5x tcp; RSS bounded.

use std::io::{BufRead, BufReader, Write as _};

/// `linger.ms` of every variant: syslogger's default, given to the peers too.
const LINGER_MS: &str = "2";
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// As the `syslogger` binary (every variant of this bench runs in this binary).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARTITIONS: i32 = 8;
const SIZE: usize = 200;
const WINDOW: usize = 4096;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Message `i`: 200 bytes of RFC 3164 from one of 16 hosts, without the LF.
fn message(i: usize) -> Vec<u8> {
    let mut m = format!("<13>Oct 11 22:14:15 host{} app[1]: seq={i} ", i % 16).into_bytes();
    m.resize(SIZE, b'x');
    m
}

/// CPU seconds used so far by the process's threads, grouped by thread name.
fn cpu_by_thread(pid: u32) -> Vec<(String, f64)> {
    let tick = 100.0; // USER_HZ on Linux
    let mut by: std::collections::BTreeMap<String, f64> = Default::default();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let cpu = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
        *by.entry(name).or_default() += cpu / tick;
    }
    by.into_iter().collect()
}

/// With `SYSLOGGER_BENCH_CPU=1`: the child's CPU seconds by thread (includes its warm-up).
fn cpu_note(variant: &str, pid: u32) {
    if std::env::var("SYSLOGGER_BENCH_CPU").is_ok() {
        let by = cpu_by_thread(pid);
        let total: f64 = by.iter().map(|(_, c)| c).sum();
        eprintln!("{variant}: CPU {total:.2} s: {by:?}");
    }
}

fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Sum of the topic's high watermarks.
fn produced(c: &BaseConsumer, topic: &str) -> i64 {
    (0..PARTITIONS)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(5))
                .map(|(_, h)| h)
                .unwrap_or(0)
        })
        .sum()
}

fn wait_for(c: &BaseConsumer, topic: &str, n: usize, start: Instant) -> Duration {
    match try_wait_for(c, topic, n, start) {
        Ok(d) => d,
        Err(got) => panic!("{topic}: only {got} of {n} messages arrived"),
    }
}

/// Waits until the topic holds `n` messages; `Err(count)` when it stops growing for 15 s
/// (messages were lost).
fn try_wait_for(c: &BaseConsumer, topic: &str, n: usize, start: Instant) -> Result<Duration, i64> {
    let mut last = (0, Instant::now());
    loop {
        let got = produced(c, topic);
        if got >= n as i64 {
            return Ok(start.elapsed());
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(15) {
            return Err(got);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The child: `bare BROKERS TOPIC N` produces and prints its elapsed seconds and RSS.
fn child_bare(brokers: &str, topic: &str, n: usize) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", LINGER_MS)
        .create()
        .expect("producer");
    // Warm-up (connection, producer id), outside the timing.
    p.send(BaseRecord::<[u8], [u8]>::to(topic).payload(&message(0)[..]))
        .map_err(|(e, _)| e)
        .expect("warm-up");
    p.flush(Duration::from_secs(30)).expect("warm-up flush");
    // Ready; the parent starts its clock and says go.
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut go = String::new();
    let _ = std::io::stdin().read_line(&mut go);
    let start = Instant::now();
    for i in 0..n {
        let m = message(i);
        let key = format!("host{}", i % 16);
        let mut r = BaseRecord::to(topic).payload(&m[..]).key(key.as_bytes());
        loop {
            match p.send(r) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    r = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => panic!("send: {e}"),
            }
        }
    }
    // rust-rdkafka's flush polls in 100 ms slices: watch the count instead (as kafka-seq).
    while p.in_flight_count() > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "{} {}",
        start.elapsed().as_secs_f64(),
        peak_rss_kb(std::process::id())
    );
}

/// `n` messages over `SYSLOGGER_BENCH_CONNS` connections (default 1), spread evenly, for
/// syslogger's TCP listener and rsyslog's imtcp alike.
fn send_tcp_conns(to: SocketAddr, n: usize) {
    let conns: usize = std::env::var("SYSLOGGER_BENCH_CONNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1)
        .max(1);
    let senders: Vec<_> = (0..conns)
        .map(|i| {
            let mine = n / conns + if i == 0 { n % conns } else { 0 };
            std::thread::spawn(move || send_tcp(to, mine))
        })
        .collect();
    for s in senders {
        let _ = s.join();
    }
}

/// The child: `serve BROKERS TOPIC` runs syslogger, prints `tcp relp` ports, and on stdin
/// closing stops and prints its RSS.
fn child_serve(brokers: &str, topic: &str) {
    let workers: usize = std::env::var("SYSLOGGER_BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let args = syslogger::Args {
            listen: vec!["127.0.0.1:0".into()],
            relp_listen: vec!["127.0.0.1:0".into()],
            brokers: brokers.into(),
            topic: topic.into(),
            // Extra syslogger flags for experiments: SYSLOGGER_BENCH_X="linger.ms=1 ...".
            kafka_properties: std::env::var("SYSLOGGER_BENCH_X")
                .map(|x| x.split_whitespace().map(String::from).collect())
                .unwrap_or_default(),
            // SYSLOGGER_BENCH_HEADERS=1: each message also carries its parsed fields as
            // headers (`--headers`).
            headers: std::env::var("SYSLOGGER_BENCH_HEADERS").is_ok_and(|h| h == "1"),
            max_in_flight_bytes: std::env::var("SYSLOGGER_BENCH_BUDGET")
                .ok()
                .and_then(|b| b.parse().ok())
                .unwrap_or(syslogger::DEFAULT_IN_FLIGHT_BYTES),
            ..Default::default()
        };
        let stop = lifecycle::CancellationToken::new();
        let task = tokio::spawn(syslogger::run_with(args, stop.clone(), |b| {
            println!("{} {}", b.tcp[0].port(), b.relp[0].port());
            let _ = std::io::stdout().flush();
        }));
        tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        })
        .await
        .ok();
        stop.cancel();
        let _ = task.await;
    });
    println!("0 {}", peak_rss_kb(std::process::id()));
}

fn spawn_self(args: &[&str]) -> Child {
    Command::new(std::env::current_exe().expect("exe"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("child")
}

/// One line of the child's stdout (read a byte at a time: no buffer keeps the next line).
fn line(child: &mut Child) -> String {
    let out = child.stdout.as_mut().expect("stdout");
    let mut s = Vec::new();
    let mut b = [0u8; 1];
    while std::io::Read::read(out, &mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
        s.push(b[0]);
    }
    String::from_utf8_lossy(&s).into_owned()
}

fn send_tcp(addr: SocketAddr, n: usize) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let mut buf = Vec::with_capacity(64 * 1024);
    for i in 0..n {
        buf.extend_from_slice(&message(i));
        buf.push(b'\n');
        if buf.len() > 60 * 1024 {
            s.write_all(&buf).expect("write");
            buf.clear();
        }
    }
    s.write_all(&buf).expect("write");
    s.shutdown(std::net::Shutdown::Write).ok();
    // Keep the connection until the service closes it.
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut sink);
}

fn send_relp(addr: SocketAddr, n: usize) {
    let s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).ok();
    let mut w = std::io::BufWriter::new(s.try_clone().expect("clone"));
    let mut r = BufReader::new(s);
    let offers = "relp_version=0\nrelp_software=bench\ncommands=syslog";
    writeln!(w, "1 open {} {offers}", offers.len()).expect("open");
    w.flush().expect("flush");
    let read_rsp = |r: &mut BufReader<std::net::TcpStream>| {
        // `TXNR rsp LEN DATA\n`; open's DATA has LFs: read LEN bytes.
        let mut head = Vec::new();
        for _ in 0..3 {
            head.clear();
            r.read_until(b' ', &mut head).expect("rsp");
        }
        let len: usize = String::from_utf8_lossy(&head).trim().parse().expect("len");
        let mut data = vec![0; len + 1];
        std::io::Read::read_exact(r, &mut data).expect("data");
    };
    read_rsp(&mut r);
    let mut sent = 0;
    let mut acked = 0;
    let mut txnr = 2;
    while acked < n {
        while sent < n && sent - acked < WINDOW {
            let m = message(sent);
            write!(w, "{txnr} syslog {} ", m.len()).expect("w");
            w.write_all(&m).expect("w");
            w.write_all(b"\n").expect("w");
            txnr += 1;
            sent += 1;
        }
        w.flush().expect("flush");
        read_rsp(&mut r);
        acked += 1;
        // Take every answer already here before sending more.
        while acked < sent && !r.buffer().is_empty() {
            read_rsp(&mut r);
            acked += 1;
        }
    }
}

fn rsyslog(brokers: &str, topic: &str, dir: &std::path::Path) -> Option<(Child, SocketAddr)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?;
    let conf = dir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{dir}")
module(load="imtcp")
module(load="omkafka")
template(name="raw" type="string" string="%rawmsg%")
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="k")
ruleset(name="k") {{
  action(type="omkafka" broker=["{brokers}"] topic="{topic}" template="raw" key="%hostname%"
         confParam=["enable.idempotence=true", "linger.ms={linger}"])
}}
"#,
            dir = dir.display(),
            port = port.port(),
            linger = LINGER_MS,
        ),
    )
    .ok()?;
    let child = Command::new("rsyslogd")
        .args(["-n", "-f"])
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("pid"))
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let end = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(port).is_err() {
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((child, port))
}

/// One message through `addr` to Kafka (connections and producer ids made), untimed.
fn warm_up(watcher: &BaseConsumer, topic: &str, addr: SocketAddr) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let mut m = message(0);
    m.push(b'\n');
    s.write_all(&m).expect("warm-up");
    wait_for(watcher, topic, 1, Instant::now());
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("bare") => return child_bare(&a[2], &a[3], a[4].parse().expect("n")),
        Some("serve") => return child_serve(&a[2], &a[3]),
        _ => {}
    }
    let n = arg(1, 300_000);
    let rounds = arg(2, 3);
    let cluster: MockCluster<'static, DefaultProducerContext> =
        MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("consumer");
    let have_rsyslog = Command::new("rsyslogd")
        .arg("-v")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut results: Vec<(&str, Vec<f64>, Vec<u64>)> = ["bare", "tcp", "relp", "rsyslog"]
        .into_iter()
        .map(|v| (v, Vec::new(), Vec::new()))
        .collect();
    let mut topic_no = 0;
    let mut rsyslog_lost: Vec<i64> = Vec::new();
    // Each round's rates by variant: a round's variants run seconds apart, on a host whose
    // speed drifts by up to 1.5x within minutes, so ratios are also taken per round.
    let mut by_round: Vec<std::collections::HashMap<&str, f64>> = Vec::new();
    for round in 0..rounds {
        by_round.push(Default::default());
        for (variant, rates, rss) in results.iter_mut() {
            if let Ok(only) = std::env::var("SYSLOGGER_BENCH_ONLY")
                && !only.split(',').any(|o| o == *variant)
            {
                continue;
            }
            topic_no += 1;
            let topic = format!("bench-{variant}-{topic_no}");
            cluster.create_topic(&topic, PARTITIONS, 1).expect("topic");
            let (secs, kb) = match *variant {
                "bare" => {
                    let mut c = spawn_self(&["bare", &brokers, &topic, &n.to_string()]);
                    assert_eq!(line(&mut c).trim(), "ready");
                    // Timed like the others: from "go" until the watermarks say N (+1).
                    let start = Instant::now();
                    let mut stdin = c.stdin.take().expect("stdin");
                    writeln!(stdin, "go").expect("go");
                    drop(stdin);
                    let secs = wait_for(&watcher, &topic, n + 1, start).as_secs_f64();
                    cpu_note(variant, c.id());
                    let out = line(&mut c);
                    let _ = c.wait();
                    let kb: u64 = out
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    (secs, kb)
                }
                "tcp" | "relp" => {
                    let mut c = spawn_self(&["serve", &brokers, &topic]);
                    let ports = line(&mut c);
                    let mut it = ports
                        .split_whitespace()
                        .map(|p| p.parse::<u16>().expect("port"));
                    let (tcp, relp) = (it.next().expect("tcp"), it.next().expect("relp"));
                    let to = |p| SocketAddr::from(([127, 0, 0, 1], p));
                    warm_up(&watcher, &topic, to(tcp));
                    let start = Instant::now();
                    let sender = if *variant == "tcp" {
                        std::thread::spawn(move || send_tcp_conns(to(tcp), n))
                    } else {
                        std::thread::spawn(move || send_relp(to(relp), n))
                    };
                    let secs = wait_for(&watcher, &topic, n + 1, start).as_secs_f64();
                    let kb = peak_rss_kb(c.id());
                    cpu_note(variant, c.id());
                    drop(c.stdin.take());
                    let _ = sender.join();
                    let _ = c.wait();
                    (secs, kb)
                }
                _ => {
                    if !have_rsyslog {
                        continue;
                    }
                    let dir = tempfile::tempdir().expect("dir");
                    let Some((mut c, addr)) = rsyslog(&brokers, &topic, dir.path()) else {
                        eprintln!("rsyslog did not start");
                        continue;
                    };
                    warm_up(&watcher, &topic, addr);
                    let start = Instant::now();
                    let sender = std::thread::spawn(move || send_tcp_conns(addr, n));
                    let waited = try_wait_for(&watcher, &topic, n + 1, start);
                    let kb = peak_rss_kb(c.id());
                    cpu_note(variant, c.id());
                    let _ = c.kill();
                    let _ = c.wait();
                    let _ = sender.join();
                    match waited {
                        Ok(d) => (d.as_secs_f64(), kb),
                        Err(got) => {
                            // omkafka's "Queue full": it gives messages up (rsyslog#1052's
                            // kind of loss); syslogger waits instead.
                            let lost = (n + 1) as i64 - got;
                            eprintln!("round {round} rsyslog: lost {lost} of {n} messages");
                            rsyslog_lost.push(lost);
                            continue;
                        }
                    }
                }
            };
            let r = n as f64 / secs;
            eprintln!(
                "round {round} {variant}: {r:.0} msg/s, peak RSS {} MiB",
                kb / 1024
            );
            rates.push(r);
            rss.push(kb);
            if let Some(this) = by_round.last_mut() {
                this.insert(*variant, r);
            }
        }
    }
    println!("messages={n} size={SIZE} rounds={rounds} partitions={PARTITIONS}");
    let mut medians = std::collections::HashMap::new();
    for (variant, rates, rss) in &mut results {
        if rates.is_empty() {
            println!("{variant}: skipped");
            continue;
        }
        let lo = rates.iter().copied().fold(f64::MAX, f64::min);
        let hi = rates.iter().copied().fold(0.0, f64::max);
        let m = median(rates);
        medians.insert(*variant, m);
        let peak = rss.iter().max().copied().unwrap_or(0);
        println!(
            "{variant}: median {m:.0} msg/s (range {lo:.0}-{hi:.0}), peak RSS {} MiB",
            peak / 1024
        );
    }
    if !rsyslog_lost.is_empty() {
        println!(
            "rsyslog lost messages in {} round(s) (omkafka: Local: Queue full): {rsyslog_lost:?}; those rounds are not in its figures",
            rsyslog_lost.len()
        );
    }
    let ratio = |a: &str, b: &str| match (medians.get(a), medians.get(b)) {
        (Some(x), Some(y)) => format!("{:.2}x", x / y),
        _ => "n/a".into(),
    };
    // The median of the per-round ratios (rounds where both ran).
    let paired = |a: &str, b: &str| {
        let mut v: Vec<f64> = by_round
            .iter()
            .filter_map(|r| Some(r.get(a)? / r.get(b)?))
            .collect();
        if v.is_empty() {
            "n/a".into()
        } else {
            format!("{:.2}x", median(&mut v))
        }
    };
    println!(
        "tcp/bare {} (target >= 0.7x), tcp/rsyslog {} (target >= 1.0x), relp/tcp {} (target >= 0.5x)",
        ratio("tcp", "bare"),
        ratio("tcp", "rsyslog"),
        ratio("relp", "tcp")
    );
    println!(
        "per-round ratios, median: tcp/bare {}, tcp/rsyslog {}, relp/tcp {}",
        paired("tcp", "bare"),
        paired("tcp", "rsyslog"),
        paired("relp", "tcp")
    );
}
