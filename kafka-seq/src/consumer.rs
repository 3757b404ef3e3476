//! A Kafka consumer group as a `Stream` of [`KafkaMessage`]s that commits only what was
//! processed.
//!
//! Each message carries an [`Ack`]. Offsets are committed per partition up to the highest
//! *contiguously* acknowledged offset + 1 — so acknowledging 5 and 7 but not 6 commits 6 —
//! every [`commit_interval`](ConsumerConfig::commit_interval), synchronously when a partition
//! is revoked by a rebalance (before it goes away), and synchronously at shutdown. A message
//! that is never acknowledged (its [`Ack`] is dropped, or [`Ack::nack`]ed) stops the commit
//! point before it for the rest of the assignment, so it is delivered again after a restart
//! or rebalance: at least once, never "committed but not processed".
//!
//! Messages are fetched when the stream is polled, on the polling task, and rebalances are
//! served then too (as with any Kafka consumer: poll at least every `max.poll.interval.ms`).
//! Backpressure: at most [`max_unacked`](ConsumerConfig::max_unacked) messages are out
//! unacknowledged; past that, the stream waits for acknowledgements before fetching more.
//! Remember to acknowledge messages you filter out.
//!
//! ```no_run
//! # async fn run() -> Result<(), kafka_seq::Error> {
//! use futures::StreamExt;
//! use kafka_seq::ConsumerConfig;
//!
//! let mut stream = ConsumerConfig::new("127.0.0.1:9092", "archiver")
//!     .pattern("^logs-.*")
//!     .set("fetch.min.bytes", "65536")
//!     .subscribe()?;
//! let control = stream.control();
//! while let Some(message) = stream.next().await {
//!     let message = message?;
//!     println!("{}/{}@{}", message.topic, message.partition, message.offset);
//!     message.ack.ack();
//! }
//! control.shutdown();
//! control.closed().await?;
//! # Ok(()) }
//! ```

use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::task::AtomicWaker;
use futures::{Stream, StreamExt};
use metrics::Counter;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, MessageStream, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::{Notify, watch};

use crate::ffi;
use crate::metrics::{ConsumerMetrics, describe_once};
use crate::offsets::{Delivered, Part, Tracker};
use crate::{Error, kafka_err};

/// What to subscribe to.
#[derive(Debug, Clone)]
enum Subscription {
    Topics(Vec<String>),
    Pattern(String),
}

/// Configuration of a consumer group stream; [`subscribe`](Self::subscribe) starts it.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    brokers: String,
    group: String,
    subscription: Subscription,
    properties: Vec<(String, String)>,
    commit_interval: Duration,
    max_unacked: usize,
    drain_timeout: Duration,
    close_timeout: Duration,
}

impl ConsumerConfig {
    /// A consumer of group `group` on `brokers` (`host:port,...`). Subscribe to something
    /// with [`topics`](Self::topics) or [`pattern`](Self::pattern).
    pub fn new(brokers: impl Into<String>, group: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            group: group.into(),
            subscription: Subscription::Topics(Vec::new()),
            properties: Vec::new(),
            commit_interval: Duration::from_secs(1),
            max_unacked: 10_000,
            drain_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(30),
        }
    }

    /// Subscribes to these topics.
    pub fn topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subscription = Subscription::Topics(topics.into_iter().map(Into::into).collect());
        self
    }

    /// Subscribes to every topic matching the regular expression `regex` (a leading `^` is
    /// added if missing), including topics created later: they are found on metadata refresh
    /// (`topic.metadata.refresh.interval.ms`, 10 s here unless set).
    pub fn pattern(mut self, regex: &str) -> Self {
        let regex = if regex.starts_with('^') {
            regex.to_string()
        } else {
            format!("^{regex}")
        };
        self.subscription = Subscription::Pattern(regex);
        self
    }

    /// Sets any librdkafka consumer property (`auto.offset.reset`, `session.timeout.ms`,
    /// security settings...). `enable.auto.commit` and `enable.auto.offset.store` are always
    /// false: committing is this crate's job.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// Sets every `(key, value)` pair, as from [`parse_property`](crate::parse_property).
    pub fn set_all<I: IntoIterator<Item = (String, String)>>(mut self, properties: I) -> Self {
        self.properties.extend(properties);
        self
    }

    /// How often acknowledged progress is committed (default 1 s).
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// At most this many messages are out unacknowledged (default 10 000), the bound on the
    /// memory they hold; the stream waits for acknowledgements past it. (What a crash
    /// redelivers is everything after a partition's oldest unacknowledged message.)
    pub fn max_unacked(mut self, messages: usize) -> Self {
        self.max_unacked = messages.clamp(1, 1 << 30);
        self
    }

    /// At shutdown, how long to wait for outstanding messages to be acknowledged before the
    /// final commit (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// At shutdown, after the drain, how long the final synchronous commit and leaving the
    /// group may take (default 30 s). librdkafka waits for an unreachable group coordinator
    /// without limit; past this bound [`ConsumerControl::closed`] reports a timeout, the
    /// uncommitted tail is redelivered later, and the client is abandoned on its own thread
    /// (which never holds up the runtime's shutdown).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .set("auto.offset.reset", "earliest");
        if matches!(self.subscription, Subscription::Pattern(_)) {
            c.set("topic.metadata.refresh.interval.ms", "10000");
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c.set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        c
    }

    /// Joins the group and subscribes; the returned stream yields messages once partitions
    /// are assigned. Must be called within a tokio runtime.
    ///
    /// # Errors
    /// [`Error::NoRuntime`] outside a tokio runtime; [`Error::Kafka`] when the client cannot
    /// be created (bad property) or the subscription is refused.
    pub fn subscribe(self) -> Result<KafkaStream, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime {
            what: "kafka_seq::ConsumerConfig::subscribe",
        })?;
        describe_once();
        let metrics = ConsumerMetrics::new();
        let tracker = Arc::new(Tracker::default());
        let failed_revoke_commits = Arc::new(AtomicUsize::new(0));
        let context = SeqContext {
            tracker: tracker.clone(),
            group: self.group.clone(),
            failed_revoke_commits: failed_revoke_commits.clone(),
            commit_errors: metrics.commit_errors.clone(),
        };
        // StreamConsumer::from_config_and_context spawns its wake-up task on the current
        // runtime (checked above).
        let consumer: StreamConsumer<SeqContext> = self
            .client_config()
            .create_with_context(context)
            .map_err(kafka_err(format!(
                "create consumer of group {}",
                self.group
            )))?;
        match &self.subscription {
            Subscription::Topics(topics) => {
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                consumer.subscribe(&names).map_err(kafka_err(format!(
                    "subscribe group {} to {topics:?}",
                    self.group
                )))?;
            }
            Subscription::Pattern(regex) => {
                consumer.subscribe(&[regex]).map_err(kafka_err(format!(
                    "subscribe group {} to {regex}",
                    self.group
                )))?;
            }
        }
        let consumer = Arc::new(consumer);
        let shared = Arc::new(Shared {
            tracker,
            outstanding: AtomicUsize::new(0),
            max_unacked: self.max_unacked,
            stream_waker: AtomicWaker::new(),
            stopping: AtomicBool::new(false),
            stop_notify: Notify::new(),
            group: self.group.clone(),
            closing: AtomicBool::new(false),
            drained: Notify::new(),
            fetcher: Mutex::new(Some(Fetcher::new(consumer.clone(), |c| c.stream()))),
            metrics,
        });
        let (done_tx, done_rx) = watch::channel(None);
        let task = Committer {
            consumer,
            shared: shared.clone(),
            commit_interval: self.commit_interval,
            drain_timeout: self.drain_timeout,
            close_timeout: self.close_timeout,
            group: self.group,
            failed_revoke_commits,
            reported_unacked: AtomicUsize::new(0),
        };
        runtime.spawn(task.run(done_tx));
        Ok(KafkaStream {
            finished: false,
            last: None,
            control: ConsumerControl {
                shared,
                done: done_rx,
            },
        })
    }
}

/// Where [`ConsumerControl::seek`] restarts a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// This offset (the next message handed out has it, or the first after it).
    Offset(i64),
    /// The partition's oldest retained message.
    Beginning,
    /// After the partition's last message: only messages produced later.
    End,
}

/// One consumed message with its acknowledgement handle.
#[derive(Debug)]
pub struct KafkaMessage {
    /// The topic (shared, not copied per message).
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The offset within the partition.
    pub offset: i64,
    /// The key, if any.
    pub key: Option<Bytes>,
    /// The payload, if any (`None` for a tombstone).
    pub payload: Option<Bytes>,
    /// Timestamp in milliseconds since the Unix epoch, if the message has one.
    pub timestamp: Option<i64>,
    /// Headers in order; a header's value may be absent.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Acknowledge once processed: [`Ack::ack`]. Dropping it unacknowledged is a nack.
    pub ack: Ack,
}

/// Acknowledgement handle of one [`KafkaMessage`].
///
/// [`ack`](Self::ack) lets the commit point move past the message once every earlier message
/// of its partition is acknowledged too. Dropping the handle without acknowledging (or
/// [`nack`](Self::nack)) keeps the commit point before the message for the rest of the
/// partition's assignment, so it is consumed again after a restart or rebalance. Either way
/// the message stops counting against [`max_unacked`](ConsumerConfig::max_unacked).
pub struct Ack {
    shared: Arc<Shared>,
    part: Arc<Part>,
    offset: i64,
    tracked: bool,
    done: bool,
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack")
            .field("topic", &self.part.topic)
            .field("partition", &self.part.partition)
            .field("offset", &self.offset)
            .finish()
    }
}

impl Ack {
    /// The partition assignment the message was delivered under: unique in the process,
    /// it changes when the partition is revoked and assigned again, and at a
    /// [`ConsumerControl::seek`]. Messages of one assignment come in offset order.
    pub fn assignment(&self) -> u64 {
        self.part.id
    }

    /// Whether the message's assignment is still the partition's current one here. After a
    /// revoke (or a new assignment, or a seek) acknowledging it no longer moves any commit:
    /// whoever reads the partition now reads the message again.
    pub fn is_current(&self) -> bool {
        !self.part.is_revoked()
    }

    /// The message was processed.
    pub fn ack(mut self) {
        self.done = true;
        self.part.settle(self.offset, self.tracked, true);
    }

    /// The message was not processed: it will be consumed again after a restart or
    /// rebalance (commits of its partition stop before it until then).
    pub fn nack(mut self) {
        self.done = true;
        self.part.settle(self.offset, self.tracked, false);
    }

    /// The handle of a message delivered (tracked) at `offset`; it counts against
    /// `max_unacked` until it is dropped.
    fn new(shared: &Arc<Shared>, delivered: Delivered, offset: i64) -> Ack {
        shared.outstanding.fetch_add(1, Ordering::SeqCst);
        Ack {
            shared: shared.clone(),
            part: delivered.part,
            offset,
            tracked: delivered.tracked,
            done: false,
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if !self.done {
            self.part.settle(self.offset, self.tracked, false);
        }
        self.shared.release();
    }
}

/// The client's message stream, which borrows the client it is kept with.
type Messages<'a> = MessageStream<'a, SeqContext>;

self_cell::self_cell!(
    /// The client and its message stream.
    struct Fetcher {
        owner: Arc<StreamConsumer<SeqContext>>,
        #[covariant]
        dependent: Messages,
    }
);

/// What the stream, the acknowledgement handles, the control handle and the committing
/// task share.
struct Shared {
    tracker: Arc<Tracker>,
    /// Messages handed out and not acknowledged (or nacked, or dropped) yet; only the
    /// stream adds to it, never past `max_unacked`.
    outstanding: AtomicUsize,
    max_unacked: usize,
    /// The stream's task: woken when `outstanding` drops below `max_unacked` and at shutdown.
    stream_waker: AtomicWaker,
    /// Set by shutdown: the stream yields nothing more; `stop_notify` tells the committer.
    stopping: AtomicBool,
    stop_notify: Notify,
    group: String,
    /// Set when the committer waits for `outstanding` to reach zero; `drained` tells it.
    closing: AtomicBool,
    drained: Notify,
    /// The fetching half, polled by the stream on its own task (no hand-over between
    /// tasks); the committer takes it away at shutdown so that it holds the last reference
    /// to the client when it closes it.
    fetcher: Mutex<Option<Fetcher>>,
    metrics: ConsumerMetrics,
}

impl Shared {
    /// One handed-out message is done with (acknowledged or not).
    fn release(&self) {
        let before = self.outstanding.fetch_sub(1, Ordering::SeqCst);
        if before == self.max_unacked {
            self.stream_waker.wake();
        }
        if before == 1 && self.closing.load(Ordering::SeqCst) {
            self.drained.notify_one();
        }
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stream_waker.wake();
        // Stores a permit when the committer is not waiting yet: never lost.
        self.stop_notify.notify_one();
    }

    fn fetcher(&self) -> std::sync::MutexGuard<'_, Option<Fetcher>> {
        self.fetcher.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `max_unacked` messages are out.
    fn full(&self) -> bool {
        self.outstanding.load(Ordering::SeqCst) >= self.max_unacked
    }

    /// Whether the stream must wait for an acknowledgement (or shutdown), which wakes it.
    fn must_wait(&self, cx: &Context<'_>) -> bool {
        if !self.full() {
            return false;
        }
        self.stream_waker.register(cx.waker());
        self.full() && !self.stopping.load(Ordering::SeqCst)
    }

    /// One look at what librdkafka fetched, on the stream's task: the next message is
    /// handed to `take`, which makes what the stream yields of it, or `None` when its
    /// partition is not assigned here (a stale message, skipped).
    fn fetch<T>(
        &self,
        fetcher: &mut Option<Fetcher>,
        cx: &mut Context<'_>,
        take: impl FnOnce(&BorrowedMessage<'_>) -> Option<T>,
    ) -> Fetched<T> {
        let Some(f) = fetcher.as_mut() else {
            return Fetched::End;
        };
        if self.stopping.load(Ordering::SeqCst) {
            return Fetched::End;
        }
        f.with_dependent_mut(|_, messages| match messages.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(m))) => take(&m).map_or(Fetched::Again, Fetched::Message),
            Poll::Ready(Some(Err(e))) => Fetched::Failed(Error::Kafka {
                op: format!("consume in group {}", self.group),
                source: e,
            }),
            Poll::Ready(None) => Fetched::End,
            Poll::Pending => {
                // librdkafka wakes us when messages arrive; shutdown wakes us through
                // this waker.
                self.stream_waker.register(cx.waker());
                if self.stopping.load(Ordering::SeqCst) {
                    Fetched::Again
                } else {
                    Fetched::Pending
                }
            }
        })
    }
}

/// The stream of a consumer group's messages; see the [module docs](self).
///
/// Messages are fetched from librdkafka when the stream is polled, on the polling task (no
/// hand-over through a channel). Ends after [`ConsumerControl::shutdown`]. Dropping it shuts
/// the consumer down too.
pub struct KafkaStream {
    finished: bool,
    control: ConsumerControl,
    /// The assignment the last message was delivered under (see [`Tracker::deliver`]).
    last: Option<Arc<Part>>,
}

impl std::fmt::Debug for KafkaStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaStream").finish_non_exhaustive()
    }
}

impl KafkaStream {
    /// A handle to shut the consumer down and wait for its final commit.
    pub fn control(&self) -> ConsumerControl {
        self.control.clone()
    }

    /// Waits for a message, then hands it and up to `max - 1` more already fetched ones to
    /// `f`, borrowed from librdkafka (nothing copied, no [`Ack`] made): the batch interface
    /// for consumers that process messages synchronously as they come, such as writing them
    /// to a file. A message is acknowledged when `f` returns, unless `f` took an [`Ack`] for
    /// it ([`MessageRef::hold`]) or an owned copy ([`MessageRef::to_owned`]); if `f`
    /// panics, the message is not acknowledged. `f` returning
    /// [`ControlFlow::Break`] ends the batch after that message.
    ///
    /// Returns how many messages `f` was given; `None` once the stream ended (after
    /// [`ConsumerControl::shutdown`]). Messages and batches mix freely with
    /// [`StreamExt::next`] on the same stream.
    ///
    /// `f` runs while the stream holds its client: [`ConsumerControl::seek`],
    /// [`pause`](ConsumerControl::pause) and [`resume`](ConsumerControl::resume) called from
    /// inside it fail (they would wait for the batch to end).
    ///
    /// # Errors
    /// [`Error::Kafka`] for a consumer error (messages before it in the batch were given
    /// to `f` already); the stream goes on after it.
    pub async fn next_batch<F>(&mut self, max: usize, mut f: F) -> Option<Result<usize, Error>>
    where
        F: FnMut(MessageRef<'_>) -> ControlFlow<()>,
    {
        std::future::poll_fn(|cx| self.poll_batch(cx, max.max(1), &mut f)).await
    }

    fn poll_batch<F>(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        f: &mut F,
    ) -> Poll<Option<Result<usize, Error>>>
    where
        F: FnMut(MessageRef<'_>) -> ControlFlow<()>,
    {
        if self.finished {
            return Poll::Ready(None);
        }
        let shared = &self.control.shared;
        let last = &mut self.last;
        let mut given = 0;
        let mut fetcher = shared.fetcher();
        // The client is held for the whole batch (one lock, not one per message).
        let failed = loop {
            if given >= max || (given > 0 && shared.full()) {
                break None;
            }
            if given == 0 && shared.must_wait(cx) {
                return Poll::Pending;
            }
            let fetched = shared.fetch(&mut fetcher, cx, |m| {
                // Not tracked yet: the message is settled in one step when the callback
                // returns (Part::settle_fresh), or tracked when it is held.
                let part = shared.tracker.current(last, m.topic(), m.partition())?;
                part.metrics.received.increment(1);
                let _in_batch = InBatch::enter();
                Some(f(MessageRef {
                    topic: &part.topic,
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key(),
                    payload: m.payload(),
                    timestamp: m.timestamp().to_millis(),
                    message: m,
                    shared,
                    part,
                    held: false,
                }))
            });
            match fetched {
                Fetched::Message(flow) => {
                    given += 1;
                    if flow.is_break() {
                        break None;
                    }
                }
                Fetched::Again => {}
                Fetched::Failed(e) => break Some(e),
                Fetched::End => {
                    // Ends now, or at the next call when this batch gave messages.
                    self.finished = true;
                    return Poll::Ready((given > 0).then_some(Ok(given)));
                }
                Fetched::Pending if given == 0 => return Poll::Pending,
                Fetched::Pending => break None,
            }
        };
        Poll::Ready(Some(failed.map_or(Ok(given), Err)))
    }
}

std::thread_local! {
    /// Set while a [`KafkaStream::next_batch`] callback runs on this thread (which holds
    /// the client: seek, pause and resume would wait for it forever).
    static IN_BATCH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// [`IN_BATCH`] set while it lives (reset when the callback panics too).
struct InBatch;

impl InBatch {
    fn enter() -> InBatch {
        IN_BATCH.set(true);
        InBatch
    }
}

impl Drop for InBatch {
    fn drop(&mut self) {
        IN_BATCH.set(false);
    }
}

/// Fails when called from inside a [`KafkaStream::next_batch`] callback.
fn not_in_batch(op: impl FnOnce() -> String) -> Result<(), Error> {
    if IN_BATCH.get() {
        return Err(Error::Kafka {
            op: op(),
            source: KafkaError::Seek("called from inside a next_batch callback".into()),
        });
    }
    Ok(())
}

/// A message borrowed from librdkafka during [`KafkaStream::next_batch`]: acknowledged
/// when dropped, unless it was [held](Self::hold) or [copied](Self::to_owned).
pub struct MessageRef<'a> {
    /// The topic.
    pub topic: &'a Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The offset within the partition.
    pub offset: i64,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The payload, if any (`None` for a tombstone).
    pub payload: Option<&'a [u8]>,
    /// Timestamp in milliseconds since the Unix epoch, if the message has one.
    pub timestamp: Option<i64>,
    message: &'a BorrowedMessage<'a>,
    shared: &'a Arc<Shared>,
    /// The assignment it came under; the message is not tracked there until it is
    /// settled or held.
    part: &'a Arc<Part>,
    held: bool,
}

impl std::fmt::Debug for MessageRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageRef")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl MessageRef<'_> {
    /// The partition assignment the message was delivered under (see
    /// [`Ack::assignment`]).
    pub fn assignment(&self) -> u64 {
        self.part.id
    }

    /// The headers, copied, in order.
    pub fn headers(&self) -> Vec<(String, Option<Bytes>)> {
        headers(self.message)
    }

    /// Keeps the message unacknowledged past the callback: the returned [`Ack`] decides
    /// (as for a [`KafkaMessage`]), and counts against
    /// [`max_unacked`](ConsumerConfig::max_unacked).
    pub fn hold(mut self) -> Ack {
        self.held = true;
        Ack::new(self.shared, self.deliver(), self.offset)
    }

    /// An owned copy of the message, with its [`Ack`] ([`hold`](Self::hold)).
    pub fn to_owned(mut self) -> KafkaMessage {
        self.held = true;
        owned(self.shared, self.message, self.deliver())
    }

    /// Tracks the message in its assignment (untracked when the assignment just ended:
    /// its acknowledgement would not count anyway).
    fn deliver(&self) -> Delivered {
        Delivered {
            part: self.part.clone(),
            tracked: self.part.deliver(self.offset).unwrap_or(false),
        }
    }
}

impl Drop for MessageRef<'_> {
    fn drop(&mut self) {
        if !self.held {
            // Processed when the callback returns; not when it unwinds.
            let processed = !std::thread::panicking();
            self.part.settle_fresh(self.offset, processed);
        }
    }
}

impl Drop for KafkaStream {
    fn drop(&mut self) {
        self.control.shutdown();
    }
}

/// One look at the fetched messages ([`Shared::fetch`]).
enum Fetched<T> {
    /// A message, as `take` made it.
    Message(T),
    /// Nothing to hand out (a stale message of a revoked partition, or shutdown began
    /// while waiting): look again.
    Again,
    Failed(Error),
    /// The stream ended.
    End,
    /// Nothing fetched yet: librdkafka (or shutdown) wakes the task.
    Pending,
}

impl Stream for KafkaStream {
    type Item = Result<KafkaMessage, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        let shared = &this.control.shared;
        loop {
            if shared.must_wait(cx) {
                return Poll::Pending;
            }
            let last = &mut this.last;
            let fetched = shared.fetch(&mut shared.fetcher(), cx, |m| {
                let d = (shared.tracker).deliver(last, m.topic(), m.partition(), m.offset())?;
                d.part.metrics.received.increment(1);
                Some(owned(shared, m, d))
            });
            match fetched {
                Fetched::Message(m) => return Poll::Ready(Some(Ok(m))),
                Fetched::Again => {}
                Fetched::Failed(e) => return Poll::Ready(Some(Err(e))),
                Fetched::End => {
                    this.finished = true;
                    return Poll::Ready(None);
                }
                Fetched::Pending => return Poll::Pending,
            }
        }
    }
}

/// A fetched message copied out of librdkafka, with its [`Ack`].
fn owned(shared: &Arc<Shared>, m: &BorrowedMessage<'_>, delivered: Delivered) -> KafkaMessage {
    KafkaMessage {
        topic: delivered.part.topic.clone(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(Bytes::copy_from_slice),
        payload: m.payload().map(Bytes::copy_from_slice),
        timestamp: m.timestamp().to_millis(),
        headers: headers(m),
        ack: Ack::new(shared, delivered, m.offset()),
    }
}

/// A message's headers, copied.
fn headers(m: &BorrowedMessage<'_>) -> Vec<(String, Option<Bytes>)> {
    match m.headers() {
        Some(h) => h
            .iter()
            .map(|h| (h.key.to_string(), h.value.map(Bytes::copy_from_slice)))
            .collect(),
        None => Vec::new(),
    }
}

/// Shuts a [`KafkaStream`]'s consumer down; cheap to clone.
#[derive(Clone)]
pub struct ConsumerControl {
    shared: Arc<Shared>,
    done: watch::Receiver<Option<Result<(), KafkaError>>>,
}

impl std::fmt::Debug for ConsumerControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerControl")
            .field(
                "outstanding",
                &self.shared.outstanding.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl ConsumerControl {
    /// Stops fetching: the stream ends at its next poll. The consumer then waits (up to the
    /// drain timeout) for outstanding messages to be acknowledged, commits synchronously,
    /// and leaves the group.
    pub fn shutdown(&self) {
        self.shared.stop();
    }

    /// The partitions currently assigned to this consumer, sorted by topic and partition.
    pub fn assignment(&self) -> Vec<(Arc<str>, i32)> {
        self.shared.tracker.assignment()
    }

    /// The assigned partitions with their current [`Ack::assignment`] ids, sorted.
    pub fn assignment_ids(&self) -> Vec<(Arc<str>, i32, u64)> {
        self.shared.tracker.assignment_ids()
    }

    /// Restarts an assigned partition at `to` and returns its new [`Ack::assignment`] id.
    /// Messages handed out before belong to the ended assignment (their
    /// [`Ack::is_current`] turns false and acknowledging them moves no commit); every
    /// message of the partition the stream yields afterwards comes from the new position,
    /// under the new id. Blocks the calling thread until librdkafka took the seek, at most
    /// `timeout` (the stream waits meanwhile): call it on a blocking thread.
    ///
    /// A partition whose fetching has not started yet (just assigned, its committed offset
    /// not fetched yet) refuses the seek (`Local: Erroneous state`): try again a little
    /// later. Once a message of it arrived, fetching has started.
    ///
    /// # Errors
    /// [`Error::Kafka`] when the partition is not assigned here, the consumer is closing, or
    /// librdkafka refuses the seek or does not answer within `timeout`.
    pub fn seek(
        &self,
        topic: &str,
        partition: i32,
        to: SeekTo,
        timeout: Duration,
    ) -> Result<u64, Error> {
        let op = || format!("seek {topic} [{partition}] to {to:?}");
        not_in_batch(op)?;
        let offset = match to {
            SeekTo::Offset(o) => Offset::Offset(o),
            SeekTo::Beginning => Offset::Beginning,
            SeekTo::End => Offset::End,
        };
        let fetcher = self.shared.fetcher();
        let (Some(f), true) = (
            fetcher.as_ref(),
            self.shared.tracker.is_assigned(topic, partition),
        ) else {
            return Err(Error::Kafka {
                op: op(),
                source: KafkaError::Seek("partition not assigned to this consumer".into()),
            });
        };
        // A new assignment first, while the stream cannot hand out a message (this holds
        // its fetcher): librdkafka's seek raises a version barrier at once, so no message
        // from before it is handed out after it.
        let id = self.shared.tracker.assign(topic, partition);
        f.borrow_owner()
            .seek(
                topic,
                partition,
                offset,
                timeout.max(Duration::from_millis(1)),
            )
            .map_err(kafka_err(op()))?;
        Ok(id)
    }

    /// Stops fetching an assigned partition (the consumer keeps serving the group, unlike
    /// a stream that is not polled); messages fetched before may still come. Assignments
    /// start unpaused.
    ///
    /// # Errors
    /// [`Error::Kafka`] when the consumer is closing or librdkafka refuses.
    pub fn pause(&self, topic: &str, partition: i32) -> Result<(), Error> {
        self.pause_resume(topic, partition, true)
    }

    /// Fetches a paused partition again, from after the last message handed out.
    ///
    /// # Errors
    /// [`Error::Kafka`] when the consumer is closing or librdkafka refuses.
    pub fn resume(&self, topic: &str, partition: i32) -> Result<(), Error> {
        self.pause_resume(topic, partition, false)
    }

    fn pause_resume(&self, topic: &str, partition: i32, pause: bool) -> Result<(), Error> {
        let what = if pause { "pause" } else { "resume" };
        let op = || format!("{what} {topic} [{partition}]");
        not_in_batch(op)?;
        let mut tpl = TopicPartitionList::with_capacity(1);
        tpl.add_partition(topic, partition);
        let fetcher = self.shared.fetcher();
        let Some(f) = fetcher.as_ref() else {
            return Err(Error::Kafka {
                op: op(),
                source: KafkaError::Seek("the consumer is closing".into()),
            });
        };
        let consumer = f.borrow_owner();
        let result = if pause {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        drop(tpl);
        result.map_err(kafka_err(op()))
    }

    /// Waits until the consumer has made its final commit and left the group (after
    /// [`shutdown`](Self::shutdown) or the stream being dropped).
    ///
    /// # Errors
    /// [`Error::Kafka`] when the final commit failed.
    pub async fn closed(&self) -> Result<(), Error> {
        let mut done = self.done.clone();
        let result = match done.wait_for(Option::is_some).await {
            Ok(r) => r.clone(),
            // The task ended without reporting (runtime shut down): nothing more to wait for.
            Err(_) => return Ok(()),
        };
        result
            .unwrap_or(Ok(()))
            .map_err(kafka_err("final commit at shutdown"))
    }
}

/// The consumer's context: commits and forgets partitions as they are revoked.
struct SeqContext {
    tracker: Arc<Tracker>,
    group: String,
    /// Commits on revoke that failed (their messages will be redelivered).
    failed_revoke_commits: Arc<AtomicUsize>,
    commit_errors: Counter,
}

impl ClientContext for SeqContext {}

impl ConsumerContext for SeqContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                for e in tpl.elements() {
                    self.tracker.assign(e.topic(), e.partition());
                }
                tracing::info!(group = %self.group, partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                let mut commit = TopicPartitionList::new();
                let mut revoked = Vec::new();
                for e in tpl.elements() {
                    if let Some((offset, part)) = self.tracker.revoke(e.topic(), e.partition()) {
                        let _ = commit.add_partition_offset(
                            e.topic(),
                            e.partition(),
                            Offset::Offset(offset),
                        );
                        revoked.push((offset, part));
                    }
                }
                if commit.count() > 0 {
                    match consumer.commit(&commit, CommitMode::Sync) {
                        // A synchronous commit reports here, not to the commit callback.
                        Ok(()) => {
                            for (offset, part) in &revoked {
                                part.committed(*offset);
                            }
                        }
                        Err(e) => {
                            self.commit_errors.increment(1);
                            self.failed_revoke_commits.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(group = %self.group, error = %e, "commit on revoke failed; the partitions' unacknowledged tail will be redelivered");
                        }
                    }
                }
                tracing::info!(group = %self.group, partitions = tpl.count(), "partitions revoked");
            }
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, error = %e, "rebalance error");
            }
        }
    }

    /// The result of a periodic (asynchronous) commit, served when the consumer is next
    /// polled or while it closes. The synchronous commits (on revoke, at shutdown) report
    /// where they are made.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                for el in offsets.elements() {
                    if let Offset::Offset(o) = el.offset() {
                        self.tracker.committed(el.topic(), el.partition(), o);
                    }
                }
            }
            Err(e) => {
                self.commit_errors.increment(1);
                tracing::warn!(group = %self.group, error = %e, "offset commit failed; retrying");
                for el in offsets.elements() {
                    if let Offset::Offset(o) = el.offset() {
                        self.tracker.commit_failed(el.topic(), el.partition(), o);
                    }
                }
            }
        }
    }
}

/// Commits acknowledged progress periodically, and at shutdown drains, commits
/// synchronously and closes the client.
struct Committer {
    consumer: Arc<StreamConsumer<SeqContext>>,
    shared: Arc<Shared>,
    commit_interval: Duration,
    drain_timeout: Duration,
    close_timeout: Duration,
    group: String,
    failed_revoke_commits: Arc<AtomicUsize>,
    /// The unacked count this consumer last added to the process-wide gauge.
    reported_unacked: AtomicUsize,
}

fn commit_list(commits: &[(Arc<str>, i32, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(commits.len());
    for (topic, partition, offset) in commits {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    tpl
}

impl Committer {
    fn commit_async(&self) {
        let tracker = &self.shared.tracker;
        let commits = tracker.take_commits();
        if commits.is_empty() {
            return;
        }
        let tpl = commit_list(&commits);
        if let Err(e) = ffi::commit_async(self.consumer.client(), &tpl) {
            // Refused before being sent: no commit callback follows.
            self.shared.metrics.commit_errors.increment(1);
            tracing::warn!(group = %self.group, error = %e, "offset commit failed; retrying");
            for (t, p, o) in &commits {
                tracker.commit_failed(t, *p, *o);
            }
        }
    }

    /// Every commit interval: commits, and samples the gauges.
    fn tick(&self) {
        self.commit_async();
        self.sample_unacked(self.shared.outstanding.load(Ordering::SeqCst));
        let client = self.consumer.client();
        for part in self.shared.tracker.parts() {
            if let Some(high) = ffi::cached_high_watermark(client, &part.topic, part.partition) {
                part.sample_lag(high);
            }
        }
    }

    /// Moves the process-wide unacked gauge by this consumer's change since last time (so
    /// several consumers add up).
    fn sample_unacked(&self, now: usize) {
        let before = self.reported_unacked.swap(now, Ordering::Relaxed);
        let gauge = &self.shared.metrics.unacked;
        if now > before {
            gauge.increment((now - before) as f64);
        } else if before > now {
            gauge.decrement((before - now) as f64);
        }
    }

    /// Resolves once shutdown was asked for (or the stream dropped).
    async fn stopped(&self) {
        while !self.shared.stopping.load(Ordering::SeqCst) {
            self.shared.stop_notify.notified().await;
        }
    }

    async fn run(self, done: watch::Sender<Option<Result<(), KafkaError>>>) {
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + self.commit_interval,
            self.commit_interval,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = self.stopped() => break,
                _ = ticker.tick() => self.tick(),
            }
        }
        // Drain: wait for every handed-out message to be acknowledged (or dropped).
        self.shared.closing.store(true, Ordering::SeqCst);
        let drain = async {
            loop {
                let drained = self.shared.drained.notified();
                if self.shared.outstanding.load(Ordering::SeqCst) == 0 {
                    break;
                }
                tokio::select! {
                    () = drained => {}
                    _ = ticker.tick() => self.tick(),
                }
            }
        };
        if tokio::time::timeout(self.drain_timeout, drain)
            .await
            .is_err()
        {
            tracing::warn!(group = %self.group, "shutdown: unacknowledged messages remain; they will be redelivered");
        }
        // The consumer stops counting in the gauge (what is still out is redelivered later).
        self.sample_unacked(0);
        let Committer {
            consumer,
            shared,
            group,
            failed_revoke_commits,
            close_timeout,
            ..
        } = self;
        // The final commit and the close block in librdkafka, without limit when the group
        // coordinator is unreachable (rd_kafka_commit waits forever). They run on a thread of
        // their own, not `spawn_blocking`: a runtime being dropped waits for its blocking
        // tasks, so a stuck close would hang the program's exit.
        let (result_tx, result_rx) = tokio::sync::oneshot::channel();
        let log_group = group.clone();
        let close = move || {
            // Waits for a poll in progress on the stream's task, then this thread holds the
            // last reference to the client.
            drop(shared.fetcher().take());
            let tracker = &shared.tracker;
            let commits = tracker.take_commits();
            let result = if commits.is_empty() {
                Ok(())
            } else {
                consumer.commit(&commit_list(&commits), CommitMode::Sync)
            };
            if result.is_ok() {
                for (t, p, o) in &commits {
                    tracker.committed(t, *p, *o);
                }
            } else {
                shared.metrics.commit_errors.increment(1);
                // Leaving the group below revokes the partitions, and the revoke commits again.
                for (t, p, o) in &commits {
                    tracker.commit_failed(t, *p, *o);
                }
            }
            let failed_before = failed_revoke_commits.load(Ordering::Relaxed);
            drop(consumer);
            tracing::info!(%group, "consumer closed");
            let revoke_ok = failed_revoke_commits.load(Ordering::Relaxed) == failed_before
                && tracker.uncommitted() == 0;
            let _ = result_tx.send(if revoke_ok { Ok(()) } else { result });
        };
        let result = match std::thread::Builder::new()
            .name("kafka-seq-close".into())
            .spawn(close)
        {
            Ok(_) => match tokio::time::timeout(close_timeout, result_rx).await {
                Ok(r) => r.unwrap_or(Ok(())),
                Err(_) => {
                    tracing::warn!(group = %log_group, ?close_timeout, "shutdown: final commit and close timed out (group coordinator unreachable?); the uncommitted tail will be redelivered");
                    Err(KafkaError::ConsumerCommit(
                        rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                    ))
                }
            },
            Err(e) => {
                tracing::warn!(group = %log_group, error = %e, "shutdown: cannot start the close thread");
                Err(KafkaError::ConsumerCommit(
                    rdkafka::types::RDKafkaErrorCode::Fail,
                ))
            }
        };
        let _ = done.send(Some(result));
    }
}
