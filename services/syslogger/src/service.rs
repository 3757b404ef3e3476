//! The service: flags, listeners, the shutdown sequence, the spill.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_seq::ProducerConfig;
use lifecycle::CancellationToken;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::conn::{
    ConnConfig, ConnMetrics, Listener, Oversize, serve_relp, serve_stream, serve_udp,
};
use crate::error::{Error, Result};
use crate::format::Format;
use crate::forward::{
    Counts, DeadLetter, Metrics, Outgoing, Pipeline, SettleBatch, Settled, Shared,
};
use crate::framing::Framing;
use crate::parse::Parser;
use crate::route::{KeySpec, Template, sanitize_topic};
use crate::spill::{EnvelopeFile, read_envelopes, spill_files, write_spill};

/// The default `--max-frame`: 64 KiB.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;
/// The default `--max-in-flight-bytes`: 64 MiB.
pub const DEFAULT_IN_FLIGHT_BYTES: usize = 64 * 1024 * 1024;

/// The service's flags. With `service-lifecycle`'s parsing each is also read from
/// `SYSLOGGER_<FLAG>` and from the `--config` file.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Syslog over TCP (TLS with `--tls-cert`) on this address (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// RELP (rsyslog's omrelp) on this address (repeatable; TLS with `--tls-cert`).
    #[arg(long, value_name = "ADDR")]
    pub relp_listen: Vec<String>,
    /// Syslog over UDP on this address (repeatable). Lossy: datagrams that find the
    /// in-flight budget full are dropped and counted.
    #[arg(long, value_name = "ADDR")]
    pub udp_listen: Vec<String>,
    /// Kafka bootstrap servers (`host:port,...`).
    #[arg(long, value_name = "LIST")]
    pub brokers: String,
    /// The topic: a template over parsed fields (`syslog-{appname}`; fields `host`,
    /// `appname`, `procid`, `msgid`, `facility`, `severity`, `protocol`).
    #[arg(long, value_name = "TEMPLATE", default_value = "syslog")]
    pub topic: String,
    /// The topic of a message missing a field the `--topic` template uses (or whose
    /// rendered name is not a legal topic).
    #[arg(long, value_name = "TOPIC", default_value = "syslog")]
    pub topic_fallback: String,
    /// The message key: `none`, `host`, `appname` or a template. Keyed messages of one key
    /// keep their order.
    #[arg(long, value_name = "KEY", default_value = "host")]
    pub key: String,
    /// The payload: `raw` (the frame's bytes), `json` (every field) or `original` (the Go
    /// syslogger's JSON object).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = Format::Raw)]
    pub format: Format,
    /// TCP framing: `auto` (octet counting when a frame starts with `LEN <`, LF
    /// otherwise), `octet` or `lf`.
    #[arg(long, value_name = "FRAMING", value_enum, default_value_t = Framing::Auto)]
    pub framing: Framing,
    /// The longest frame in bytes; longer ones are truncated or dead-lettered
    /// (`--oversize`), always counted.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME)]
    pub max_frame: usize,
    /// What an oversized frame becomes: `truncate` (its head is forwarded) or
    /// `dead-letter` (its head goes to `--dead-letter`).
    #[arg(long, value_name = "ACTION", value_enum, default_value_t = Oversize::Truncate)]
    pub oversize: Oversize,
    /// Adds the parsed fields as Kafka headers (`syslog.host`, `syslog.appname`, ...).
    #[arg(long)]
    pub headers: bool,
    /// Where messages Kafka refuses for good go (too large, unknown topic, not authorised):
    /// a topic, or `file:///PATH` (a Baldr file of envelopes with the reason).
    #[arg(long, value_name = "TOPIC|file:///PATH")]
    pub dead_letter: Option<String>,
    /// Directory of spill files: what was not delivered by the shutdown deadline is written
    /// there, and sent first by the next start.
    #[arg(long, value_name = "DIR")]
    pub spill_dir: Option<PathBuf>,
    /// The IANA time zone of RFC 3164 timestamps (which carry none).
    #[arg(long, value_name = "TZ", default_value = "UTC")]
    pub timezone: String,
    /// Any librdkafka producer property (`-X compression.type=zstd`, repeatable).
    /// `message.timeout.ms` defaults to 0: messages never expire in the producer;
    /// `linger.ms` defaults to 2 (RELP answers wait for Kafka: the linger is their latency).
    #[arg(short = 'X', long = "kafka-property", value_name = "KEY=VALUE")]
    pub kafka_properties: Vec<String>,
    /// Bytes of messages received and not yet acknowledged by Kafka, across connections;
    /// when reached, sockets are not read (TCP and RELP clients are pushed back).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_IN_FLIGHT_BYTES)]
    pub max_in_flight_bytes: usize,
    /// Messages in flight to Kafka at most (the producer's bound).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_in_flight: usize,
    /// TLS certificate chain (PEM) for the TCP and RELP listeners.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by a CA in this PEM file.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// After SIGTERM: how long connections are still read, until their clients close.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = lifecycle::duration::non_negative)]
    pub read_grace: Duration,
    /// The whole shutdown's budget: deliveries are awaited until 80% of it (at least 1 s
    /// before its end), then the rest is spilled. The binary sets it to `--drain-timeout`.
    #[arg(skip = Duration::from_secs(30))]
    pub drain_timeout: Duration,
}

impl Default for Args {
    /// The flags' defaults, with no listener and no brokers (set them).
    fn default() -> Args {
        Args {
            listen: Vec::new(),
            relp_listen: Vec::new(),
            udp_listen: Vec::new(),
            brokers: String::new(),
            topic: "syslog".into(),
            topic_fallback: "syslog".into(),
            key: "host".into(),
            format: Format::Raw,
            framing: Framing::Auto,
            max_frame: DEFAULT_MAX_FRAME,
            oversize: Oversize::Truncate,
            headers: false,
            dead_letter: None,
            spill_dir: None,
            timezone: "UTC".into(),
            kafka_properties: Vec::new(),
            max_in_flight_bytes: DEFAULT_IN_FLIGHT_BYTES,
            max_in_flight: 100_000,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            read_grace: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// What a run did. Every received message is delivered, dead-lettered, refused (no
/// dead-letter destination) or spilled.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Messages received (UDP datagrams dropped at the door not included).
    pub received: u64,
    /// Acknowledged by Kafka.
    pub delivered: u64,
    /// Sent to the dead-letter destination.
    pub dead_lettered: u64,
    /// Refused by Kafka with no dead-letter destination configured (logged).
    pub refused: u64,
    /// Not delivered by the shutdown deadline: written to the spill file (or lost, without
    /// `--spill-dir`).
    pub spilled: u64,
    /// UDP datagrams dropped because the in-flight budget was full.
    pub udp_dropped: u64,
    /// Messages of earlier spill files sent again at start.
    pub replayed: u64,
    /// The spill file written, if any.
    pub spill_file: Option<PathBuf>,
}

impl Outcome {
    /// Whether every received message was delivered or dead-lettered.
    pub fn succeeded(&self) -> bool {
        self.spilled == 0 && self.refused == 0
    }
}

/// Describes the service's metrics (once per process is enough).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "syslogger_connections_total",
        "Connections accepted, per listener."
    );
    describe_gauge!(
        "syslogger_connections_open",
        "Connections open now, per listener."
    );
    describe_counter!(
        "syslogger_frames_total",
        "Syslog frames (messages) received, per listener."
    );
    describe_counter!(
        "syslogger_received_bytes_total",
        "Bytes read from clients, per listener."
    );
    describe_counter!(
        "syslogger_parse_failures_total",
        "Messages that are not RFC 5424 or RFC 3164 syslog (forwarded raw)."
    );
    describe_counter!(
        "syslogger_oversize_frames_total",
        "Frames longer than --max-frame (truncated or dead-lettered)."
    );
    describe_counter!(
        "syslogger_framing_errors_total",
        "Frames without an octet count under --framing octet, and RELP protocol errors."
    );
    describe_counter!(
        "syslogger_udp_dropped_total",
        "UDP datagrams dropped because the in-flight budget was full."
    );
    describe_counter!(
        "syslogger_delivered_total",
        "Messages acknowledged by Kafka."
    );
    describe_counter!(
        "syslogger_dead_lettered_total",
        "Messages Kafka refused for good, sent to the dead-letter destination."
    );
    describe_counter!(
        "syslogger_refused_total",
        "Messages Kafka refused for good with no dead-letter destination (logged)."
    );
    describe_counter!(
        "syslogger_delivery_retries_total",
        "Messages produced again after a transient delivery failure."
    );
    describe_counter!(
        "syslogger_spilled_total",
        "Messages not delivered by the shutdown deadline, written to the spill file."
    );
    describe_counter!(
        "syslogger_replayed_total",
        "Messages of spill files sent again at start."
    );
    describe_gauge!(
        "syslogger_in_flight_bytes",
        "Bytes of messages received and not yet settled (the budget is --max-in-flight-bytes)."
    );
    describe_gauge!(
        "syslogger_in_flight",
        "Messages received and not yet settled."
    );
    describe_histogram!(
        "syslogger_delivery_seconds",
        "From a message's receipt to Kafka's acknowledgement."
    );
}

fn flag(flag: &'static str, value: &str, message: impl Into<String>) -> Error {
    Error::Flag {
        flag,
        value: value.to_string(),
        message: message.into(),
    }
}

/// Everything checked before anything is bound or connected.
struct Checked {
    pipeline: Pipeline,
    properties: Vec<(String, String)>,
    dead_letter: Option<DeadLetterSpec>,
    tls: Option<TlsAcceptor>,
}

enum DeadLetterSpec {
    Topic(String),
    File(PathBuf),
}

fn check(args: &Args) -> Result<Checked> {
    if args.listen.is_empty() && args.relp_listen.is_empty() && args.udp_listen.is_empty() {
        return Err(flag(
            "listen",
            "",
            "give at least one of --listen, --relp-listen, --udp-listen",
        ));
    }
    if args.brokers.trim().is_empty() {
        return Err(flag(
            "brokers",
            &args.brokers,
            "give the Kafka bootstrap servers",
        ));
    }
    if args.max_frame == 0 || args.max_frame > 64 * 1024 * 1024 {
        return Err(flag(
            "max-frame",
            &args.max_frame.to_string(),
            "between 1 and 64 MiB",
        ));
    }
    if args.max_in_flight_bytes < args.max_frame || u32::try_from(args.max_in_flight_bytes).is_err()
    {
        return Err(flag(
            "max-in-flight-bytes",
            &args.max_in_flight_bytes.to_string(),
            "at least --max-frame and below 4 GiB",
        ));
    }
    let zone: chrono_tz::Tz = args
        .timezone
        .parse()
        .map_err(|e| flag("timezone", &args.timezone, format!("{e}")))?;
    let topic = Template::parse(&args.topic).map_err(|e| flag("topic", &args.topic, e))?;
    let mut fallback = args.topic_fallback.clone();
    if !sanitize_topic(&mut fallback) || fallback != args.topic_fallback {
        return Err(flag(
            "topic-fallback",
            &args.topic_fallback,
            "not a legal Kafka topic name (letters, digits, . _ -, at most 249)",
        ));
    }
    if let Some(t) = topic.as_static() {
        let mut s = t.to_string();
        if !sanitize_topic(&mut s) || s != t {
            return Err(flag("topic", &args.topic, "not a legal Kafka topic name"));
        }
    }
    let key = KeySpec::parse(&args.key).map_err(|e| flag("key", &args.key, e))?;
    let properties = args
        .kafka_properties
        .iter()
        .map(|p| kafka_seq::parse_property(p).map_err(|e| flag("kafka-property", p, e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    let dead_letter = match args.dead_letter.as_deref() {
        None | Some("") => None,
        Some(d) => match d.strip_prefix("file://") {
            Some(path) if path.starts_with('/') => Some(DeadLetterSpec::File(PathBuf::from(path))),
            Some(_) => return Err(flag("dead-letter", d, "a file is file:///ABSOLUTE/PATH")),
            None => {
                let mut s = d.to_string();
                if !sanitize_topic(&mut s) || s != d {
                    return Err(flag("dead-letter", d, "not a legal Kafka topic name"));
                }
                Some(DeadLetterSpec::Topic(d.to_string()))
            }
        },
    };
    if args.oversize == Oversize::DeadLetter && dead_letter.is_none() {
        return Err(flag("oversize", "dead-letter", "needs --dead-letter"));
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(crate::tls::acceptor(c, k, args.tls_client_ca.as_deref())?),
        _ => None,
    };
    Ok(Checked {
        pipeline: Pipeline {
            parser: Parser::new(zone),
            format: args.format,
            static_topic: topic.as_static().map(Arc::from),
            topic,
            topic_fallback: fallback.into(),
            key,
            headers: args.headers,
        },
        properties,
        dead_letter,
        tls,
    })
}

async fn bind_tcp(addrs: &[String], what: &'static str) -> Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for a in addrs {
        let l = TcpListener::bind(a.as_str())
            .await
            .map_err(|source| Error::Listen {
                what,
                addr: a.clone(),
                source,
            })?;
        out.push(l);
    }
    Ok(out)
}

/// The addresses a running service listens on (useful with port 0).
#[derive(Debug, Clone, Default)]
pub struct Bound {
    /// `--listen`.
    pub tcp: Vec<SocketAddr>,
    /// `--relp-listen`.
    pub relp: Vec<SocketAddr>,
    /// `--udp-listen`.
    pub udp: Vec<SocketAddr>,
}

/// Runs the service until `stop` fires, then shuts down: stops accepting, reads what
/// clients already sent (until they close or `--read-grace` ends; RELP sessions stop at
/// once and answer what they took), waits for every delivery until the deadline, and
/// writes what is left to a spill file.
///
/// # Errors
/// Bad flags, TLS files or unbindable addresses ([`Error::is_config`]); a spill file that
/// cannot be read at start or written at the end.
pub async fn run(args: Args, stop: CancellationToken) -> Result<Outcome> {
    run_with(args, stop, |_| {}).await
}

/// [`run`], calling `bound` with the listening addresses once they are bound.
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    args: Args,
    stop: CancellationToken,
    bound: impl FnOnce(&Bound),
) -> Result<Outcome> {
    describe_metrics();
    let checked = check(&args)?;
    let has = |k: &str| checked.properties.iter().any(|(p, _)| p == k);
    let mut pc = ProducerConfig::new(args.brokers.clone())
        .max_in_flight(args.max_in_flight)
        .flush_timeout(Duration::from_secs(5));
    if !has("message.timeout.ms") && !has("delivery.timeout.ms") {
        // Never expire a message inside the producer: during an outage reading pauses.
        pc = pc.set("message.timeout.ms", "0");
    }
    if !has("linger.ms") && !has("queue.buffering.max.ms") {
        // RELP clients wait for answers sent after Kafka's acknowledgement: the linger is
        // latency every window pays (4096 transactions per 5 ms cap a session near
        // 560k msg/s; 2 ms doubles that, with the same TCP throughput: benches/README.md).
        pc = pc.set("linger.ms", "2");
    }
    let producer = pc.set_all(checked.properties.clone()).create()?;
    let dead_letter = match checked.dead_letter {
        None => DeadLetter::None,
        Some(DeadLetterSpec::Topic(t)) => DeadLetter::Topic(t),
        Some(DeadLetterSpec::File(p)) => DeadLetter::File(Arc::new(Mutex::new(
            EnvelopeFile::open(&p).map_err(|e| match e {
                Error::File { path, source } => Error::Flag {
                    flag: "dead-letter",
                    value: path.display().to_string(),
                    message: source.to_string(),
                },
                e => e,
            })?,
        ))),
    };
    let tcp = bind_tcp(&args.listen, "tcp").await?;
    let relp = bind_tcp(&args.relp_listen, "relp").await?;
    let mut udp = Vec::new();
    for a in &args.udp_listen {
        udp.push(
            UdpSocket::bind(a.as_str())
                .await
                .map_err(|source| Error::Listen {
                    what: "udp",
                    addr: a.clone(),
                    source,
                })?,
        );
    }
    let spills = match &args.spill_dir {
        Some(d) => spill_files(d)?,
        None => Vec::new(),
    };
    let shared = Arc::new(Shared {
        producer: producer.clone(),
        budget: Arc::new(Semaphore::new(args.max_in_flight_bytes)),
        budget_bytes: args.max_in_flight_bytes,
        pipeline: checked.pipeline,
        dead_letter,
        counts: Counts::default(),
        metrics: Metrics::new(),
        deadline: CancellationToken::new(),
        deadline_passed: Default::default(),
        spill: Mutex::new(Vec::new()),
    });
    let stop_reading = CancellationToken::new();
    let base = |l: Listener| ConnConfig {
        shared: shared.clone(),
        framing: args.framing,
        max_frame: args.max_frame,
        oversize: args.oversize,
        metrics: ConnMetrics::new(l),
        stop_reading: stop_reading.clone(),
        stop: stop.clone(),
    };
    let addrs = Bound {
        tcp: tcp.iter().filter_map(|l| l.local_addr().ok()).collect(),
        relp: relp.iter().filter_map(|l| l.local_addr().ok()).collect(),
        udp: udp.iter().filter_map(|l| l.local_addr().ok()).collect(),
    };

    // The spill of the last run goes first.
    let tracker = TaskTracker::new();
    let mut replayed = 0u64;
    let mut replay = None;
    if !spills.is_empty() {
        let mut envelopes = Vec::new();
        for f in &spills {
            envelopes.extend(read_envelopes(f)?);
        }
        replayed = envelopes.len() as u64;
        tracing::info!(
            files = spills.len(),
            messages = replayed,
            "sending the spill of the last run first"
        );
        metrics::counter!("syslogger_replayed_total").increment(replayed);
        let shared = shared.clone();
        let files = spills.clone();
        replay = Some(tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
            let settler = {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let mut all_settled = true;
                    let mut deadline = std::pin::pin!(shared.deadline.clone().cancelled_owned());
                    while let Some(s) = rx.recv().await {
                        let mut batch = SettleBatch::default();
                        all_settled &= shared.settle(s, None, deadline.as_mut(), &mut batch).await
                            != Settled::Spilled;
                        shared.release(batch.released);
                    }
                    all_settled
                })
            };
            for e in envelopes {
                shared.counts.received.fetch_add(1, Ordering::Relaxed);
                let s = shared.submit(Outgoing::from_envelope(e), None).await;
                if tx.send(s).await.is_err() {
                    break;
                }
            }
            drop(tx);
            let all_settled = settler.await.unwrap_or(false);
            if all_settled {
                for f in &files {
                    if let Err(e) = std::fs::remove_file(f) {
                        tracing::warn!(file = %f.display(), error = %e, "cannot remove a replayed spill file");
                    }
                }
                tracing::info!("the spill of the last run is delivered");
            }
            all_settled
        }));
    }

    let mut accepters = Vec::new();
    let tls = checked.tls.is_some();
    let streams = tcp
        .into_iter()
        .map(|l| (l, if tls { Listener::Tls } else { Listener::Tcp }))
        .chain(relp.into_iter().map(|l| {
            (
                l,
                if tls {
                    Listener::RelpTls
                } else {
                    Listener::Relp
                },
            )
        }));
    for (l, kind) in streams {
        accepters.push(tokio::spawn(accept(
            l,
            kind,
            checked.tls.clone(),
            base(kind),
            tracker.clone(),
            stop.clone(),
        )));
    }
    for s in udp {
        tracker.spawn(serve_udp(base(Listener::Udp), s));
    }
    // The in-flight gauges, from the budget and the counts (not updated per message).
    let gauges = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let bytes = metrics::gauge!("syslogger_in_flight_bytes");
            let messages = metrics::gauge!("syslogger_in_flight");
            loop {
                let c = &shared.counts;
                let settled = c.delivered.load(Ordering::Relaxed)
                    + c.dead_lettered.load(Ordering::Relaxed)
                    + c.refused.load(Ordering::Relaxed)
                    + c.spilled.load(Ordering::Relaxed);
                let held = shared
                    .budget_bytes
                    .saturating_sub(shared.budget.available_permits());
                bytes.set(held as f64);
                messages.set(c.received.load(Ordering::Relaxed).saturating_sub(settled) as f64);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    tracing::info!(tcp = ?addrs.tcp, relp = ?addrs.relp, udp = ?addrs.udp, tls = checked.tls.is_some(), brokers = %args.brokers, "syslogger listening");
    bound(&addrs);

    stop.cancelled().await;
    // Shutdown: stop accepting; read until clients close or the grace ends; deliver until
    // the deadline; spill the rest.
    let drain = args.drain_timeout;
    let deadline = drain.saturating_sub((drain / 5).max(Duration::from_secs(1)));
    let grace = args.read_grace.min(deadline);
    tracing::info!(read_grace = ?grace, delivery_deadline = ?deadline, "stopping: no new connections");
    for a in accepters {
        let _ = a.await;
    }
    tracker.close();
    let timers = {
        let (stop_reading, shared) = (stop_reading.clone(), shared.clone());
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            stop_reading.cancel();
            tokio::time::sleep(deadline.saturating_sub(grace)).await;
            shared.pass_deadline();
        })
    };
    tracker.wait().await;
    let replay_done = match replay {
        Some(r) => r.await.unwrap_or(false),
        None => true,
    };
    timers.abort();
    gauges.abort();

    let counts = &shared.counts;
    let spilled: Vec<_> =
        std::mem::take(&mut *shared.spill.lock().unwrap_or_else(|e| e.into_inner()));
    let mut outcome = Outcome {
        received: counts.received.load(Ordering::Relaxed),
        delivered: counts.delivered.load(Ordering::Relaxed),
        dead_lettered: counts.dead_lettered.load(Ordering::Relaxed),
        refused: counts.refused.load(Ordering::Relaxed),
        spilled: counts.spilled.load(Ordering::Relaxed),
        udp_dropped: counts.udp_dropped.load(Ordering::Relaxed),
        replayed,
        spill_file: None,
    };
    if !spilled.is_empty() {
        match &args.spill_dir {
            Some(dir) => {
                let dir = dir.clone();
                let path = tokio::task::spawn_blocking(move || write_spill(&dir, &spilled))
                    .await
                    .map_err(|e| Error::File {
                        path: args.spill_dir.clone().unwrap_or_default(),
                        source: std::io::Error::other(e),
                    })??;
                tracing::error!(messages = outcome.spilled, file = %path.display(), "not delivered by the deadline: spilled; the next start sends them first");
                outcome.spill_file = Some(path);
            }
            None => {
                tracing::error!(
                    messages = outcome.spilled,
                    "not delivered by the deadline and there is no --spill-dir: these messages are lost"
                );
            }
        }
    }
    // Replayed spill files not removed yet: what of them was not delivered is in the new
    // spill now.
    if !replay_done {
        for f in &spills {
            let _ = std::fs::remove_file(f);
        }
    }
    // Dropping the producer purges what librdkafka still holds (everything was settled or
    // spilled); bound it all the same.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || drop(producer)),
    )
    .await;
    drop(shared);
    tracing::info!(
        received = outcome.received,
        delivered = outcome.delivered,
        dead_lettered = outcome.dead_lettered,
        refused = outcome.refused,
        spilled = outcome.spilled,
        udp_dropped = outcome.udp_dropped,
        "syslogger stopped"
    );
    Ok(outcome)
}

/// Accepts connections until `stop`; each runs as a task of `tracker`.
async fn accept(
    listener: TcpListener,
    kind: Listener,
    tls: Option<TlsAcceptor>,
    cfg: ConnConfig,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let label = kind.as_str();
    let accepted = metrics::counter!("syslogger_connections_total", "listener" => label);
    let open = metrics::gauge!("syslogger_connections_open", "listener" => label);
    let relp = matches!(kind, Listener::Relp | Listener::RelpTls);
    loop {
        let (sock, peer) = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little.
                    tracing::warn!(listener = label, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = sock.set_nodelay(true);
        accepted.increment(1);
        let (cfg, tls, open) = (cfg.clone(), tls.clone(), open.clone());
        tracker.spawn(async move {
            open.increment(1.0);
            tracing::debug!(listener = label, %peer, "connection");
            match tls {
                None => {
                    let (r, w) = sock.into_split();
                    if relp {
                        serve_relp(cfg, r, w, peer).await;
                    } else {
                        serve_stream(cfg, r, w, peer).await;
                    }
                }
                Some(tls) => {
                    match tokio::time::timeout(Duration::from_secs(10), tls.accept(sock)).await {
                        Ok(Ok(s)) => {
                            let (r, w) = tokio::io::split(s);
                            if relp {
                                serve_relp(cfg, r, w, peer).await;
                            } else {
                                serve_stream(cfg, r, w, peer).await;
                            }
                        }
                        Ok(Err(e)) => tracing::warn!(listener = label, %peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::warn!(listener = label, %peer, "TLS handshake timed out"),
                    }
                }
            }
            open.decrement(1.0);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_what_the_flags_default_to() {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: Args,
        }
        let parsed = <P as clap::Parser>::try_parse_from(["s", "--brokers="])
            .unwrap()
            .a;
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Args::default()));
    }

    #[test]
    fn bad_flags_are_config_errors() {
        let base = || Args {
            listen: vec!["127.0.0.1:0".into()],
            brokers: "127.0.0.1:9".into(),
            ..Args::default()
        };
        let e = |a: Args| check(&a).err().unwrap();
        assert!(
            e(Args {
                listen: vec![],
                ..base()
            })
            .to_string()
            .contains("--listen")
        );
        assert!(
            e(Args {
                timezone: "Mars/Olympus".into(),
                ..base()
            })
            .to_string()
            .contains("--timezone")
        );
        assert!(
            e(Args {
                topic: "syslog-{nope}".into(),
                ..base()
            })
            .to_string()
            .contains("--topic")
        );
        assert!(
            e(Args {
                topic: "bad topic".into(),
                ..base()
            })
            .to_string()
            .contains("--topic")
        );
        assert!(
            e(Args {
                kafka_properties: vec!["x".into()],
                ..base()
            })
            .to_string()
            .contains("--kafka-property")
        );
        assert!(
            e(Args {
                dead_letter: Some("file://rel".into()),
                ..base()
            })
            .to_string()
            .contains("--dead-letter")
        );
        assert!(
            e(Args {
                oversize: Oversize::DeadLetter,
                ..base()
            })
            .to_string()
            .contains("--oversize")
        );
        assert!(
            e(Args {
                max_in_flight_bytes: 10,
                ..base()
            })
            .is_config()
        );
        assert!(check(&base()).is_ok());
    }
}
