//! The Riemann reporter: every interval, the registry's series as Riemann events.
//!
//! Over TCP each message is a 4-byte big-endian length then a protobuf [`proto::Msg`]; the
//! server answers with a `Msg` whose `ok` is true. Over UDP each datagram is one bare `Msg`
//! (no length, no answer) of at most [`UDP_MAX_DATAGRAM`] bytes.
//!
//! The reporter runs in its own task: the service only ever touches atomics. A report that
//! cannot be delivered (no connection, backoff, timeout, refusal) is dropped and counted in
//! `telemetry_riemann_reports_dropped_total`; nothing is queued, so memory stays bounded and
//! the next report carries the current values again (counters are cumulative).

pub mod proto;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};
use metrics::{Counter, Key};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, timeout};

use crate::Error;
use crate::histogram::HistogramSnapshot;
use crate::recorder::Recorder;
use proto::{Attribute, Event, Msg};

/// Largest datagram sent over UDP (Riemann's UDP server default `max-size`).
pub const UDP_MAX_DATAGRAM: usize = 16 * 1024;
/// Largest reply accepted from a Riemann server.
const MAX_REPLY: usize = 1024 * 1024;

/// Transport to the Riemann server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// TCP, acknowledged by the server (the default).
    #[default]
    Tcp,
    /// UDP: fire and forget, messages split into datagrams of at most [`UDP_MAX_DATAGRAM`] bytes.
    Udp,
}

/// Where and how to report to Riemann.
///
/// ```
/// use std::time::Duration;
/// let config = telemetry::RiemannConfig::new("riemann.example.com:5555")
///     .interval(Duration::from_secs(30))
///     .tag("production")
///     .prefix("eu1 ");
/// assert_eq!(config.effective_ttl(), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone)]
pub struct RiemannConfig {
    pub(crate) addr: String,
    pub(crate) interval: Duration,
    pub(crate) ttl: Option<Duration>,
    pub(crate) host: Option<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) transport: Transport,
    pub(crate) timeout: Duration,
    /// Delays between failed connection attempts (no jitter, no limit on attempts).
    pub(crate) backoff: ExponentialBuilder,
    /// The longest delay, used should the backoff ever run out.
    pub(crate) backoff_max: Duration,
}

/// `min`, doubled at each further failure up to `max` (at least `min`), as many times as needed.
fn reconnect_backoff(min: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(min)
        .with_max_delay(max.max(min))
        .with_factor(2.0)
        .without_max_times()
}

impl RiemannConfig {
    /// Reports to `addr` (`HOST:PORT`) every 10 s over TCP; events live twice the interval,
    /// carry the machine's hostname, no tags and no prefix.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            interval: Duration::from_secs(10),
            ttl: None,
            host: None,
            tags: Vec::new(),
            prefix: String::new(),
            transport: Transport::Tcp,
            timeout: Duration::from_secs(5),
            backoff: reconnect_backoff(Duration::from_millis(500), Duration::from_secs(30)),
            backoff_max: Duration::from_secs(30),
        }
    }

    /// Time between reports (default 10 s; zero is taken as 1 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long Riemann keeps each event (default: twice the interval).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The `host` of every event (default: this machine's hostname).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Adds a tag to every event.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds tags to every event.
    pub fn tags(mut self, tags: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Text put in front of every event's service (default empty), e.g. `"eu1 "`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// TCP (default) or UDP.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Limit for connecting, and for sending a report and reading the answer (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Wait after a failed connection attempt: `min`, doubled at each further failure up to
    /// `max` (default 0.5 s to 30 s). Reports due meanwhile are dropped.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = reconnect_backoff(min, max);
        self.backoff_max = max.max(min);
        self
    }

    /// The TTL events are sent with.
    pub fn effective_ttl(&self) -> Duration {
        self.ttl.unwrap_or(self.interval * 2)
    }

    /// Checks that the address has the form `HOST:PORT`.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = || Error::RiemannAddress {
            addr: self.addr.clone(),
        };
        let (host, port) = self.addr.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        Ok(())
    }
}

/// Builds the events of one report.
struct EventBuilder {
    service: String,
    host: String,
    tags: Vec<String>,
    ttl: f32,
    /// Histogram snapshots at the previous report, for interval statistics.
    previous: HashMap<Key, HistogramSnapshot>,
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl EventBuilder {
    fn new(config: &RiemannConfig, service: &str) -> Self {
        let host = config
            .host
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
        Self {
            service: format!("{}{}", config.prefix, service),
            host,
            tags: config.tags.clone(),
            ttl: config.effective_ttl().as_secs_f32(),
            previous: HashMap::new(),
        }
    }

    /// `<prefix><service> <name>{k=v,...}`
    fn series_name(&self, key: &Key) -> String {
        let mut s = format!("{} {}", self.service, key.name());
        if key.labels().len() > 0 {
            s.push('{');
            for (i, l) in key.labels().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(l.key());
                s.push('=');
                s.push_str(l.value());
            }
            s.push('}');
        }
        s
    }

    fn event(&self, recorder: &Recorder, key: &Key, service: String, micros: i64) -> Event {
        let description = recorder.description(key.name());
        let mut attributes: Vec<Attribute> = key
            .labels()
            .map(|l| Attribute {
                key: l.key().to_string(),
                value: Some(l.value().to_string()),
            })
            .collect();
        if let Some(unit) = description.as_ref().and_then(|d| d.unit) {
            attributes.push(Attribute {
                key: "unit".to_string(),
                value: Some(unit.as_str().to_string()),
            });
        }
        Event {
            time: Some(micros.div_euclid(1_000_000)),
            time_micros: Some(micros),
            state: Some("ok".to_string()),
            service: Some(service),
            host: Some(self.host.clone()),
            description: description
                .map(|d| d.text.to_string())
                .filter(|d| !d.is_empty()),
            tags: self.tags.clone(),
            ttl: Some(self.ttl),
            attributes,
            ..Event::default()
        }
    }

    /// The events of one report: the current value of every counter and gauge, and for every
    /// histogram its total count plus min, max, mean and quantiles of the samples recorded
    /// since the previous report (left out when there were none).
    fn build(&mut self, recorder: &Recorder) -> Vec<Event> {
        let micros = unix_micros();
        let snapshot = recorder.snapshot();
        let mut events = Vec::new();
        for (key, value) in &snapshot.counters {
            let mut e = self.event(recorder, key, self.series_name(key), micros);
            e.metric_sint64 = Some(i64::try_from(*value).unwrap_or(i64::MAX));
            e.metric_f = Some(*value as f32);
            events.push(e);
        }
        for (key, value) in &snapshot.gauges {
            let mut e = self.event(recorder, key, self.series_name(key), micros);
            e.metric_d = Some(*value);
            e.metric_f = Some(*value as f32);
            events.push(e);
        }
        let mut previous = HashMap::with_capacity(self.previous.len());
        for (key, now) in recorder.histogram_snapshots() {
            let name = self.series_name(&key);
            let total = now.stats().count;
            let interval = match self.previous.get(&key) {
                Some(before) => now.since(before).stats(),
                None => now.stats(),
            };
            let mut count = self.event(recorder, &key, format!("{name} count"), micros);
            count.metric_sint64 = Some(i64::try_from(total).unwrap_or(i64::MAX));
            count.metric_f = Some(total as f32);
            events.push(count);
            if interval.count > 0 {
                for (measure, value) in [
                    ("min", interval.min),
                    ("max", interval.max),
                    ("mean", interval.mean),
                    ("p50", interval.p50),
                    ("p95", interval.p95),
                    ("p99", interval.p99),
                    ("p999", interval.p999),
                ] {
                    let mut e = self.event(recorder, &key, format!("{name} {measure}"), micros);
                    e.metric_d = Some(value);
                    e.metric_f = Some(value as f32);
                    events.push(e);
                }
            }
            previous.insert(key, now);
        }
        self.previous = previous;
        events
    }
}

/// A live connection to the server.
enum Conn {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

/// Connection state, backoff and reusable buffers of the reporter.
struct Sender {
    config: RiemannConfig,
    conn: Option<Conn>,
    next_attempt: Instant,
    /// Delays of the next failed attempts; started afresh after each successful connection.
    backoff: ExponentialBackoff,
    frame: Vec<u8>,
    reply: Vec<u8>,
}

impl Sender {
    fn new(config: RiemannConfig) -> Self {
        Self {
            backoff: config.backoff.build(),
            config,
            conn: None,
            next_attempt: Instant::now(),
            frame: Vec::new(),
            reply: Vec::new(),
        }
    }

    fn io_error(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::RiemannIo {
            addr: self.config.addr.clone(),
            op,
            source,
        }
    }

    fn timed_out(&self, op: &'static str) -> Error {
        Error::RiemannTimeout {
            addr: self.config.addr.clone(),
            op,
            timeout: self.config.timeout,
        }
    }

    async fn connect(&mut self, ignore_backoff: bool) -> Result<(), Error> {
        let now = Instant::now();
        if !ignore_backoff && now < self.next_attempt {
            return Err(Error::RiemannBackoff {
                addr: self.config.addr.clone(),
                remaining: self.next_attempt - now,
            });
        }
        let result = timeout(self.config.timeout, self.open()).await;
        match result {
            Ok(Ok(conn)) => {
                self.conn = Some(conn);
                self.backoff = self.config.backoff.build();
                Ok(())
            }
            Ok(Err(e)) => {
                self.fail_connect();
                Err(e)
            }
            Err(_) => {
                self.fail_connect();
                Err(self.timed_out("connecting"))
            }
        }
    }

    /// Defers the next connection attempt by the backoff's next delay.
    fn fail_connect(&mut self) {
        let delay = self.backoff.next().unwrap_or(self.config.backoff_max);
        self.next_attempt = Instant::now() + delay;
    }

    async fn open(&self) -> Result<Conn, Error> {
        let addr = &self.config.addr;
        match self.config.transport {
            Transport::Tcp => {
                let stream = TcpStream::connect(addr.as_str())
                    .await
                    .map_err(self.io_error("connecting"))?;
                let _ = stream.set_nodelay(true);
                Ok(Conn::Tcp(stream))
            }
            Transport::Udp => {
                let target: SocketAddr = tokio::net::lookup_host(addr.as_str())
                    .await
                    .map_err(self.io_error("resolving"))?
                    .next()
                    .ok_or_else(|| Error::RiemannAddress { addr: addr.clone() })?;
                let local: SocketAddr = if target.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let socket = UdpSocket::bind(local)
                    .await
                    .map_err(self.io_error("binding a UDP socket"))?;
                socket
                    .connect(target)
                    .await
                    .map_err(self.io_error("connecting"))?;
                Ok(Conn::Udp(socket))
            }
        }
    }

    /// Delivers `msg`. A failure on a reused TCP connection (e.g. the server restarted)
    /// is retried once on a fresh connection.
    async fn send(&mut self, msg: &Msg, ignore_backoff: bool) -> Result<(), Error> {
        let reused = self.conn.is_some();
        if !reused {
            self.connect(ignore_backoff).await?;
        }
        match self.exchange(msg).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.conn = None;
                if reused && self.config.transport == Transport::Tcp {
                    self.connect(true).await?;
                    let retried = self.exchange(msg).await;
                    if retried.is_err() {
                        self.conn = None;
                        self.fail_connect();
                    }
                    retried
                } else {
                    // A server that accepts connections but fails them is not hammered either.
                    self.fail_connect();
                    Err(e)
                }
            }
        }
    }

    async fn exchange(&mut self, msg: &Msg) -> Result<(), Error> {
        let limit = self.config.timeout;
        match timeout(limit, self.exchange_untimed(msg)).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out("sending a report and reading the answer")),
        }
    }

    async fn exchange_untimed(&mut self, msg: &Msg) -> Result<(), Error> {
        let addr = self.config.addr.clone();
        let io = |op: &'static str| {
            let addr = addr.clone();
            move |source| Error::RiemannIo { addr, op, source }
        };
        match &mut self.conn {
            None => Err(Error::RiemannIo {
                addr: addr.clone(),
                op: "sending",
                source: std::io::ErrorKind::NotConnected.into(),
            }),
            Some(Conn::Tcp(stream)) => {
                self.frame.clear();
                self.frame.extend_from_slice(&[0; 4]);
                msg.encode(&mut self.frame)
                    .map_err(|e| Error::RiemannEncode {
                        addr: addr.clone(),
                        source: e,
                    })?;
                let len = u32::try_from(self.frame.len() - 4).map_err(|_| Error::RiemannIo {
                    addr: addr.clone(),
                    op: "framing a report",
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "report larger than 4 GiB",
                    ),
                })?;
                self.frame[..4].copy_from_slice(&len.to_be_bytes());
                stream.write_all(&self.frame).await.map_err(io("sending"))?;
                let mut len = [0u8; 4];
                stream
                    .read_exact(&mut len)
                    .await
                    .map_err(io("reading the answer length"))?;
                let len = u32::from_be_bytes(len) as usize;
                if len > MAX_REPLY {
                    return Err(Error::RiemannReplyTooLarge {
                        addr: addr.clone(),
                        len,
                        max: MAX_REPLY,
                    });
                }
                self.reply.resize(len, 0);
                stream
                    .read_exact(&mut self.reply)
                    .await
                    .map_err(io("reading the answer"))?;
                let answer =
                    Msg::decode(self.reply.as_slice()).map_err(|source| Error::RiemannDecode {
                        addr: addr.clone(),
                        source,
                    })?;
                if answer.ok == Some(true) {
                    Ok(())
                } else {
                    Err(Error::RiemannRejected {
                        addr: addr.clone(),
                        message: answer
                            .error
                            .unwrap_or_else(|| "no reason given".to_string()),
                    })
                }
            }
            Some(Conn::Udp(socket)) => {
                // A `Msg` holding only events is the concatenation of its `events` fields
                // (tag 6, length-delimited: key byte 0x32), so datagrams are filled greedily
                // without copying events; an oversized single event goes alone.
                self.frame.clear();
                for e in &msg.events {
                    let len = e.encoded_len();
                    let field = 1 + prost::length_delimiter_len(len) + len;
                    if !self.frame.is_empty() && self.frame.len() + field > UDP_MAX_DATAGRAM {
                        socket.send(&self.frame).await.map_err(io("sending"))?;
                        self.frame.clear();
                    }
                    self.frame.push(0x32);
                    e.encode_length_delimited(&mut self.frame).map_err(|e| {
                        Error::RiemannEncode {
                            addr: addr.clone(),
                            source: e,
                        }
                    })?;
                }
                if !self.frame.is_empty() {
                    socket.send(&self.frame).await.map_err(io("sending"))?;
                }
                Ok(())
            }
        }
    }
}

/// The reporter's own counters, described and registered with the current `metrics` recorder.
pub(crate) struct OwnCounters {
    sent: Counter,
    dropped: Counter,
}

/// Describes and registers the reporter's counters with the current `metrics` recorder.
pub(crate) fn own_counters() -> OwnCounters {
    metrics::describe_counter!(
        "telemetry_riemann_reports_sent_total",
        "Reports delivered to Riemann (acknowledged over TCP, sent over UDP)."
    );
    metrics::describe_counter!(
        "telemetry_riemann_reports_dropped_total",
        "Reports to Riemann dropped: not connected, backoff, timeout or refused."
    );
    OwnCounters {
        sent: metrics::counter!("telemetry_riemann_reports_sent_total"),
        dropped: metrics::counter!("telemetry_riemann_reports_dropped_total"),
    }
}

/// Reports every `config.interval` until `stop` changes (or its sender is dropped), then sends
/// one final report.
pub(crate) async fn run(
    config: RiemannConfig,
    recorder: Recorder,
    counters: OwnCounters,
    service: String,
    mut stop: watch::Receiver<bool>,
) {
    let OwnCounters { sent, dropped } = counters;
    let mut builder = EventBuilder::new(&config, &service);
    let mut ticker = tokio::time::interval_at(Instant::now() + config.interval, config.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut sender = Sender::new(config);
    let mut failing = false;
    loop {
        let last = tokio::select! {
            _ = ticker.tick() => false,
            _ = stop.changed() => true,
        };
        let msg = Msg {
            events: builder.build(&recorder),
            ..Msg::default()
        };
        // The whole final report (connecting included) gets one `timeout`, so that shutting
        // down never waits longer than that for Riemann.
        let result = if last {
            let limit = sender.config.timeout;
            match timeout(limit, sender.send(&msg, true)).await {
                Ok(result) => result,
                Err(_) => Err(sender.timed_out("sending the final report")),
            }
        } else {
            sender.send(&msg, false).await
        };
        match result {
            Ok(()) => {
                sent.increment(1);
                if failing {
                    tracing::info!(addr = %sender.config.addr, "telemetry: Riemann reports go through again");
                    failing = false;
                }
            }
            Err(e) => {
                dropped.increment(1);
                if !failing || last {
                    tracing::warn!(error = %e, "telemetry: Riemann report dropped");
                    failing = true;
                }
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_addresses() {
        assert!(RiemannConfig::new("localhost:5555").validate().is_ok());
        assert!(RiemannConfig::new("[::1]:5555").validate().is_ok());
        for bad in ["localhost", ":5555", "host:port", "host:99999"] {
            assert!(RiemannConfig::new(bad).validate().is_err(), "{bad}");
        }
    }

    /// The time left before the next attempt, as `connect` reports it without any I/O.
    async fn deferred_for(sender: &mut Sender) -> Duration {
        match sender.connect(false).await {
            Err(Error::RiemannBackoff { remaining, addr }) => {
                assert_eq!(addr, "127.0.0.1:9");
                remaining
            }
            other => panic!("expected a deferred attempt, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn failed_attempts_defer_reconnection_doubling_up_to_the_maximum() {
        // Powers of two: exact in the f32 arithmetic of the backoff.
        let config = RiemannConfig::new("127.0.0.1:9")
            .backoff(Duration::from_secs(1), Duration::from_secs(5));
        let mut sender = Sender::new(config);
        for want in [1, 2, 4, 5, 5] {
            let want = Duration::from_secs(want);
            sender.fail_connect();
            let remaining = deferred_for(&mut sender).await;
            // Only the time this test takes between the two calls may have passed.
            assert!(remaining <= want, "{remaining:?} > {want:?}");
            assert!(remaining > want - Duration::from_secs(1), "{remaining:?}");
        }
        // A successful connection starts the sequence again at the minimum.
        sender.backoff = sender.config.backoff.build();
        sender.fail_connect();
        assert!(deferred_for(&mut sender).await <= Duration::from_secs(1));
        // `ignore_backoff` (the final report) tries at once: a refused connection, not a deferral.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let closed = listener.local_addr().expect("its address");
        drop(listener);
        let mut sender = Sender::new(RiemannConfig::new(closed.to_string()));
        sender.fail_connect();
        assert!(matches!(
            sender.connect(true).await,
            Err(Error::RiemannIo { .. } | Error::RiemannTimeout { .. })
        ));
    }

    #[test]
    fn a_maximum_below_the_minimum_is_the_minimum() {
        let config = RiemannConfig::new("x:1").backoff(Duration::from_secs(2), Duration::ZERO);
        let delays: Vec<_> = config.backoff.build().take(3).collect();
        assert_eq!(delays, [Duration::from_secs(2); 3]);
        assert_eq!(config.backoff_max, Duration::from_secs(2));
    }

    #[test]
    fn events_of_counters_gauges_and_histograms() {
        let r = Recorder::new();
        metrics::with_local_recorder(&r, || {
            metrics::describe_histogram!("h_seconds", metrics::Unit::Seconds, "Latency.");
            metrics::counter!("c_total", "k" => "v").increment(4);
            metrics::gauge!("g").set(-1.5);
            metrics::histogram!("h_seconds").record(2.0);
        });
        let config = RiemannConfig::new("x:1").host("h").prefix("p ").tag("t");
        let mut b = EventBuilder::new(&config, "svc");
        let events = b.build(&r);
        let names: Vec<_> = events.iter().filter_map(|e| e.service.clone()).collect();
        assert_eq!(
            names,
            [
                "p svc c_total{k=v}",
                "p svc g",
                "p svc h_seconds count",
                "p svc h_seconds min",
                "p svc h_seconds max",
                "p svc h_seconds mean",
                "p svc h_seconds p50",
                "p svc h_seconds p95",
                "p svc h_seconds p99",
                "p svc h_seconds p999",
            ]
        );
        assert_eq!(events[0].metric_sint64, Some(4));
        assert_eq!(events[0].attributes[0].key, "k");
        assert_eq!(events[1].metric_d, Some(-1.5));
        assert_eq!(events[3].description.as_deref(), Some("Latency."));
        assert_eq!(events[3].attributes[0].value.as_deref(), Some("seconds"));
        assert_eq!(events[9].metric_d, Some(2.0));
        // No new samples: only the count is reported next time.
        let again = b.build(&r);
        assert_eq!(again.len(), 3);
        assert_eq!(again[2].metric_sint64, Some(1));
    }
}
