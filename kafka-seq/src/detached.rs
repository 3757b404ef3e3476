//! Detached lanes: many messages, no per-message report, failures handed back whole.
//!
//! A [lane](crate::lane) reports every message, in order, to whoever holds its ticket: the
//! sender keeps each record until its report (to retry it, to answer a client). A forwarder
//! that needs nothing per delivered message but the room it held (a syslog TCP stream has
//! nobody to answer) pays for that bookkeeping for nothing. A detached lane keeps none: a
//! [`DetachedSender`] hands a record and its *weight* (a number of the caller's, say the
//! bytes it holds under a budget) to librdkafka and forgets it. Delivered messages are
//! counted on the delivery thread and given to the lane's `on_delivered` callback in bulk
//! (messages, summed weight), at least every `release_every` of weight and whenever the
//! lane has nothing in flight; optionally, each delivered message's age (from its
//! timestamp to its acknowledgement, by the kernel's coarse clock) goes to a histogram. A
//! message Kafka refuses comes back whole (topic, key, payload, headers, timestamp, its
//! weight and the error, copied from librdkafka's report) through [`Returns::next`], for
//! the caller to retry, dead-letter or keep; once `next` says the lane is done, every
//! delivered message was given to `on_delivered`. At a shutdown deadline,
//! [`KafkaProducer::purge`](crate::KafkaProducer::purge) makes librdkafka hand back
//! everything it still holds, the same way.
//!
//! ```no_run
//! # async fn run() -> Result<(), kafka_seq::Error> {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use kafka_seq::{ProducerConfig, Record};
//!
//! let producer = ProducerConfig::new("127.0.0.1:9092").create()?;
//! let delivered = Arc::new(AtomicU64::new(0));
//! let counted = delivered.clone();
//! let (mut sender, mut returns) = producer.detached(64 * 1024, None, move |messages, _weight| {
//!     counted.fetch_add(messages, Ordering::Relaxed);
//! })?;
//! let failures = tokio::spawn(async move {
//!     let mut failed = Vec::new();
//!     while let Some(r) = returns.next().await {
//!         failed.push(r); // retry, dead-letter or keep it
//!     }
//!     failed
//! });
//! for i in 0..100_000 {
//!     let record = Record::new(format!("event {i}"));
//!     sender.send("events", &record, 1).await?;
//! }
//! drop(sender);
//! let failed = failures.await.expect("returns task");
//! assert_eq!(delivered.load(Ordering::Relaxed) + failed.len() as u64, 100_000);
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::Bytes;
use futures::task::AtomicWaker;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::DeliveryResult;

use crate::Error;
use crate::opaque::{MAX_SLOTS, Opaque};
use crate::producer::{KafkaProducer, Record, TopicCache};
use crate::registry::{Registered, Registration, Registry, register};

/// The largest weight one message may carry (`2^31 - 1` on 64-bit targets); a larger one is
/// counted as this.
pub const MAX_WEIGHT: u32 = if MAX_SLOTS - 1 > u32::MAX as usize {
    u32::MAX
} else {
    (MAX_SLOTS - 1) as u32
};

/// Called on the delivery thread with (messages delivered, their summed weight).
type OnDelivered = Box<dyn Fn(u64, u64) + Send + Sync>;

/// A producer's detached lanes, found by number from the delivery thread.
pub(crate) type DetachedLanes = Registry<DetachedShared>;

/// A message Kafka did not take, handed back whole.
#[derive(Debug)]
#[non_exhaustive]
pub struct Returned {
    /// The topic it was sent to.
    pub topic: String,
    /// The record as librdkafka held it: key, payload, headers and timestamp (`partition`
    /// is `None`: the partitioner's choice is not kept).
    pub record: Record,
    /// The weight it was sent with (not counted as delivered).
    pub weight: u32,
    /// Why: [`Error::Delivery`] with librdkafka's error (a purge is
    /// `RDKafkaErrorCode::PurgeQueue` or `PurgeInflight`).
    pub error: Error,
}

/// The state of one detached lane, shared by its halves and the delivery thread.
pub(crate) struct DetachedShared {
    /// Messages handed to librdkafka and not reported.
    outstanding: AtomicUsize,
    /// Delivered messages and their weight not given to `on_delivered` yet (changed on the
    /// delivery thread only).
    delivered: AtomicU64,
    weight: AtomicU64,
    release_every: u64,
    on_delivered: OnDelivered,
    /// Records, per delivered message with a timestamp, the seconds since it.
    age: Option<metrics::Histogram>,
    /// Failed messages not taken yet. Their weight is not given to `on_delivered`: a
    /// caller whose weights are a budget (syslogger's bytes) cannot send more than its
    /// budget past untaken failures, which bounds this queue.
    returned: Mutex<VecDeque<Returned>>,
    waker: AtomicWaker,
    /// The sender is gone: no more messages will come.
    sender_gone: AtomicBool,
    /// Both halves are gone (written under the registry lock).
    closed: AtomicBool,
}

impl Registered for DetachedShared {
    fn outstanding(&self) -> &AtomicUsize {
        &self.outstanding
    }
    fn closed(&self) -> &AtomicBool {
        &self.closed
    }
}

impl std::fmt::Debug for DetachedShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetachedShared")
            .field("outstanding", &self.outstanding.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl DetachedShared {
    /// Gives the delivered messages not given yet to `on_delivered`.
    fn release(&self) {
        let messages = self.delivered.swap(0, Ordering::Relaxed);
        let weight = self.weight.swap(0, Ordering::Relaxed);
        if messages > 0 || weight > 0 {
            (self.on_delivered)(messages, weight);
        }
    }
}

/// Called on the delivery thread with the registry: counts the delivered message or hands
/// back the failed one, and removes the lane once it is closed and this was its last
/// message.
pub(crate) fn report(lanes: &DetachedLanes, lane: usize, weight: u32, result: &DeliveryResult<'_>) {
    let mut lanes = lanes.lock().unwrap_or_else(|e| e.into_inner());
    let Some(shared) = lanes.get(lane) else {
        return;
    };
    // Only this thread lowers the count: when it is 1, this is the last message in flight
    // (unless the sender adds one meanwhile, whose report comes later). What the returns
    // side may see once the count is 0 (the failure, the counts given) is done first.
    let last = shared.outstanding.load(Ordering::SeqCst) == 1;
    match result {
        Ok(m) => {
            if let Some(age) = &shared.age
                && let Some(ts) = m.timestamp().to_millis()
            {
                let millis = (crate::ffi::coarse_now_millis() - ts).max(0);
                age.record(millis as f64 / 1000.0);
            }
            shared.delivered.fetch_add(1, Ordering::Relaxed);
            let w = shared
                .weight
                .fetch_add(u64::from(weight), Ordering::Relaxed)
                + u64::from(weight);
            if w >= shared.release_every || last {
                shared.release();
            }
        }
        Err((e, m)) => {
            let topic = m.topic().to_string();
            let returned = Returned {
                topic: topic.clone(),
                record: Record {
                    key: m.key().map(Bytes::copy_from_slice),
                    payload: m.payload().map(Bytes::copy_from_slice),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| {
                                    (
                                        h.key.to_string(),
                                        Bytes::copy_from_slice(h.value.unwrap_or_default()),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    partition: None,
                    timestamp: crate::ffi::failed_timestamp(m),
                },
                weight,
                error: Error::Delivery {
                    topic,
                    source: e.clone(),
                },
            };
            shared
                .returned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(returned);
            if last {
                shared.release();
            }
        }
    }
    let left = shared.outstanding.fetch_sub(1, Ordering::SeqCst) - 1;
    if left == 0 && !last {
        // The sender took back a message it could not enqueue meanwhile: this was the last.
        shared.release();
    }
    // The returns side waits for a failure, or for the end once the sender is gone.
    if result.is_err() || left == 0 {
        shared.waker.wake();
    }
    if left == 0 && shared.closed.load(Ordering::SeqCst) {
        lanes.remove(lane);
    }
}

/// Opens a detached lane on `producer`.
pub(crate) fn open(
    producer: KafkaProducer,
    lanes: Arc<DetachedLanes>,
    release_every: u64,
    age: Option<metrics::Histogram>,
    on_delivered: OnDelivered,
) -> Result<(DetachedSender, Returns), Error> {
    let shared = Arc::new(DetachedShared {
        outstanding: AtomicUsize::new(0),
        delivered: AtomicU64::new(0),
        weight: AtomicU64::new(0),
        release_every: release_every.max(1),
        on_delivered,
        age,
        returned: Mutex::new(VecDeque::new()),
        waker: AtomicWaker::new(),
        sender_gone: AtomicBool::new(false),
        closed: AtomicBool::new(false),
    });
    let registration = register(lanes, shared.clone())?;
    Ok((
        DetachedSender {
            producer,
            topic: TopicCache::default(),
            shared: shared.clone(),
            registration: registration.clone(),
        },
        Returns {
            shared,
            registration,
        },
    ))
}

/// The sending half of a detached lane: see the [module docs](self).
pub struct DetachedSender {
    producer: KafkaProducer,
    /// The topic handle used last (valid while `producer` lives).
    topic: TopicCache,
    shared: Arc<DetachedShared>,
    registration: Arc<Registration<DetachedShared>>,
}

impl std::fmt::Debug for DetachedSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetachedSender")
            .field("lane", &self.registration.lane)
            .finish_non_exhaustive()
    }
}

impl Drop for DetachedSender {
    fn drop(&mut self) {
        self.shared.sender_gone.store(true, Ordering::SeqCst);
        self.shared.waker.wake();
    }
}

impl DetachedSender {
    /// [`send`](Self::send) without waiting: `Ok(false)` (nothing sent) when the producer's
    /// in-flight bound is reached or librdkafka's queue is full.
    ///
    /// # Errors
    /// [`Error::Kafka`] when librdkafka refuses the message at once (too large, unknown
    /// partition...): it was not sent and its weight is the caller's again.
    pub fn try_send(&mut self, topic: &str, record: &Record, weight: u32) -> Result<bool, Error> {
        if !self.producer.inner.in_flight.try_take() {
            return Ok(false);
        }
        match self.enqueue(topic, record, weight) {
            Ok(true) => Ok(true),
            r => {
                self.producer.inner.in_flight.give_back();
                r
            }
        }
    }

    /// Hands `record` to librdkafka with `weight` (at most [`MAX_WEIGHT`]), waiting while
    /// the producer's in-flight bound is reached or librdkafka's queue is full. Its fate
    /// comes as a count to `on_delivered`, or the record itself through [`Returns::next`].
    ///
    /// # Errors
    /// [`Error::Kafka`] when librdkafka refuses the message at once (too large, unknown
    /// partition...): it was not sent and its weight is the caller's again.
    pub async fn send(&mut self, topic: &str, record: &Record, weight: u32) -> Result<(), Error> {
        let bound = self.producer.inner.in_flight.clone();
        let in_flight = bound.take().await;
        loop {
            match self.enqueue(topic, record, weight) {
                Ok(true) => break,
                Ok(false) => tokio::time::sleep(crate::producer::QUEUE_FULL_RETRY).await,
                Err(e) => return Err(e),
            }
        }
        in_flight.keep();
        Ok(())
    }

    /// One attempt, the caller holding an in-flight slot.
    fn enqueue(&mut self, topic: &str, record: &Record, weight: u32) -> Result<bool, Error> {
        let lane = self.registration.lane;
        let weight = weight.min(MAX_WEIGHT);
        self.shared.outstanding.fetch_add(1, Ordering::SeqCst);
        let r = self.producer.enqueue(topic, &mut self.topic, record, || {
            Opaque::detached(lane, weight)
        });
        if !matches!(r, Ok(true)) && self.shared.outstanding.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The delivery thread may have counted the last delivery as not the last.
            self.shared.release();
        }
        r
    }
}

/// The returning half of a detached lane: see the [module docs](self).
pub struct Returns {
    shared: Arc<DetachedShared>,
    registration: Arc<Registration<DetachedShared>>,
}

impl std::fmt::Debug for Returns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Returns").finish_non_exhaustive()
    }
}

impl Returns {
    /// The next message Kafka did not take; `None` once the sender is dropped and every
    /// message it sent was delivered or handed back.
    pub async fn next(&mut self) -> Option<Returned> {
        let shared = &self.shared;
        let lanes = self.registration.registry();
        let ready = || {
            if let Some(r) = shared
                .returned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            {
                return Some(Some(r));
            }
            // Under the registry's lock, which a report holds throughout: a report's
            // failure and counts are all in, or its message still outstanding.
            let _reports = lanes.lock().unwrap_or_else(|e| e.into_inner());
            if !shared.sender_gone.load(Ordering::SeqCst)
                || shared.outstanding.load(Ordering::SeqCst) != 0
            {
                return None;
            }
            // A failure pushed by the report that made the count 0.
            match shared
                .returned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            {
                Some(r) => Some(Some(r)),
                None => Some(None),
            }
        };
        poll_fn(|cx| {
            if let Some(r) = ready() {
                return Poll::Ready(r);
            }
            shared.waker.register(cx.waker());
            match ready() {
                Some(r) => Poll::Ready(r),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// Messages sent and not yet delivered or handed back.
    pub fn outstanding(&self) -> usize {
        self.shared.outstanding.load(Ordering::SeqCst)
    }
}
