//! The `syslogger` binary's contract: exit codes and configuration.

use std::process::Command;

fn syslogger() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_syslogger"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SYSLOGGER_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    c
}

#[test]
fn bad_configuration_exits_2() {
    for args in [
        vec!["--brokers", "127.0.0.1:9"],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--brokers",
            "127.0.0.1:9",
            "--timezone",
            "Mars/Olympus",
        ],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--brokers",
            "127.0.0.1:9",
            "--topic",
            "x-{nope}",
        ],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--brokers",
            "127.0.0.1:9",
            "-X",
            "novalue",
        ],
        vec!["--listen", "256.0.0.1:0", "--brokers", "127.0.0.1:9"],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--brokers",
            "127.0.0.1:9",
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            "/nonexistent.key",
        ],
    ] {
        let out = syslogger().args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn flags_come_from_variables_too() {
    let out = syslogger()
        .env("SYSLOGGER_LISTEN", "127.0.0.1:0")
        .env("SYSLOGGER_BROKERS", "127.0.0.1:9")
        .env("SYSLOGGER_TIMEZONE", "Nowhere/Land")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--timezone") && err.contains("Nowhere/Land"),
        "{err}"
    );
}

#[path = "../../services/syslogger/tests/common/mod.rs"]
mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Relp, WAIT, read};
use test_services::kafka::KafkaCluster;
use test_services::unique_name;
use tokio::io::AsyncWriteExt;

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Starts the binary; returns it once `addr` accepts connections.
async fn spawn(args: &[&str], addr: SocketAddr) -> tokio::process::Child {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_syslogger"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SYSLOGGER_") {
            c.env_remove(k);
        }
    }
    let child = c
        .args(args)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let end = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < end, "syslogger did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().unwrap().to_string();
    let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
    assert!(ok.success());
}

/// SIGTERM in the middle of a load: the service stops accepting, reads what the clients
/// send until they close, delivers it all, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_the_middle_of_a_load_loses_nothing() {
    const CONNECTIONS: usize = 4;
    const PER: usize = 20_000;
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let topic = unique_name("sigterm-");
    cluster.create_topic(&topic, 2);
    let addr = free_port();
    let listen = addr.to_string();
    let mut child = spawn(
        &[
            "--listen",
            &listen,
            "--brokers",
            &brokers,
            "--topic",
            &topic,
            "--read-grace",
            "20s",
            "--drain-timeout",
            "40s",
        ],
        addr,
    )
    .await;
    let mut clients = Vec::new();
    for c in 0..CONNECTIONS {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        clients.push(tokio::spawn(async move {
            for i in 0..PER {
                let line = format!("<13>Oct 11 22:14:15 host{c} app: seq={i}\n");
                s.write_all(line.as_bytes()).await.unwrap();
                if i % 1000 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            s.shutdown().await.unwrap();
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&child, "-TERM");
    for c in clients {
        tokio::time::timeout(WAIT, c).await.unwrap().unwrap();
    }
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "every received message was delivered"
    );
    let got = read(&brokers, &topic, 2, CONNECTIONS * PER, WAIT).await;
    let mut next: HashMap<String, usize> = HashMap::new();
    for g in &got {
        let text = g.text();
        let host = text.split(' ').nth(3).unwrap().to_string();
        let seq: usize = text.rsplit("seq=").next().unwrap().parse().unwrap();
        let want = next.entry(host.clone()).or_insert(0);
        assert_eq!(seq, *want, "{host}: in order, nothing missing");
        *want += 1;
    }
    assert_eq!(got.len(), CONNECTIONS * PER);
}

/// SIGTERM, then the exit code (bounded by [`WAIT`]).
async fn terminate(child: &mut tokio::process::Child) -> Option<i32> {
    signal(child, "-TERM");
    tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap()
        .code()
}

/// A one-partition topic on its own cluster, and the binary's flags to take RELP for it on
/// a free port.
struct RelpBehind {
    _cluster: KafkaCluster,
    brokers: String,
    topic: String,
    addr: SocketAddr,
    relp: String,
}

impl RelpBehind {
    async fn start(prefix: &str) -> RelpBehind {
        let cluster = KafkaCluster::start(1);
        let brokers = cluster.bootstrap_servers().to_string();
        let topic = unique_name(prefix);
        cluster.create_topic(&topic, 1);
        let addr = free_port();
        RelpBehind {
            _cluster: cluster,
            brokers,
            topic,
            addr,
            relp: addr.to_string(),
        }
    }

    fn argv(&self) -> [&str; 6] {
        [
            "--relp-listen",
            &self.relp,
            "--brokers",
            &self.brokers,
            "--topic",
            &self.topic,
        ]
    }
}

/// kill -9 of syslogger behind RELP: the client sends again what was not answered (as
/// omrelp does) to the restarted service; every message is in Kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_behind_relp_loses_nothing() {
    const N: usize = 5_000;
    const WINDOW: usize = 128;
    let r = RelpBehind::start("kill9-").await;
    let (brokers, topic, addr) = (&r.brokers, &r.topic, r.addr);
    let mut child = spawn(&r.argv(), addr).await;
    let msg = |i: usize| format!("<13>Oct 11 22:14:15 h app: seq={i}");
    // What was sent and not answered, by transaction number.
    let mut unacked: std::collections::BTreeMap<u64, usize> = Default::default();
    let mut acked = BTreeSet::new();
    let mut next = 0;
    let mut killed = false;
    let mut client = Relp::connect(addr).await.unwrap();
    let end = Instant::now() + Duration::from_secs(120);
    while acked.len() < N {
        assert!(Instant::now() < end, "bounded in time");
        if !killed && acked.len() >= N / 3 {
            // Kill it hard with transactions in flight, and start it again.
            killed = true;
            signal(&child, "-KILL");
            let _ = child.wait().await;
            child = spawn(&r.argv(), addr).await;
        }
        let mut broken = false;
        while unacked.len() < WINDOW && next < N {
            match client.syslog(msg(next).as_bytes()).await {
                Ok(t) => {
                    unacked.insert(t, next);
                    next += 1;
                }
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        if !broken {
            match tokio::time::timeout(WAIT, client.response()).await.unwrap() {
                Ok(Some((t, rsp))) if rsp == "200 OK" => {
                    let i = unacked.remove(&t).expect("an answer to a sent transaction");
                    acked.insert(i);
                    continue;
                }
                _ => broken = true,
            }
        }
        if broken {
            // omrelp: reconnect and send every unanswered message again.
            let pending: Vec<usize> = std::mem::take(&mut unacked).into_values().collect();
            let end = Instant::now() + WAIT;
            client = loop {
                match Relp::connect(addr).await {
                    Ok(c) => break c,
                    Err(_) if Instant::now() < end => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => panic!("cannot reconnect: {e}"),
                }
            };
            for i in pending {
                let t = client.syslog(msg(i).as_bytes()).await.unwrap();
                unacked.insert(t, i);
            }
        }
    }
    assert!(killed);
    client.close().await.unwrap();
    assert_eq!(terminate(&mut child).await, Some(0));
    // At least once: every message, maybe some twice (answered by Kafka, not by the
    // killed process).
    let got = read(brokers, topic, 1, N + 2 * WINDOW, Duration::from_secs(15)).await;
    let seen: BTreeSet<usize> = got
        .iter()
        .map(|g| g.text().rsplit("seq=").next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(seen.len(), N, "every message is in Kafka");
    assert!(
        got.len() <= N + 2 * WINDOW,
        "duplicates only from the unanswered window"
    );
}

/// kill -9 of syslogger behind a real client, rsyslog's omrelp: rsyslog keeps what was not
/// answered and sends it again to the restarted service; every message is in Kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_behind_rsyslog_omrelp_loses_nothing() {
    if !common::have_rsyslog("kill_9_behind_rsyslog_omrelp_loses_nothing") {
        return;
    }
    const N: usize = 3_000;
    let rb = RelpBehind::start("kill9-rsyslog-").await;
    let (brokers, topic, addr) = (&rb.brokers, &rb.topic, rb.addr);
    let mut child = spawn(&rb.argv(), addr).await;
    let dir = tempfile::tempdir().unwrap();
    // Retried forever, once a second, from an in-memory action queue.
    let r = common::rsyslog(
        dir.path(),
        "",
        &format!(
            r#"action(type="omrelp" target="127.0.0.1" port="{}" action.resumeRetryCount="-1" action.resumeInterval="1" queue.type="LinkedList" queue.size="100000")"#,
            addr.port()
        ),
    )
    .await;
    let input = r.input;
    // The writer logs a third, lets the test kill syslogger while rsyslog is still
    // forwarding them (transactions unanswered), and logs the rest once it was restarted.
    let (third_tx, third_rx) = tokio::sync::oneshot::channel();
    let (restarted_tx, restarted_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(input).await.unwrap();
        let mut third = Some((third_tx, restarted_rx));
        for i in 0..N {
            s.write_all(format!("<13>Oct 11 22:14:15 h app: seq={i}\n").as_bytes())
                .await
                .unwrap();
            if i == N / 3
                && let Some((tx, restarted)) = third.take()
            {
                s.flush().await.unwrap();
                let _ = tx.send(());
                let _ = restarted.await;
            }
        }
        s.shutdown().await.unwrap();
    });
    let seq = |g: &common::Got| -> usize {
        g.text()
            .rsplit("seq=")
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let end = Instant::now() + Duration::from_secs(120);
    tokio::time::timeout(WAIT, third_rx).await.unwrap().unwrap();
    signal(&child, "-KILL");
    let _ = child.wait().await;
    child = spawn(&rb.argv(), addr).await;
    let _ = restarted_tx.send(());
    writer.await.unwrap();
    let mut seen = BTreeSet::new();
    let mut got = Vec::new();
    while seen.len() < N {
        assert!(
            Instant::now() < end,
            "every message within the time limit: {} of {N}",
            seen.len()
        );
        got = read(brokers, topic, 1, 2 * N, Duration::from_secs(2)).await;
        seen = got.iter().map(seq).collect();
    }
    assert_eq!(
        seen,
        (0..N).collect::<BTreeSet<_>>(),
        "every message is in Kafka"
    );
    drop(r);
    assert_eq!(terminate(&mut child).await, Some(0));
    assert!(got.len() < 2 * N, "duplicates only from unanswered windows");
}

/// Kafka unreachable through the whole run: SIGTERM spills what was received to
/// `--spill-dir` and the exit status is 1, with the count in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_messages_are_spilled_and_the_exit_is_1() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let listen = addr.to_string();
    let spill = dir.path().to_str().unwrap();
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_syslogger"));
    let child = c
        .args([
            "--listen",
            &listen,
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--spill-dir",
            spill,
            "--read-grace",
            "500ms",
            "--drain-timeout",
            "3s",
        ])
        .env("RUST_LOG", "error")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let end = Instant::now() + WAIT;
    let mut s = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < end => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("syslogger did not start: {e}"),
        }
    };
    for i in 0..25 {
        s.write_all(format!("<13>Oct 11 22:14:15 h app: {i}\n").as_bytes())
            .await
            .unwrap();
    }
    s.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&child, "-TERM");
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("25 messages not delivered: 25 spilled"),
        "{log}"
    );
    let files = syslogger::spill_files(dir.path()).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(syslogger::read_envelopes(&files[0]).unwrap().len(), 25);
}
