//! A Kafka producer with bounded in-flight messages and delivery acknowledgements.
//!
//! [`KafkaProducer::send`] waits for room (at most
//! [`max_in_flight`](ProducerConfig::max_in_flight) messages are unacknowledged), enqueues the
//! message and returns a [`Delivery`] future that resolves once Kafka acknowledged it (or
//! the delivery failed). [`KafkaSink`] is the same as a `futures::Sink`: flushing or closing
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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::Sink;
use futures::task::AtomicWaker;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::PollSemaphore;

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
            max_in_flight: 10_000,
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

    /// At most this many messages are enqueued and not yet acknowledged (default 10 000);
    /// sending more waits.
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
        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        let producer: ThreadedProducer<DeliveryContext> = c
            .create_with_context(DeliveryContext {
                permits: permits.clone(),
            })
            .map_err(kafka_err(format!("create producer for {}", self.brokers)))?;
        Ok(KafkaProducer {
            inner: Arc::new(Inner {
                producer,
                permits,
                flush_timeout: self.flush_timeout,
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

/// Resolves when Kafka acknowledged (or finally refused) one message.
#[derive(Debug)]
#[must_use = "a Delivery tells whether the message was stored"]
pub struct Delivery {
    rx: oneshot::Receiver<Report>,
}

impl Future for Delivery {
    type Output = Result<Delivered, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::DeliveryLost)))
    }
}

/// What a delivery report goes to: one waiting [`Delivery`], or a sink's shared counters.
/// Each enqueued message holds one in-flight permit, given back when its report arrives.
enum Token {
    One(std::sync::Mutex<Option<oneshot::Sender<Report>>>),
    Sink(SinkState),
}

/// Delivery state shared by a [`KafkaSink`] and its messages in flight (no per-message
/// allocation: every message holds a clone of the same `Arc`).
#[derive(Default)]
struct SinkState {
    outstanding: AtomicUsize,
    error: std::sync::Mutex<Option<Error>>,
    waker: AtomicWaker,
}

struct DeliveryContext {
    permits: Arc<Semaphore>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<Token>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Arc<Token>) {
        self.permits.add_permits(1);
        let report = || match result {
            Ok(m) => Ok(Delivered {
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, m)) => Err(Error::Delivery {
                topic: m.topic().to_string(),
                source: e.clone(),
            }),
        };
        match &*token {
            Token::One(tx) => {
                let tx = tx.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(tx) = tx {
                    let _ = tx.send(report());
                }
            }
            Token::Sink(state) => {
                let failed = if let Err(e) = report() {
                    state
                        .error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e);
                    true
                } else {
                    false
                };
                if state.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 || failed {
                    state.waker.wake();
                }
            }
        }
    }
}

struct Inner {
    producer: ThreadedProducer<DeliveryContext>,
    permits: Arc<Semaphore>,
    flush_timeout: Duration,
}

/// A Kafka producer; cheap to clone (clones share the client).
#[derive(Clone)]
pub struct KafkaProducer {
    inner: Arc<Inner>,
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
    /// unacknowledged; the returned [`Delivery`] resolves with Kafka's acknowledgement.
    ///
    /// # Errors
    /// [`Error::Kafka`] when librdkafka refuses the message (too large, unknown partition...).
    pub async fn send(&self, topic: &str, record: &Record) -> Result<Delivery, Error> {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::DeliveryLost)?;
        let (tx, rx) = oneshot::channel();
        let mut pending = (
            Arc::new(Token::One(std::sync::Mutex::new(Some(tx)))),
            permit,
        );
        loop {
            match self.enqueue(topic, record, pending.0, pending.1)? {
                None => return Ok(Delivery { rx }),
                // librdkafka's own queue is full (by bytes): wait for deliveries to drain it.
                Some(back) => {
                    pending = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }

    /// Hands the record to librdkafka; gives the token and permit back when its queue is
    /// full. On success the permit is kept until the delivery report.
    #[allow(clippy::type_complexity)]
    fn enqueue(
        &self,
        topic: &str,
        record: &Record,
        token: Arc<Token>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Option<(Arc<Token>, OwnedSemaphorePermit)>, Error> {
        let mut r: BaseRecord<'_, [u8], [u8], Arc<Token>> =
            BaseRecord::with_opaque_to(topic, token);
        if let Some(k) = &record.key {
            r = r.key(k.as_ref());
        }
        if let Some(p) = &record.payload {
            r = r.payload(p.as_ref());
        }
        if let Some(p) = record.partition {
            r = r.partition(p);
        }
        if let Some(t) = record.timestamp {
            r = r.timestamp(t);
        }
        if !record.headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                h = h.insert(Header {
                    key,
                    value: Some(value.as_ref()),
                });
            }
            r = r.headers(h);
        }
        match self.inner.producer.send(r) {
            Ok(()) => {
                // Given back by the delivery report (DeliveryContext::delivery).
                permit.forget();
                Ok(None)
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                Ok(Some((r.delivery_opaque, permit)))
            }
            Err((e, _)) => Err(Error::Kafka {
                op: format!("produce to topic {topic}"),
                source: e,
            }),
        }
    }

    /// Waits until every enqueued message was acknowledged or failed (at most the flush
    /// timeout).
    ///
    /// # Errors
    /// [`Error::Kafka`] when the timeout passed first.
    pub async fn flush(&self) -> Result<(), Error> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.producer.flush(inner.flush_timeout))
            .await
            .unwrap_or(Ok(()))
            .map_err(kafka_err("flush producer"))
    }

    /// A `Sink` of records for `topic` sharing this producer's client and in-flight bound.
    pub fn sink(&self, topic: impl Into<String>) -> KafkaSink {
        KafkaSink {
            producer: self.clone(),
            topic: topic.into(),
            semaphore: PollSemaphore::new(self.inner.permits.clone()),
            permit: None,
            token: Arc::new(Token::Sink(SinkState::default())),
        }
    }
}

/// A `futures::Sink` of [`Record`]s for one topic; see the [module docs](self).
///
/// `poll_ready` waits for room under the producer's in-flight bound and reports a failed
/// delivery as soon as it is known; `flush` and `close` wait for every acknowledgement.
pub struct KafkaSink {
    producer: KafkaProducer,
    topic: String,
    semaphore: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
    token: Arc<Token>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    fn state(&self) -> Option<&SinkState> {
        match &*self.token {
            Token::Sink(s) => Some(s),
            Token::One(_) => None,
        }
    }

    /// The first failed delivery not reported yet.
    fn take_error(&self) -> Option<Error> {
        self.state()?
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Ready once every message sent was acknowledged; the first failure is returned.
    fn poll_deliveries(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let Some(state) = self.state() else {
            return Poll::Ready(Ok(()));
        };
        state.waker.register(cx.waker());
        if let Some(e) = self.take_error() {
            return Poll::Ready(Err(e));
        }
        match self.state() {
            Some(s) if s.outstanding.load(Ordering::Acquire) > 0 => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl Sink<Record> for KafkaSink {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if let Some(e) = self.take_error() {
            return Poll::Ready(Err(e));
        }
        if self.permit.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.semaphore.poll_acquire(cx) {
            Poll::Ready(Some(p)) => {
                self.permit = Some(p);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(None) => Poll::Ready(Err(Error::DeliveryLost)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn start_send(mut self: Pin<&mut Self>, record: Record) -> Result<(), Error> {
        let permit = match self.permit.take() {
            Some(p) => p,
            None => self
                .semaphore
                .clone_inner()
                .try_acquire_owned()
                .map_err(|_| Error::Kafka {
                    op: format!(
                        "produce to topic {}: start_send without poll_ready",
                        self.topic
                    ),
                    source: KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                })?,
        };
        let Some(state) = self.state() else {
            return Err(Error::DeliveryLost);
        };
        state.outstanding.fetch_add(1, Ordering::AcqRel);
        let result = self
            .producer
            .enqueue(&self.topic, &record, self.token.clone(), permit);
        let full = match result {
            Ok(None) => return Ok(()),
            Ok(Some(_)) => Error::Kafka {
                op: format!(
                    "produce to topic {}: librdkafka queue full (raise queue.buffering.max.kbytes)",
                    self.topic
                ),
                source: KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
            },
            Err(e) => e,
        };
        if let Some(state) = self.state() {
            state.outstanding.fetch_sub(1, Ordering::AcqRel);
        }
        Err(full)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_deliveries(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.permit = None;
        self.poll_deliveries(cx)
    }
}
