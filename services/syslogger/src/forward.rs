//! From a frame to Kafka: build the record (parse, format, route), hold its bytes under the
//! in-flight budget, produce it, and settle it: delivered, dead-lettered, or (at the
//! shutdown deadline) spilled.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use kafka_seq::detached::MAX_WEIGHT;
use kafka_seq::{
    DeliveryReport, DetachedSender, KafkaProducer, LaneReports, LaneSender, Record, Returned,
    Returns, Ticket,
};
use metrics::{Counter, Histogram};
use rdkafka::error::RDKafkaErrorCode;
use std::pin::Pin;
use tokio::sync::Semaphore;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::format::{Format, encode};
use crate::parse::{HeadCache, Message, Parser};
use crate::route::{KeySpec, Template, sanitize_topic};
use crate::spill::{Envelope, EnvelopeFile};

/// Where messages Kafka refuses for good go.
pub enum DeadLetter {
    /// Nowhere: they are logged and counted as refused (and the exit status says so).
    None,
    /// A Kafka topic (the reason and original topic in headers).
    Topic(String),
    /// A local Baldr file of envelopes.
    File(Arc<Mutex<EnvelopeFile>>),
}

/// How a message is built from a frame.
pub struct Pipeline {
    pub parser: Parser,
    pub format: Format,
    pub topic: Template,
    /// The topic when the template has no field.
    pub static_topic: Option<Arc<str>>,
    pub topic_fallback: Arc<str>,
    pub key: KeySpec,
    pub headers: bool,
}

/// Per-connection scratch space, so the hot path reuses its buffers.
#[derive(Default)]
pub struct Scratch {
    out: BytesMut,
    text: String,
    render: String,
    topics: Interner<Arc<str>>,
    keys: Interner<Bytes>,
    head: HeadCache,
}

/// The most distinct topics or keys a connection remembers before it starts over.
const INTERN_MAX: usize = 1024;

/// Rendered topics and keys, made once per distinct text and found again by a map lookup
/// (a relay's connection carries many hosts: a "last one" shortcut would miss). The map
/// hashes with foldhash (seeded per map) rather than SipHash: a short key is hashed per
/// message, and keys chosen to collide could cost at most `INTERN_MAX` entries' probing,
/// the map being cleared there.
struct Interner<T> {
    map: HashMap<String, T, foldhash::fast::RandomState>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self {
            map: HashMap::default(),
        }
    }
}

impl<T: Clone> Interner<T> {
    fn get(&mut self, s: &str, make: impl FnOnce(&str) -> T) -> T {
        if let Some(v) = self.map.get(s) {
            return v.clone();
        }
        if self.map.len() >= INTERN_MAX {
            self.map.clear();
        }
        let v = make(s);
        self.map.insert(s.to_string(), v.clone());
        v
    }
}

/// The memory a message in flight takes besides its bytes (librdkafka's message; on a
/// delivery lane also its place in a settler's queue), counted under the byte budget.
pub const MESSAGE_OVERHEAD: usize = 512;

/// A message ready to produce.
pub struct Outgoing {
    pub topic: Arc<str>,
    pub record: Record,
    pub received: Instant,
}

impl Outgoing {
    fn envelope(&self, reason: Option<String>) -> Envelope {
        Envelope {
            topic: self.topic.to_string(),
            key: self.record.key.clone(),
            headers: self.record.headers.clone(),
            payload: self.record.payload.clone().unwrap_or_default(),
            timestamp: self.record.timestamp,
            reason,
        }
    }

    /// What the message costs under the budget: its bytes and its bookkeeping.
    fn size(&self) -> usize {
        MESSAGE_OVERHEAD
            + self.record.payload.as_ref().map_or(0, Bytes::len)
            + self.record.key.as_ref().map_or(0, Bytes::len)
    }

    /// A message from a spill file.
    pub fn from_envelope(e: Envelope) -> Outgoing {
        Outgoing {
            topic: e.topic.into(),
            record: Record {
                key: e.key,
                payload: Some(e.payload),
                headers: e.headers,
                partition: None,
                timestamp: e.timestamp,
            },
            received: Instant::now(),
        }
    }
}

impl Pipeline {
    /// Builds the message of `frame`; the flag says whether it parsed as syslog.
    pub fn build(
        &self,
        frame: Bytes,
        received: DateTime<Utc>,
        at: Instant,
        scratch: &mut Scratch,
    ) -> (Outgoing, bool) {
        let Scratch {
            out,
            text,
            render,
            topics,
            keys,
            head,
        } = scratch;
        // A raw payload needs only the routing fields: the common header is read by hand.
        let fast = if self.format == Format::Raw {
            self.parser.parse_head(&frame, received, head)
        } else {
            None
        };
        let (utf8, m): (bool, Message<'_>) = match fast {
            Some(m) => (true, m),
            None => match std::str::from_utf8(&frame) {
                Ok(s) => (true, self.parser.parse(s, received)),
                Err(_) => {
                    text.clear();
                    text.push_str(&String::from_utf8_lossy(&frame));
                    (false, self.parser.parse(text, received))
                }
            },
        };
        let parsed = m.parsed();
        let encoded = if self.format == Format::Raw {
            None
        } else {
            encode(self.format, &frame, utf8, &m, received, out);
            Some(out.split().freeze())
        };
        let topic = match &self.static_topic {
            Some(t) => t.clone(),
            None => {
                if self.topic.render(&m, render) && sanitize_topic(render) {
                    topics.get(render, |s| Arc::from(s))
                } else {
                    self.topic_fallback.clone()
                }
            }
        };
        let key = match &self.key {
            KeySpec::None => None,
            KeySpec::Template(t) => {
                if t.render(&m, render) {
                    Some(keys.get(render, |s| Bytes::copy_from_slice(s.as_bytes())))
                } else {
                    None
                }
            }
        };
        let mut headers = Vec::new();
        if self.headers {
            let mut h = |k: &str, v: &str| {
                headers.push((k.to_string(), Bytes::copy_from_slice(v.as_bytes())))
            };
            if let Some(v) = m.hostname {
                h("syslog.host", v);
            }
            if let Some(v) = m.appname {
                h("syslog.appname", v);
            }
            if let Some(v) = &m.procid {
                h("syslog.procid", &v.to_string());
            }
            if let Some(v) = m.msgid {
                h("syslog.msgid", v);
            }
            if let Some(f) = m.facility {
                h("syslog.facility", crate::parse::facility_name(f));
            }
            if let Some(s) = m.severity {
                h("syslog.severity", crate::parse::severity_name(s));
            }
            if let Some(p) = m.protocol {
                h("syslog.protocol", p.as_str());
            }
        }
        (
            Outgoing {
                topic,
                record: Record {
                    key,
                    // Raw: the frame itself (moved, not another reference to it).
                    payload: Some(encoded.unwrap_or(frame)),
                    headers,
                    partition: None,
                    // The Kafka timestamp is when syslogger received the message (the
                    // clock read once per batch; librdkafka would read it per message).
                    timestamp: Some(received.timestamp_millis()),
                },
                received: at,
            },
            parsed,
        )
    }
}

/// Counts of what happened to received messages.
#[derive(Debug, Default)]
pub struct Counts {
    pub received: AtomicU64,
    pub delivered: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub refused: AtomicU64,
    pub spilled: AtomicU64,
    pub udp_dropped: AtomicU64,
}

/// The service's metric handles (built once).
#[derive(Clone)]
pub struct Metrics {
    pub delivered: Counter,
    pub dead_lettered: Counter,
    pub refused: Counter,
    pub spilled: Counter,
    pub retried: Counter,
    pub latency: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            delivered: metrics::counter!("syslogger_delivered_total"),
            dead_lettered: metrics::counter!("syslogger_dead_lettered_total"),
            refused: metrics::counter!("syslogger_refused_total"),
            spilled: metrics::counter!("syslogger_spilled_total"),
            retried: metrics::counter!("syslogger_delivery_retries_total"),
            latency: metrics::histogram!("syslogger_delivery_seconds"),
        }
    }
}

/// What every connection shares.
pub struct Shared {
    pub producer: KafkaProducer,
    pub budget: Arc<Semaphore>,
    pub budget_bytes: usize,
    pub pipeline: Pipeline,
    pub dead_letter: DeadLetter,
    pub counts: Counts,
    pub metrics: Metrics,
    /// Fires at the shutdown deadline: nothing is waited for any more, the rest is spilled.
    /// Cancel it with [`Shared::pass_deadline`].
    pub deadline: CancellationToken,
    /// Set with `deadline`: a check without the token's lock, for the per-message path.
    pub deadline_passed: std::sync::atomic::AtomicBool,
    pub spill: Mutex<Vec<Envelope>>,
}

/// Room under the in-flight budget held by a message until it is settled. Its settler
/// gives the room back, a batch at a time ([`Shared::release`]): one semaphore operation
/// per batch rather than per message.
pub struct Held {
    bytes: usize,
}

impl Held {
    /// The room as a detached lane's weight; `None` past what a weight can carry.
    fn weight(&self) -> Option<u32> {
        u32::try_from(self.bytes).ok().filter(|w| *w <= MAX_WEIGHT)
    }
}

/// Where a produced message's report comes from.
enum Report {
    /// Its connection's delivery lane (the common path: no allocation per message).
    Lane(Ticket),
    /// Its own report (replayed spills, retries, connections without a lane).
    One(DeliveryReport),
}

/// A produced message waiting for Kafka's report.
pub struct Pending {
    report: Report,
    out: Outgoing,
    held: Held,
}

/// Slots of a connection's delivery lane: the most messages one connection has produced
/// and not settled (one byte each). A connection's throughput is at most this many
/// messages per Kafka round trip (`linger.ms` included).
pub const LANE_SLOTS: usize = 16 * 1024;

/// What `submit` did with a message.
pub enum Submitted {
    /// Produced: await its report with [`Shared::settle`].
    Pending(Pending),
    /// librdkafka refused it at once (e.g. larger than `message.max.bytes`).
    Refused(Outgoing, String),
    /// The shutdown deadline came first: it goes to the spill.
    Spill(Outgoing),
    /// Kafka did not take it (a detached lane handed it back, with the room it held).
    Returned(Outgoing, kafka_seq::Error, Held),
}

/// What [`Shared::try_submit_detached`] did.
pub enum TryDetached {
    /// Produced: nothing is left to settle.
    Sent,
    /// It must wait for room ([`Shared::submit_detached`]).
    Wait,
    /// librdkafka refused it at once, for this reason.
    Refused(String),
}

/// A settler's state across one batch of messages: the budget room they held (given back
/// once per batch) and the time their reports were seen (read once, and again after each
/// wait, rather than per message).
#[derive(Debug, Default)]
pub struct SettleBatch {
    /// Bytes to give back to the budget ([`Shared::release`]).
    pub released: usize,
    now: Option<Instant>,
}

impl SettleBatch {
    fn now(&mut self) -> Instant {
        *self.now.get_or_insert_with(Instant::now)
    }
}

/// How a message was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    DeadLettered,
    Refused,
    Spilled,
}

impl Settled {
    /// Whether the sender may be told the message is safe (RELP `200 OK`).
    pub fn acknowledged(self) -> bool {
        !matches!(self, Settled::Spilled)
    }
}

/// Errors after which Kafka will never take the message: dead letters.
fn permanent(code: Option<RDKafkaErrorCode>) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::InvalidRecord
                | C::UnknownTopicOrPartition
                | C::UnknownTopic
                | C::UnknownPartition
                | C::InvalidTopic
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::MessageBatchTooLarge
                | C::PolicyViolation
                | C::InvalidTimestamp
                | C::InvalidArgument
        )
    )
}

fn error_code(e: &kafka_seq::Error) -> Option<RDKafkaErrorCode> {
    match e {
        kafka_seq::Error::Delivery { source, .. } | kafka_seq::Error::Kafka { source, .. } => {
            source.rdkafka_error_code()
        }
        _ => None,
    }
}

/// The longest wait between retries of a message Kafka failed for a transient reason
/// (only when the operator set a finite `message.timeout.ms`).
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

impl Shared {
    /// A delivery lane for a connection: its sender for the reader, its reports for the
    /// settler. `None` (messages then get their own reports) if the producer has no lane
    /// to give.
    pub fn open_lane(&self) -> (Option<LaneSender>, Option<LaneReports>) {
        match self.producer.lane(LANE_SLOTS) {
            Ok((s, r)) => (Some(s), Some(r)),
            Err(e) => {
                tracing::warn!(error = %e, "no delivery lane for a connection; its messages are tracked one by one");
                (None, None)
            }
        }
    }

    /// A detached lane for a stream connection (nobody to answer per message): delivered
    /// messages give their room back to the budget in bulk, from the delivery thread; what
    /// Kafka does not take comes back through the [`Returns`]. `None` if the producer has
    /// no lane to give.
    pub fn open_detached(self: &Arc<Self>) -> Option<(DetachedSender, Returns)> {
        let shared = Arc::downgrade(self);
        // Small against the budget: room held by delivered messages not given back yet is
        // at most this much per connection.
        let release_every = (self.budget_bytes / 256).clamp(1, 64 * 1024) as u64;
        let opened = self.producer.detached(
            release_every,
            Some(self.metrics.latency.clone()),
            move |messages, bytes| {
                if let Some(s) = shared.upgrade() {
                    s.counts.delivered.fetch_add(messages, Ordering::Relaxed);
                    s.metrics.delivered.increment(messages);
                    s.release(usize::try_from(bytes).unwrap_or(usize::MAX));
                }
            },
        );
        match opened {
            Ok(lane) => Some(lane),
            Err(e) => {
                tracing::warn!(error = %e, "no detached lane for a connection; its messages are tracked one by one");
                None
            }
        }
    }

    /// Holds room for `out` and produces it on the detached lane if neither needs a wait
    /// (`out` stays the caller's: librdkafka copied what it needs).
    pub fn try_submit_detached(&self, out: &Outgoing, lane: &mut DetachedSender) -> TryDetached {
        if self.deadline_passed.load(Ordering::Relaxed) {
            return TryDetached::Wait;
        }
        let Some(held) = self.try_hold(out) else {
            return TryDetached::Wait;
        };
        let sent = match held.weight() {
            Some(weight) => lane.try_send(&out.topic, &out.record, weight),
            None => Ok(false),
        };
        match sent {
            Ok(true) => TryDetached::Sent,
            Ok(false) => {
                self.release(held.bytes);
                TryDetached::Wait
            }
            Err(e) => {
                self.release(held.bytes);
                TryDetached::Refused(e.to_string())
            }
        }
    }

    /// Produces `out` on the detached lane, waiting for room under the budget and the
    /// producer's bounds; `None` when it went. A message too large to weigh goes with its
    /// own report instead.
    pub async fn submit_detached(
        &self,
        out: Outgoing,
        lane: &mut DetachedSender,
    ) -> Option<Submitted> {
        let Some(held) = self.hold(&out).await else {
            return Some(Submitted::Spill(out));
        };
        let Some(weight) = held.weight() else {
            return Some(self.submit_held(out, held, None).await);
        };
        let sent = tokio::select! {
            biased;
            r = lane.send(&out.topic, &out.record, weight) => r,
            () = self.deadline.cancelled() => {
                self.release(held.bytes);
                return Some(Submitted::Spill(out));
            }
        };
        match sent {
            Ok(()) => None,
            Err(e) => {
                self.release(held.bytes);
                Some(Submitted::Refused(out, e.to_string()))
            }
        }
    }

    /// A message a detached lane handed back, for [`settle`](Self::settle).
    pub fn returned(r: Returned) -> Submitted {
        let Returned {
            topic,
            record,
            weight,
            error,
            ..
        } = r;
        Submitted::Returned(
            Outgoing {
                topic: topic.into(),
                record,
                received: Instant::now(),
            },
            error,
            Held {
                bytes: weight as usize,
            },
        )
    }

    /// Whether the budget has room for `out` now.
    pub fn has_room(&self, out: &Outgoing) -> bool {
        self.budget.available_permits() >= out.size().clamp(1, self.budget_bytes)
    }

    /// Holds room for `out` under the budget and produces it; waits while the budget or
    /// the producer's in-flight bound is full.
    pub async fn submit(&self, out: Outgoing, lane: Option<&mut LaneSender>) -> Submitted {
        match self.hold(&out).await {
            Some(held) => self.submit_held(out, held, lane).await,
            None => Submitted::Spill(out),
        }
    }

    /// Holds room for `out` under the budget, waiting while it is full; `None` when the
    /// shutdown deadline comes first.
    async fn hold(&self, out: &Outgoing) -> Option<Held> {
        let bytes = out.size().clamp(1, self.budget_bytes);
        let n = u32::try_from(bytes).ok()?;
        tokio::select! {
            biased;
            p = self.budget.acquire_many(n) => p.ok()?.forget(),
            () = self.deadline.cancelled() => return None,
        };
        Some(Held { bytes })
    }

    /// Holds room for `out` and produces it on `lane` if neither needs a wait (the common
    /// case, without the machinery of an `await`); gives `out` back otherwise, for
    /// [`submit`](Self::submit).
    ///
    /// # Errors
    /// The message, when it has to wait.
    // The message moves back and forth by value on purpose: a box would be an allocation
    // per message.
    #[allow(clippy::result_large_err)]
    pub fn try_submit(&self, out: Outgoing, lane: &mut LaneSender) -> Result<Submitted, Outgoing> {
        if self.deadline_passed.load(Ordering::Relaxed) {
            return Err(out);
        }
        let Some(held) = self.try_hold(&out) else {
            return Err(out);
        };
        match lane.try_send(&out.topic, &out.record) {
            Ok(Some(ticket)) => Ok(Submitted::Pending(Pending {
                report: Report::Lane(ticket),
                out,
                held,
            })),
            Ok(None) => {
                self.release(held.bytes);
                Err(out)
            }
            Err(e) => {
                self.release(held.bytes);
                Ok(Submitted::Refused(out, e.to_string()))
            }
        }
    }

    /// The shutdown deadline passed: stop waiting for anything, spill the rest. librdkafka
    /// gives up what it holds: detached lanes hand it back, to the spill.
    pub fn pass_deadline(&self) {
        self.deadline_passed.store(true, Ordering::SeqCst);
        self.deadline.cancel();
        if let Err(e) = self.producer.purge() {
            tracing::warn!(error = %e, "cannot purge the producer's queues at the deadline");
        }
    }

    /// Gives `bytes` of room back to the budget.
    pub fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.budget.add_permits(bytes);
        }
    }

    /// Holds room like [`submit`](Self::submit) but without waiting: `None` when the budget
    /// is full (UDP drops then).
    pub fn try_hold(&self, out: &Outgoing) -> Option<Held> {
        let bytes = out.size().clamp(1, self.budget_bytes);
        self.budget
            .try_acquire_many(u32::try_from(bytes).ok()?)
            .ok()?
            .forget();
        Some(Held { bytes })
    }

    /// Produces a message already holding room, on `lane` when given.
    pub async fn submit_held(
        &self,
        out: Outgoing,
        held: Held,
        lane: Option<&mut LaneSender>,
    ) -> Submitted {
        let send = async {
            match lane {
                Some(lane) => lane.send(&out.topic, &out.record).await.map(Report::Lane),
                None => self
                    .producer
                    .send(&out.topic, &out.record)
                    .await
                    .map(Report::One),
            }
        };
        let sent = tokio::select! {
            biased;
            r = send => r,
            () = self.deadline.cancelled() => {
                self.release(held.bytes);
                return Submitted::Spill(out);
            }
        };
        match sent {
            Ok(report) => Submitted::Pending(Pending { report, out, held }),
            Err(e) => {
                self.release(held.bytes);
                Submitted::Refused(out, e.to_string())
            }
        }
    }

    /// Settles a message Kafka already acknowledged on its lane, without waiting (the
    /// common case); gives it back otherwise, for [`settle`](Self::settle).
    ///
    /// # Errors
    /// The message, when it needs [`settle`](Self::settle).
    #[allow(clippy::result_large_err)] // as `try_submit`
    pub fn settle_now(
        &self,
        submitted: Submitted,
        reports: Option<&mut LaneReports>,
        batch: &mut SettleBatch,
    ) -> Result<Settled, Submitted> {
        match (submitted, reports) {
            (
                Submitted::Pending(Pending {
                    report: Report::Lane(ticket),
                    out,
                    held,
                }),
                Some(reports),
            ) => match reports.take_delivered(ticket) {
                Ok(()) => {
                    batch.released += held.bytes;
                    self.delivered(&out, batch);
                    Ok(Settled::Delivered)
                }
                Err(ticket) => Err(Submitted::Pending(Pending {
                    report: Report::Lane(ticket),
                    out,
                    held,
                })),
            },
            (other, _) => Err(other),
        }
    }

    fn delivered(&self, out: &Outgoing, batch: &mut SettleBatch) {
        self.counts.delivered.fetch_add(1, Ordering::Relaxed);
        self.metrics.delivered.increment(1);
        self.metrics
            .latency
            .record((batch.now() - out.received).as_secs_f64());
    }

    /// Waits for a submitted message's fate: Kafka's acknowledgement, a dead letter after a
    /// permanent refusal, retries after a transient one, or the spill at the deadline.
    /// The room the message held is added to `batch.released`, for the caller to give back
    /// ([`release`](Self::release)) once per batch.
    pub async fn settle(
        &self,
        submitted: Submitted,
        mut reports: Option<&mut LaneReports>,
        mut deadline: Pin<&mut WaitForCancellationFutureOwned>,
        batch: &mut SettleBatch,
    ) -> Settled {
        // Built on the first retry only (the common path never retries).
        let mut retry = None;
        let mut submitted = submitted;
        loop {
            let (out, reason) = match submitted {
                Submitted::Spill(out) => return self.spill(out),
                Submitted::Refused(out, reason) => return self.dead_letter(out, reason).await,
                Submitted::Returned(out, e, held) => {
                    batch.released += held.bytes;
                    if self.deadline_passed.load(Ordering::SeqCst) {
                        return self.spill(out);
                    }
                    if permanent(error_code(&e)) {
                        return self.dead_letter(out, e.to_string()).await;
                    }
                    (out, e.to_string())
                }
                Submitted::Pending(p) => {
                    let Pending { report, out, held } = p;
                    batch.released += held.bytes;
                    let r = match report {
                        Report::One(d) => self
                            .wait_report(d, deadline.as_mut(), batch)
                            .await
                            .map(|r| r.map(drop)),
                        Report::Lane(t) => match reports.as_deref_mut() {
                            Some(reports) => {
                                self.wait_report(reports.report(t), deadline.as_mut(), batch)
                                    .await
                            }
                            None => Some(Err(kafka_seq::Error::DeliveryLost)),
                        },
                    };
                    let Some(r) = r else {
                        return self.spill(out);
                    };
                    match r {
                        Ok(()) => {
                            self.delivered(&out, batch);
                            return Settled::Delivered;
                        }
                        // At the deadline the producer's queues are purged: what failed
                        // then goes to the spill, quietly.
                        Err(_) if self.deadline_passed.load(Ordering::SeqCst) => {
                            return self.spill(out);
                        }
                        Err(e) if permanent(error_code(&e)) => {
                            return self.dead_letter(out, e.to_string()).await;
                        }
                        Err(e) => (out, e.to_string()),
                    }
                }
            };
            // Transient (a finite message.timeout.ms expired): produce again after a wait.
            let wait = retry
                .get_or_insert_with(|| {
                    ExponentialBuilder::new()
                        .with_min_delay(Duration::from_millis(100))
                        .with_max_delay(MAX_RETRY_WAIT)
                        .without_max_times()
                        .build()
                })
                .next()
                .unwrap_or(MAX_RETRY_WAIT);
            tracing::warn!(topic = %out.topic, error = %reason, retry_in = ?wait, "delivery failed; producing the message again");
            self.metrics.retried.increment(1);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.deadline.cancelled() => return self.spill(out),
            }
            // The room this message held is needed again now, not at the batch's end.
            self.release(std::mem::take(&mut batch.released));
            submitted = self.submit(out, None).await;
        }
    }

    /// Waits for a report; `None` when the shutdown deadline came first (a report that is
    /// already there still counts).
    async fn wait_report<T, F>(
        &self,
        mut report: F,
        deadline: Pin<&mut WaitForCancellationFutureOwned>,
        batch: &mut SettleBatch,
    ) -> Option<Result<T, kafka_seq::Error>>
    where
        F: Future<Output = Result<T, kafka_seq::Error>> + Unpin,
    {
        match futures::FutureExt::now_or_never(&mut report) {
            Some(r) => Some(r),
            None if self.deadline.is_cancelled() => None,
            None => {
                // Time passes while waiting: the clock is read again after.
                batch.now = None;
                tokio::select! {
                    biased;
                    r = &mut report => Some(r),
                    () = deadline => futures::FutureExt::now_or_never(&mut report),
                }
            }
        }
    }

    fn spill(&self, out: Outgoing) -> Settled {
        self.counts.spilled.fetch_add(1, Ordering::Relaxed);
        self.metrics.spilled.increment(1);
        self.spill
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(out.envelope(None));
        Settled::Spilled
    }

    /// Sends a refused message to the dead-letter destination.
    pub async fn dead_letter(&self, out: Outgoing, reason: String) -> Settled {
        match &self.dead_letter {
            DeadLetter::None => {
                self.counts.refused.fetch_add(1, Ordering::Relaxed);
                self.metrics.refused.increment(1);
                tracing::error!(topic = %out.topic, reason = %reason, bytes = out.size(), "Kafka refused a message and there is no --dead-letter destination: it is not forwarded");
                Settled::Refused
            }
            DeadLetter::Topic(topic) => {
                let mut record = Record {
                    key: out.record.key.clone(),
                    payload: out.record.payload.clone(),
                    headers: out.record.headers.clone(),
                    partition: None,
                    timestamp: out.record.timestamp,
                };
                record
                    .headers
                    .push(("syslogger.reason".into(), Bytes::from(reason.clone())));
                record.headers.push((
                    "syslogger.topic".into(),
                    Bytes::copy_from_slice(out.topic.as_bytes()),
                ));
                let sent = tokio::select! {
                    r = self.producer.send(topic, &record) => r,
                    () = self.deadline.cancelled() => return self.spill(out),
                };
                let r = match sent {
                    Ok(report) => tokio::select! {
                        r = report => r,
                        () = self.deadline.cancelled() => return self.spill(out),
                    },
                    Err(e) => Err(e),
                };
                match r {
                    Ok(_) => self.counted_dead_letter(&out, &reason),
                    Err(_) if self.deadline_passed.load(Ordering::SeqCst) => self.spill(out),
                    Err(e) => {
                        tracing::error!(topic = %out.topic, dead_letter_topic = %topic, reason = %reason, error = %e, "the dead-letter topic refused a message too; it goes to the spill");
                        self.spill(out)
                    }
                }
            }
            DeadLetter::File(file) => {
                let file = file.clone();
                let env = out.envelope(Some(reason.clone()));
                let written = tokio::task::spawn_blocking(move || {
                    file.lock().unwrap_or_else(|e| e.into_inner()).append(&env)
                })
                .await;
                match written {
                    Ok(Ok(())) => self.counted_dead_letter(&out, &reason),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot write the dead-letter file; the message goes to the spill");
                        self.spill(out)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "dead-letter writer failed; the message goes to the spill");
                        self.spill(out)
                    }
                }
            }
        }
    }

    fn counted_dead_letter(&self, out: &Outgoing, reason: &str) -> Settled {
        self.counts.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.metrics.dead_lettered.increment(1);
        tracing::warn!(topic = %out.topic, reason = %reason, "message dead-lettered");
        Settled::DeadLettered
    }
}
