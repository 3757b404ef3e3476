//! Test support: the service in-process on a mock cluster, reading topics back, a RELP
//! client.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(60);

/// A message read back from Kafka.
#[derive(Debug, Clone)]
pub struct Got {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, Vec<u8>>,
    /// The Kafka timestamp (ms since the Unix epoch), if any.
    pub timestamp: Option<i64>,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// Reads `topic` (all `partitions`) from the beginning until `n` messages came or `wait`
/// passed (blocking: call from `spawn_blocking`).
pub fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    n: usize,
    wait: Duration,
) -> Vec<Got> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "syslogger-tests")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    drop(tpl);
    let mut out = Vec::new();
    let end = Instant::now() + wait;
    while out.len() < n && Instant::now() < end {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            {
                let mut headers = HashMap::new();
                if let Some(h) = m.headers() {
                    for i in 0..h.count() {
                        let x = h.get(i);
                        headers.insert(x.key.to_string(), x.value.unwrap_or_default().to_vec());
                    }
                }
                out.push(Got {
                    partition: m.partition(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                    timestamp: m.timestamp().to_millis(),
                });
            }
        }
    }
    out
}

/// [`read_topic`] from async code.
pub async fn read(
    brokers: &str,
    topic: &str,
    partitions: i32,
    n: usize,
    wait: Duration,
) -> Vec<Got> {
    let (b, t) = (brokers.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || read_topic(&b, &t, partitions, n, wait))
        .await
        .unwrap()
}

/// The service running in-process.
pub struct Running {
    pub bound: syslogger::Bound,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<syslogger::Result<syslogger::Outcome>>,
}

impl Running {
    pub fn tcp(&self) -> SocketAddr {
        self.bound.tcp[0]
    }
    pub fn relp(&self) -> SocketAddr {
        self.bound.relp[0]
    }

    /// Stops it and returns the outcome.
    pub async fn stop(self) -> syslogger::Outcome {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("stops in time")
            .unwrap()
            .unwrap()
    }
}

/// Starts the service with `args`, listening where they say (use port 0).
pub async fn start(args: syslogger::Args) -> Running {
    let stop = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(syslogger::run_with(args, stop.clone(), move |b| {
        let _ = tx.send(b.clone());
    }));
    let bound = match tokio::time::timeout(WAIT, rx).await {
        Ok(Ok(b)) => b,
        _ => panic!("the service did not start: {:?}", task.await),
    };
    Running { bound, stop, task }
}

pub fn args(brokers: &str, topic: &str) -> syslogger::Args {
    syslogger::Args {
        listen: vec!["127.0.0.1:0".into()],
        relp_listen: vec!["127.0.0.1:0".into()],
        brokers: brokers.into(),
        topic: topic.into(),
        read_grace: Duration::from_millis(500),
        drain_timeout: Duration::from_secs(20),
        ..Default::default()
    }
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A RELP client as omrelp behaves: open, syslog transactions, close.
pub struct Relp {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    next: u64,
}

impl Relp {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Relp> {
        let s = TcpStream::connect(addr).await?;
        let (r, w) = s.into_split();
        let mut c = Relp {
            reader: BufReader::new(r),
            writer: w,
            next: 1,
        };
        let offers = "relp_version=0\nrelp_software=test\ncommands=syslog";
        c.send_cmd("open", offers.as_bytes()).await?;
        let (txnr, data) = c.response().await?.expect("an answer to open");
        assert_eq!(txnr, 1);
        assert!(data.starts_with("200 OK"), "{data}");
        assert!(data.contains("commands=syslog"), "{data}");
        Ok(c)
    }

    async fn send_cmd(&mut self, cmd: &str, data: &[u8]) -> std::io::Result<u64> {
        let txnr = self.next;
        self.next += 1;
        let mut f = format!("{txnr} {cmd} {}", data.len()).into_bytes();
        if !data.is_empty() {
            f.push(b' ');
            f.extend_from_slice(data);
        }
        f.push(b'\n');
        self.writer.write_all(&f).await?;
        Ok(txnr)
    }

    /// Sends one syslog message; returns its transaction number.
    pub async fn syslog(&mut self, msg: &[u8]) -> std::io::Result<u64> {
        self.send_cmd("syslog", msg).await
    }

    /// The next frame from the server: `(txnr, data)` of an `rsp` (`None` at EOF;
    /// `serverclose` gives txnr 0 and `serverclose`).
    pub async fn response(&mut self) -> std::io::Result<Option<(u64, String)>> {
        let mut head = Vec::new();
        // TXNR SP
        if self.reader.read_until(b' ', &mut head).await? == 0 {
            return Ok(None);
        }
        let txnr: u64 = String::from_utf8_lossy(&head).trim().parse().unwrap();
        head.clear();
        self.reader.read_until(b' ', &mut head).await?;
        let cmd = String::from_utf8_lossy(&head).trim().to_string();
        head.clear();
        // DATALEN then SP or LF
        let mut len = Vec::new();
        loop {
            let mut b = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut self.reader, &mut b).await?;
            if b[0] == b' ' || b[0] == b'\n' {
                let n: usize = String::from_utf8_lossy(&len).parse().unwrap();
                if b[0] == b'\n' {
                    return Ok(Some((txnr, cmd)));
                }
                let mut data = vec![0u8; n + 1];
                tokio::io::AsyncReadExt::read_exact(&mut self.reader, &mut data).await?;
                data.pop();
                let text = String::from_utf8_lossy(&data).into_owned();
                if cmd != "rsp" {
                    return Ok(Some((txnr, cmd)));
                }
                return Ok(Some((txnr, text)));
            }
            len.push(b[0]);
        }
    }

    pub async fn close(mut self) -> std::io::Result<()> {
        let txnr = self.send_cmd("close", b"").await?;
        while let Some((t, _)) = self.response().await? {
            if t == txnr {
                break;
            }
        }
        Ok(())
    }
}

/// Whether rsyslogd is installed; prints a `skipped` line when not (a failure under
/// `REQUIRE_SERVICES=1`).
pub fn have_rsyslog(test: &str) -> bool {
    let ok = std::process::Command::new("rsyslogd")
        .arg("-v")
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !test_services::services_required(),
            "{test}: rsyslogd is not installed and REQUIRE_SERVICES=1 (Debian: rsyslog rsyslog-relp rsyslog-gnutls)"
        );
        eprintln!(
            "skipped {test}: rsyslogd is not installed (Debian: rsyslog rsyslog-relp rsyslog-gnutls)"
        );
    }
    ok
}

/// A free loopback port.
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// rsyslogd in the foreground with `config` (its input is imtcp on the returned address),
/// killed when dropped.
pub struct Rsyslog {
    pub child: std::process::Child,
    pub input: SocketAddr,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn rsyslog(dir: &std::path::Path, globals: &str, actions: &str) -> Rsyslog {
    let input = free_port();
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let conf = dir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{work}" {globals})
module(load="imtcp")
module(load="omrelp")
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="forward")
ruleset(name="forward" queue.type="Direct") {{
{actions}
}}
"#,
            work = work.display(),
            port = input.port(),
        ),
    )
    .unwrap();
    let child = std::process::Command::new("rsyslogd")
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let r = Rsyslog { child, input };
    let end = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(input).await.is_err() {
        assert!(Instant::now() < end, "rsyslogd did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r
}
