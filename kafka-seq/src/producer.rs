//! A Kafka producer with bounded in-flight messages and delivery acknowledgements.
//!
//! [`KafkaProducer::send`] waits for room (at most
//! [`max_in_flight`](ProducerConfig::max_in_flight) messages are unacknowledged), enqueues the
//! message and returns a [`DeliveryReport`], a future that resolves to where Kafka stored it
//! ([`Delivered`]) once Kafka acknowledged it, or to the error when the delivery failed. [`KafkaSink`] is the same as a `futures::Sink`: flushing or closing
//! it waits for every acknowledgement and reports the first failure. The producer is
//! idempotent unless `enable.idempotence=false` is set: retries never duplicate or reorder.
//!
//! ```no_run
//! # async fn run() -> Result<(), kafka_seq::Error> {
//! use futures::SinkExt;
//! use kafka_seq::{ProducerConfig, Record};
//!
//! let producer = ProducerConfig::new("127.0.0.1:9092").set("linger.ms", "5").create()?;
//! // One message, waiting for its acknowledgement:
//! let delivered = producer.send("events", &Record::new("hello").key("k1")).await?.await?;
//! println!("stored at {}@{}", delivered.partition, delivered.offset);
//! // Many, as a sink: `close` waits for every acknowledgement.
//! let mut sink = producer.sink("events");
//! for i in 0..1000 {
//!     sink.feed(Record::new(format!("event {i}"))).await?;
//! }
//! sink.close().await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Sink;
use futures::task::AtomicWaker;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::IntoOpaque;
use rdkafka::{ClientConfig, ClientContext};
use tokio::sync::oneshot;

use crate::detached::{self, DetachedLanes, DetachedSender, Returns};
use crate::ffi;
use crate::in_flight::{InFlight, PollWait};
use crate::lane::{self, LaneReports, LaneSender, Lanes};
use crate::metrics::{TopicMetrics, describe_once, producer_in_flight};
use crate::opaque::{Opaque, Target};
use crate::{Error, kafka_err};

/// Configuration of a [`KafkaProducer`].
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    brokers: String,
    properties: Vec<(String, String)>,
    max_in_flight: usize,
    flush_timeout: Duration,
}

impl ProducerConfig {
    /// A producer for `brokers` (`host:port,...`).
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            properties: Vec::new(),
            max_in_flight: 100_000,
            flush_timeout: Duration::from_secs(30),
        }
    }

    /// Sets any librdkafka producer property (`linger.ms`, `compression.type`, `acks`...).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// Sets every `(key, value)` pair, as from [`parse_property`](crate::parse_property).
    pub fn set_all<I: IntoIterator<Item = (String, String)>>(mut self, properties: I) -> Self {
        self.properties.extend(properties);
        self
    }

    /// At most this many messages are enqueued and not yet acknowledged (default 100 000,
    /// librdkafka's own default queue bound); sending more waits. librdkafka's
    /// `queue.buffering.max.messages` is raised to at least this unless set explicitly.
    pub fn max_in_flight(mut self, messages: usize) -> Self {
        self.max_in_flight = messages.clamp(1, 1_000_000);
        self
    }

    /// How long [`KafkaProducer::flush`] waits at most (default 30 s).
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// Creates the producer (it connects in the background).
    ///
    /// # Errors
    /// [`Error::Kafka`] when librdkafka refuses the configuration.
    pub fn create(self) -> Result<KafkaProducer, Error> {
        describe_once();
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set(
                "queue.buffering.max.messages",
                self.max_in_flight.max(100_000).to_string(),
            );
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        let in_flight = Arc::new(InFlight::new(self.max_in_flight, producer_in_flight()));
        let lanes = Arc::new(Lanes::default());
        let detached = Arc::new(DetachedLanes::default());
        let topics = Arc::new(Topics::default());
        let producer: ThreadedProducer<DeliveryContext> = c
            .create_with_context(DeliveryContext {
                in_flight: in_flight.clone(),
                lanes: lanes.clone(),
                detached: detached.clone(),
                topics: topics.clone(),
            })
            .map_err(kafka_err(format!("create producer for {}", self.brokers)))?;
        Ok(KafkaProducer {
            inner: Arc::new(Inner {
                handles: Mutex::default(),
                producer,
                in_flight,
                flush_timeout: self.flush_timeout,
                topics,
                lanes,
                detached,
            }),
        })
    }
}

/// A message to produce. Its topic is given when sending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// The key (decides the partition unless [`partition`](Self::partition) is set).
    pub key: Option<Bytes>,
    /// The payload (`None` produces a tombstone).
    pub payload: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Bytes)>,
    /// A fixed partition, or `None` for the partitioner's choice.
    pub partition: Option<i32>,
    /// Timestamp in milliseconds since the Unix epoch, or `None` for "now".
    pub timestamp: Option<i64>,
}

impl Record {
    /// A record with this payload.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: Some(payload.into()),
            ..Self::default()
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// Sends to this partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the timestamp (ms since the Unix epoch).
    pub fn timestamp(mut self, millis: i64) -> Self {
        self.timestamp = Some(millis);
        self
    }
}

/// Where Kafka stored an acknowledged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The partition.
    pub partition: i32,
    /// The offset within the partition.
    pub offset: i64,
}

type Report = Result<Delivered, Error>;

/// Kafka's report on one produced message: a future resolving to where Kafka stored it
/// ([`Delivered`]) once acknowledged, or to [`Error::Delivery`] when Kafka finally refused it
/// ([`Error::DeliveryLost`] if the producer went away first).
///
/// (Not to be confused with `amqp::AmqpDelivery`, a message delivered *to* this process.)
#[derive(Debug)]
#[must_use = "a DeliveryReport tells whether the message was stored: await it"]
pub struct DeliveryReport {
    rx: oneshot::Receiver<Report>,
}

impl Future for DeliveryReport {
    type Output = Result<Delivered, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::DeliveryLost)))
    }
}

/// What a delivery report goes to: one waiting [`DeliveryReport`] (with its topic's
/// metrics), or a sink's shared counters. Each enqueued message holds one in-flight slot,
/// given back when its report arrives.
pub(crate) enum Token {
    One {
        tx: Mutex<Option<oneshot::Sender<Report>>>,
        metrics: Arc<TopicMetrics>,
    },
    Sink(Arc<SinkState>),
}

/// Delivery state shared by a [`KafkaSink`] and its messages in flight. The sink counts
/// what it sent; reports count here (a line only the delivery thread writes per message),
/// and wake the sink only when a flush waits for that count or a delivery failed. Messages
/// reach it through a token the sink replaces every [`TOKEN_USES`] messages, so the token's
/// reference count is not written by both threads for every message.
pub(crate) struct SinkState {
    /// The sink's topic's delivery metrics.
    metrics: Arc<TopicMetrics>,
    reported: AtomicU64,
    /// While a flush or close waits: how many were sent; otherwise `u64::MAX`.
    flush_at: AtomicU64,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
    waker: AtomicWaker,
}

impl SinkState {
    fn new(metrics: Arc<TopicMetrics>) -> Self {
        Self {
            metrics,
            reported: AtomicU64::new(0),
            flush_at: AtomicU64::new(u64::MAX),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            waker: AtomicWaker::new(),
        }
    }
}

/// A producer's per-topic delivery metrics, built once per topic. The first topic sent to
/// (usually the only one) is found without a lock; others through a map.
#[derive(Default)]
struct Topics {
    first: OnceLock<Arc<TopicMetrics>>,
    others: Mutex<HashMap<Box<str>, Arc<TopicMetrics>>>,
}

impl Topics {
    /// Runs `f` with `topic`'s metrics (no reference count touched for the first topic).
    fn with<R>(&self, topic: &str, f: impl FnOnce(&TopicMetrics) -> R) -> R {
        if let Some(first) = self.first.get()
            && *first.topic == *topic
        {
            return f(first);
        }
        f(&self.get(topic))
    }

    fn get(&self, topic: &str) -> Arc<TopicMetrics> {
        let first = self
            .first
            .get_or_init(|| Arc::new(TopicMetrics::new(topic)));
        if *first.topic == *topic {
            return first.clone();
        }
        let mut others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = others.get(topic) {
            return m.clone();
        }
        let m = Arc::new(TopicMetrics::new(topic));
        others.insert(topic.into(), m.clone());
        m
    }
}

struct DeliveryContext {
    in_flight: Arc<InFlight>,
    lanes: Arc<Lanes>,
    detached: Arc<DetachedLanes>,
    topics: Arc<Topics>,
}

/// Counts a delivery in its topic's metrics.
fn count_delivery(metrics: &TopicMetrics, result: &DeliveryResult<'_>) {
    match result {
        Ok(m) => {
            metrics.delivered.increment(1);
            if let Some(latency) = ffi::delivery_latency(m) {
                metrics.seconds.record(latency);
            }
        }
        Err(_) => metrics.errors.increment(1),
    }
}

/// The error of a failed delivery.
fn delivery_error(e: &KafkaError, m: &rdkafka::message::BorrowedMessage<'_>) -> Error {
    Error::Delivery {
        topic: m.topic().to_string(),
        source: e.clone(),
    }
}

impl DeliveryContext {
    /// Counts a lane's report in its topic's metrics (a token carries its own).
    fn count(&self, result: &DeliveryResult<'_>) {
        let topic = match result {
            Ok(m) => m.topic(),
            Err((_, m)) => m.topic(),
        };
        self.topics
            .with(topic, |metrics| count_delivery(metrics, result));
    }
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Opaque;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Opaque) {
        self.in_flight.give_back();
        let token = match opaque.target() {
            Target::Token(token) => token,
            Target::Lane { lane, slot } => {
                self.count(result);
                let r = match result {
                    Ok(_) => Ok(()),
                    Err((e, m)) => Err(delivery_error(e, m)),
                };
                lane::report(&self.lanes, lane, slot, r);
                return;
            }
            Target::Detached { lane, weight } => {
                self.count(result);
                detached::report(&self.detached, lane, weight, result);
                return;
            }
        };
        let metrics = match &*token {
            Token::One { metrics, .. } => &**metrics,
            Token::Sink(state) => &*state.metrics,
        };
        count_delivery(metrics, result);
        let report = || match result {
            Ok(m) => Ok(Delivered {
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, m)) => Err(delivery_error(e, m)),
        };
        match &*token {
            Token::One { tx, .. } => {
                let tx = tx.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(tx) = tx {
                    let _ = tx.send(report());
                }
            }
            Token::Sink(state) => {
                if let Err(e) = report() {
                    state
                        .error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e);
                    state.failed.store(true, Ordering::SeqCst);
                    state.waker.wake();
                }
                let reported = state.reported.fetch_add(1, Ordering::SeqCst) + 1;
                if reported == state.flush_at.load(Ordering::SeqCst) {
                    state.waker.wake();
                }
            }
        }
    }
}

pub(crate) struct Inner {
    /// Topic handles made for producing, by name; never removed while the client lives.
    /// Declared before `producer`: they are released before the client is destroyed.
    handles: Mutex<HashMap<String, ffi::TopicHandle>>,
    producer: ThreadedProducer<DeliveryContext>,
    pub(crate) in_flight: Arc<InFlight>,
    flush_timeout: Duration,
    topics: Arc<Topics>,
    lanes: Arc<Lanes>,
    detached: Arc<DetachedLanes>,
}

/// The topic handle a sender used last, so that producing to one topic again takes no
/// lookup (a comparison of names). Valid while the producer it came from lives: keep it
/// beside a clone of that producer.
#[derive(Debug, Default)]
pub(crate) struct TopicCache {
    name: String,
    rkt: Option<Rkt>,
}

/// A topic handle's pointer, owned by the producer's `Inner::handles`.
#[derive(Debug, Clone, Copy)]
struct Rkt(std::ptr::NonNull<rdkafka::bindings::rd_kafka_topic_t>);

// SAFETY: librdkafka topic handles may be used from any thread; the pointer stays valid while
// the producer (whose map owns the handle) lives, which every holder of a cache keeps alive.
#[allow(unsafe_code)]
unsafe impl Send for Rkt {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl Sync for Rkt {}

impl Inner {
    /// The handle of `topic`, made at its first use; an error when the name cannot be a
    /// topic's (what producing by name would say).
    #[allow(unsafe_code)]
    fn topic(&self, topic: &str, cache: &mut TopicCache) -> Result<Rkt, KafkaError> {
        if let Some(rkt) = cache.rkt
            && cache.name == topic
        {
            return Ok(rkt);
        }
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let rkt = match handles.get(topic) {
            Some(h) => h.ptr(),
            None => {
                // SAFETY: the handle lives in `handles`, dropped before `producer` (field
                // order), so before the client is destroyed.
                let h = unsafe { ffi::TopicHandle::new(self.producer.client(), topic) }?;
                let ptr = h.ptr();
                handles.insert(topic.to_owned(), h);
                ptr
            }
        };
        let rkt = Rkt(rkt);
        cache.name.clear();
        cache.name.push_str(topic);
        cache.rkt = Some(rkt);
        Ok(rkt)
    }
}

/// A Kafka producer; cheap to clone (clones share the client).
#[derive(Clone)]
pub struct KafkaProducer {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("in_flight", &self.inner.producer.in_flight_count())
            .finish()
    }
}

impl KafkaProducer {
    /// Enqueues `record` for `topic`, waiting while `max_in_flight` messages are
    /// unacknowledged; the returned [`DeliveryReport`] resolves with Kafka's acknowledgement.
    ///
    /// # Errors
    /// [`Error::Kafka`] when librdkafka refuses the message (too large, unknown partition...).
    pub async fn send(&self, topic: &str, record: &Record) -> Result<DeliveryReport, Error> {
        let slot = self.inner.in_flight.take().await;
        let (tx, rx) = oneshot::channel();
        let token = Arc::new(Token::One {
            tx: Mutex::new(Some(tx)),
            metrics: self.inner.topics.get(topic),
        });
        // librdkafka's own queue may be full (by bytes): wait for deliveries to drain it.
        let mut cache = TopicCache::default();
        while !self.enqueue(topic, &mut cache, record, || Opaque::token(token.clone()))? {
            tokio::time::sleep(QUEUE_FULL_RETRY).await;
        }
        slot.keep();
        Ok(DeliveryReport { rx })
    }

    /// A delivery lane of `capacity` messages (at most 2^31 on 64-bit targets): many
    /// messages and their reports without an allocation per message; see [`crate::lane`].
    ///
    /// # Errors
    /// [`Error::TooManyLanes`] when the producer has as many lanes open as it can number.
    pub fn lane(&self, capacity: usize) -> Result<(LaneSender, LaneReports), Error> {
        lane::open(self.clone(), self.inner.lanes.clone(), capacity)
    }

    /// A detached lane: messages sent without a report each; delivered ones are given to
    /// `on_delivered(messages, summed weight)` in bulk on the delivery thread (at least every
    /// `release_every` of weight, and whenever the lane has nothing in flight: keep it
    /// short and non-blocking), failed ones come back whole; with `age`, each delivered
    /// message's seconds since its timestamp are recorded there; see [`crate::detached`].
    ///
    /// # Errors
    /// [`Error::TooManyLanes`] when the producer has as many detached lanes open as it can
    /// number.
    pub fn detached(
        &self,
        release_every: u64,
        age: Option<metrics::Histogram>,
        on_delivered: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Result<(DetachedSender, Returns), Error> {
        detached::open(
            self.clone(),
            self.inner.detached.clone(),
            release_every,
            age,
            Box::new(on_delivered),
        )
    }

    /// Makes librdkafka give up every message it holds, queued or in flight (a shutdown
    /// deadline): each one's report is a failure (`PurgeQueue`, `PurgeInflight`) and comes
    /// as such, through its [`DeliveryReport`], lane or [`Returns`]. A message in flight may
    /// still have reached the broker. Does not wait.
    ///
    /// # Errors
    /// [`Error::Kafka`] when librdkafka refuses (it does not for a producer).
    #[allow(unsafe_code)]
    pub fn purge(&self) -> Result<(), Error> {
        use rdkafka::bindings as rdsys;
        let flags = rdsys::RD_KAFKA_PURGE_F_QUEUE
            | rdsys::RD_KAFKA_PURGE_F_INFLIGHT
            | rdsys::RD_KAFKA_PURGE_F_NON_BLOCKING;
        // SAFETY: a live producer handle; the non-blocking purge only marks messages and
        // queues their reports.
        let err =
            unsafe { rdsys::rd_kafka_purge(self.inner.producer.client().native_ptr(), flags) };
        match RDKafkaErrorCode::from(err) {
            RDKafkaErrorCode::NoError => Ok(()),
            code => Err(Error::Kafka {
                op: "purge producer queues".into(),
                source: KafkaError::MessageProduction(code),
            }),
        }
    }

    /// Hands the record to librdkafka with the opaque `make` builds (the caller holds an
    /// in-flight slot, kept until the delivery report); `Ok(false)` when librdkafka's queue
    /// is full.
    #[allow(unsafe_code)]
    pub(crate) fn enqueue(
        &self,
        topic: &str,
        cache: &mut TopicCache,
        record: &Record,
        make: impl FnOnce() -> Opaque,
    ) -> Result<bool, Error> {
        let rkt = self
            .inner
            .topic(topic, cache)
            .map_err(|source| Error::Kafka {
                op: format!("produce to topic {topic}"),
                source,
            })?;
        let m = ffi::Produce {
            partition: record.partition.unwrap_or(-1),
            key: record.key.as_deref(),
            payload: record.payload.as_deref(),
            headers: &record.headers,
            timestamp: record.timestamp.unwrap_or(0),
        };
        let opaque = make().into_ptr();
        // SAFETY: `rkt` is a live handle of this client (owned by `self.inner`) and the
        // opaque is what `DeliveryContext` reads back.
        let err = unsafe { ffi::produce(self.inner.producer.client(), rkt.0.as_ptr(), &m, opaque) };
        if err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Ok(true);
        }
        // SAFETY: refused: the opaque made above was not taken; reclaimed once, here.
        drop(unsafe { Opaque::from_ptr(opaque) });
        match RDKafkaErrorCode::from(err) {
            RDKafkaErrorCode::QueueFull => Ok(false),
            code => Err(Error::Kafka {
                op: format!("produce to topic {topic}"),
                source: KafkaError::MessageProduction(code),
            }),
        }
    }

    /// Waits until every message enqueued so far (through `send` or any sink) was
    /// acknowledged or failed, at most the flush timeout. It watches librdkafka's own count
    /// of enqueued, unreported messages every millisecond (rust-rdkafka's `flush` polls in
    /// 100 ms slices that the producer's polling thread leaves empty). A record a sink holds
    /// back while librdkafka's queue is full is not enqueued yet: flush the sink for that.
    ///
    /// # Errors
    /// [`Error::Kafka`] when the timeout passed first.
    pub async fn flush(&self) -> Result<(), Error> {
        let producer = &self.inner.producer;
        let drained = async {
            while producer.in_flight_count() > 0 {
                tokio::time::sleep(FLUSH_RECHECK).await;
            }
        };
        tokio::time::timeout(self.inner.flush_timeout, drained)
            .await
            .map_err(|_| Error::Kafka {
                op: format!(
                    "flush producer: {} messages unacknowledged after {:?}",
                    producer.in_flight_count(),
                    self.inner.flush_timeout
                ),
                source: KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
            })
    }

    /// A `Sink` of records for `topic` sharing this producer's client and in-flight bound.
    pub fn sink(&self, topic: impl Into<String>) -> KafkaSink {
        let topic = topic.into();
        let metrics = self.inner.topics.get(&topic);
        KafkaSink {
            producer: self.clone(),
            topic,
            cache: TopicCache::default(),
            state: Arc::new(SinkState::new(metrics)),
            token: None,
            sent: 0,
            slots: 0,
            wait: PollWait::default(),
            blocked: None,
            retry: None,
        }
    }
}

/// How often [`KafkaProducer::flush`] looks at librdkafka's count of unreported messages.
const FLUSH_RECHECK: Duration = Duration::from_millis(1);

/// How many messages carry the same sink token before the sink makes a new one.
const TOKEN_USES: u32 = 64;

/// How long to wait before retrying when librdkafka's own queue is full (its byte bound,
/// `queue.buffering.max.kbytes`, is reached before the in-flight bound).
pub(crate) const QUEUE_FULL_RETRY: Duration = Duration::from_millis(2);

/// A `futures::Sink` of [`Record`]s for one topic; see the [module docs](self).
///
/// `poll_ready` waits for room under the producer's in-flight bound and reports a failed
/// delivery as soon as it is known; `flush` and `close` wait for every acknowledgement.
/// When librdkafka's own queue is full (by bytes) the sink keeps the record and retries,
/// so `poll_ready` waits instead of failing. A sink reserves room under the bound for up to
/// 64 messages at a time (never more than 1/16 of `max_in_flight`); what it has not used
/// goes back when it is closed or dropped.
pub struct KafkaSink {
    producer: KafkaProducer,
    topic: String,
    /// The topic's handle (valid while `producer` lives).
    cache: TopicCache,
    state: Arc<SinkState>,
    /// The token current messages carry, and how many more may carry it.
    token: Option<(Arc<Token>, u32)>,
    /// Records handed to librdkafka (compared with the reports counted in `state`).
    sent: u64,
    /// In-flight slots reserved by `poll_ready` and not used yet (taken a chunk at a time).
    slots: usize,
    /// Registration while waiting for an in-flight slot.
    wait: PollWait,
    /// A record librdkafka's full queue refused; it holds a slot and is retried first.
    blocked: Option<Record>,
    retry: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        // Unused slots, and the one a blocked record holds, go back.
        let held = self.slots + usize::from(self.blocked.is_some());
        let in_flight = &self.producer.inner.in_flight;
        in_flight.give_back_many(held);
        in_flight.cancel_wait(&mut self.wait);
    }
}

impl KafkaSink {
    /// The token for the next message.
    fn token(&mut self) -> Arc<Token> {
        match &mut self.token {
            Some((token, uses)) if *uses > 0 => {
                *uses -= 1;
                token.clone()
            }
            _ => {
                let token = Arc::new(Token::Sink(self.state.clone()));
                self.token = Some((token.clone(), TOKEN_USES - 1));
                token
            }
        }
    }

    /// The first failed delivery not reported yet.
    fn take_error(&self) -> Option<Error> {
        let state = &self.state;
        if !state.failed.load(Ordering::SeqCst) {
            return None;
        }
        let error = state.error.lock().unwrap_or_else(|e| e.into_inner()).take();
        if error.is_some() {
            state.failed.store(false, Ordering::SeqCst);
        }
        error
    }

    /// Hands `record` (holding a slot) to librdkafka; keeps it as `blocked` when the queue
    /// is full.
    fn hand_over(&mut self, record: Record) -> Result<(), Error> {
        let token = self.token();
        match self
            .producer
            .enqueue(&self.topic, &mut self.cache, &record, || {
                Opaque::token(token)
            }) {
            Ok(true) => {
                self.sent += 1;
                Ok(())
            }
            Ok(false) => {
                self.blocked = Some(record);
                Ok(())
            }
            Err(e) => {
                self.producer.inner.in_flight.give_back();
                Err(e)
            }
        }
    }

    /// Retries a blocked record; ready once there is none.
    fn poll_blocked(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while let Some(record) = self.blocked.take() {
            if let Some(retry) = self.retry.as_mut() {
                if retry.as_mut().poll(cx).is_pending() {
                    self.blocked = Some(record);
                    return Poll::Pending;
                }
                self.retry = None;
            }
            self.hand_over(record)?;
            if self.blocked.is_some() {
                self.retry = Some(Box::pin(tokio::time::sleep(QUEUE_FULL_RETRY)));
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Ready once every message sent was acknowledged; the first failure is returned.
    fn poll_deliveries(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if let Some(e) = self.take_error() {
            return Poll::Ready(Err(e));
        }
        if self.poll_blocked(cx)?.is_pending() {
            return Poll::Pending;
        }
        let sent = self.sent;
        let state = &self.state;
        if state.reported.load(Ordering::SeqCst) >= sent {
            state.flush_at.store(u64::MAX, Ordering::SeqCst);
            return Poll::Ready(Ok(()));
        }
        state.waker.register(cx.waker());
        state.flush_at.store(sent, Ordering::SeqCst);
        let reported = state.reported.load(Ordering::SeqCst);
        if let Some(e) = self.take_error() {
            return Poll::Ready(Err(e));
        }
        if reported >= sent {
            self.state.flush_at.store(u64::MAX, Ordering::SeqCst);
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

impl Sink<Record> for KafkaSink {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = &mut *self;
        if let Some(e) = this.take_error() {
            return Poll::Ready(Err(e));
        }
        if this.poll_blocked(cx)?.is_pending() {
            return Poll::Pending;
        }
        if this.slots > 0 {
            return Poll::Ready(Ok(()));
        }
        let in_flight = &this.producer.inner.in_flight;
        if !this.wait.is_waiting() {
            this.slots = in_flight.try_take_up_to(in_flight.chunk());
            if this.slots > 0 {
                return Poll::Ready(Ok(()));
            }
        }
        if in_flight.poll_take(&mut this.wait, cx).is_pending() {
            // Failures are reported as soon as they are known, even while waiting.
            this.state.waker.register(cx.waker());
            return match this.take_error() {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            };
        }
        this.slots = 1;
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, record: Record) -> Result<(), Error> {
        let this = &mut *self;
        // Without poll_ready first there may be a record still blocked, or no room.
        if this.blocked.is_none() && this.slots > 0 {
            this.slots -= 1;
        } else if this.blocked.is_some() || !this.producer.inner.in_flight.try_take() {
            return Err(Error::Kafka {
                op: format!(
                    "produce to topic {}: start_send without poll_ready",
                    this.topic
                ),
                source: KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
            });
        }
        this.hand_over(record)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_deliveries(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let unused = std::mem::take(&mut self.slots);
        self.producer.inner.in_flight.give_back_many(unused);
        self.poll_deliveries(cx)
    }
}
