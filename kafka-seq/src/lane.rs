//! Delivery lanes: many messages, their reports, no allocation per message.
//!
//! A [`DeliveryReport`](crate::DeliveryReport) costs an allocation and a cross-thread
//! wake-up per message. A lane is for a task that produces a stream of messages and wants
//! each one's fate, in its own order, at the rate of a bare librdkafka producer: a
//! [`LaneSender`] hands a message to librdkafka and returns a [`Ticket`]; a [`LaneReports`]
//! (another task may hold it) turns a ticket into Kafka's answer. A lane is a ring of
//! `capacity` one-byte slots; a message's slot number rides in librdkafka's per-message
//! opaque pointer, the delivery thread marks the slot, and wakes the reports side only when
//! it waits for exactly that slot. Sending waits while the ring is full (the slot the next
//! message needs has not been reported yet) and under the producer's in-flight bound.
//!
//! ```no_run
//! # async fn run() -> Result<(), kafka_seq::Error> {
//! use kafka_seq::{ProducerConfig, Record};
//!
//! let producer = ProducerConfig::new("127.0.0.1:9092").create()?;
//! let (mut sender, mut reports) = producer.lane(4096)?;
//! let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
//! let settler = tokio::spawn(async move {
//!     let mut delivered = 0;
//!     while let Some(ticket) = rx.recv().await {
//!         reports.report(ticket).await?;
//!         delivered += 1;
//!     }
//!     Ok::<_, kafka_seq::Error>(delivered)
//! });
//! for i in 0..100_000 {
//!     let ticket = sender.send("events", &Record::new(format!("event {i}"))).await?;
//!     let _ = tx.send(ticket).await;
//! }
//! drop(tx);
//! # let _ = settler.await;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use crate::Error;
use crate::opaque::{MAX_SLOTS, Opaque};
use crate::producer::Record;
use crate::producer::{KafkaProducer, TopicCache};
use crate::registry::{Registered, Registration, Registry, register};

/// A slot with no message.
const EMPTY: u8 = 0;
/// Handed to librdkafka, no report yet.
const SENT: u8 = 1;
/// Acknowledged by Kafka.
const DELIVERED: u8 = 2;
/// Refused by Kafka (the error is in `LaneShared::errors`).
const FAILED: u8 = 3;
/// Its report was given up before it came ([`LaneReport`] dropped): the report frees it.
const ABANDONED: u8 = 4;

/// Nobody waits.
const NONE: usize = usize::MAX;

/// A producer's lanes, found by number from the delivery thread.
pub(crate) type Lanes = Registry<LaneShared>;

/// The state of one lane, shared by its halves and the delivery thread.
pub(crate) struct LaneShared {
    states: Box<[AtomicU8]>,
    errors: Mutex<Vec<(usize, Error)>>,
    /// The slot the reports side waits for, or [`NONE`].
    report_wanted: AtomicUsize,
    report_waker: AtomicWaker,
    /// The slot the sender waits to be freed, or [`NONE`].
    room_wanted: AtomicUsize,
    room_waker: AtomicWaker,
    /// Messages handed to librdkafka and not reported.
    outstanding: AtomicUsize,
    /// Both halves are gone (written under the registry lock).
    closed: std::sync::atomic::AtomicBool,
}

impl Registered for LaneShared {
    fn outstanding(&self) -> &AtomicUsize {
        &self.outstanding
    }
    fn closed(&self) -> &std::sync::atomic::AtomicBool {
        &self.closed
    }
}

impl LaneShared {
    fn new(capacity: usize) -> Self {
        Self {
            states: (0..capacity).map(|_| AtomicU8::new(EMPTY)).collect(),
            errors: Mutex::new(Vec::new()),
            report_wanted: AtomicUsize::new(NONE),
            report_waker: AtomicWaker::new(),
            room_wanted: AtomicUsize::new(NONE),
            room_waker: AtomicWaker::new(),
            outstanding: AtomicUsize::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Frees a slot whose report was taken (or given up), waking a sender waiting for it.
    fn free(&self, slot: usize) {
        self.states[slot].store(EMPTY, Ordering::SeqCst);
        if self.room_wanted.load(Ordering::SeqCst) == slot {
            self.room_waker.wake();
        }
    }

    fn take_error(&self, slot: usize) -> Error {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        match errors.iter().position(|(s, _)| *s == slot) {
            Some(i) => errors.swap_remove(i).1,
            None => Error::DeliveryLost,
        }
    }
}

/// Called on the delivery thread with the registry: records the report of `slot` of lane
/// `lane`, and removes the lane once it is closed and this was its last message.
pub(crate) fn report(lanes: &Lanes, lane: usize, slot: usize, result: Result<(), Error>) {
    let mut lanes = lanes.lock().unwrap_or_else(|e| e.into_inner());
    let Some(shared) = lanes.get(lane) else {
        return;
    };
    let Some(state) = shared.states.get(slot) else {
        return;
    };
    let new = match result {
        Ok(()) => DELIVERED,
        Err(e) => {
            shared
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((slot, e));
            FAILED
        }
    };
    match state.compare_exchange(SENT, new, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => {
            if shared.report_wanted.load(Ordering::SeqCst) == slot {
                shared.report_waker.wake();
            }
        }
        Err(_) => {
            // Abandoned: nobody will ask; free the slot (and forget the error).
            if new == FAILED {
                drop(shared.take_error(slot));
            }
            shared.free(slot);
        }
    }
    if shared.outstanding.fetch_sub(1, Ordering::SeqCst) == 1
        && shared.closed.load(Ordering::SeqCst)
    {
        lanes.remove(lane);
    }
}

/// Opens a lane of `capacity` slots on `producer` (clamped to `1..=MAX_SLOTS`).
pub(crate) fn open(
    producer: KafkaProducer,
    lanes: Arc<Lanes>,
    capacity: usize,
) -> Result<(LaneSender, LaneReports), Error> {
    let shared = Arc::new(LaneShared::new(capacity.clamp(1, MAX_SLOTS)));
    let registration = register(lanes, shared.clone())?;
    Ok((
        LaneSender {
            producer,
            topic: TopicCache::default(),
            shared: shared.clone(),
            registration: registration.clone(),
            next: 0,
        },
        LaneReports {
            shared,
            registration,
        },
    ))
}

/// The sending half of a lane: see the [module docs](self).
pub struct LaneSender {
    producer: KafkaProducer,
    /// The topic handle used last (valid while `producer` lives).
    topic: TopicCache,
    shared: Arc<LaneShared>,
    registration: Arc<Registration<LaneShared>>,
    /// The slot the next message takes.
    next: usize,
}

impl std::fmt::Debug for LaneSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneSender")
            .field("lane", &self.registration.lane)
            .field("capacity", &self.shared.states.len())
            .finish_non_exhaustive()
    }
}

/// A message sent on a lane: give it to the lane's [`LaneReports::report`] for Kafka's
/// answer. A ticket dropped without that keeps its slot taken until the lane is closed.
#[derive(Debug)]
#[must_use = "a Ticket tells whether the message was stored: pass it to LaneReports::report"]
pub struct Ticket {
    lane: usize,
    slot: usize,
}

impl LaneSender {
    /// How many messages may be sent and not reported.
    pub fn capacity(&self) -> usize {
        self.shared.states.len()
    }

    /// Whether the next send has a free slot now (it may still wait for the producer's
    /// in-flight bound).
    pub fn has_room(&self) -> bool {
        self.shared.states[self.next].load(Ordering::SeqCst) == EMPTY
    }

    /// Waits until the slot the next message needs is free.
    async fn room(&self) {
        let slot = self.next;
        let state = &self.shared.states[slot];
        std::future::poll_fn(|cx| {
            if state.load(Ordering::SeqCst) == EMPTY {
                return Poll::Ready(());
            }
            self.shared.room_waker.register(cx.waker());
            self.shared.room_wanted.store(slot, Ordering::SeqCst);
            if state.load(Ordering::SeqCst) == EMPTY {
                self.shared.room_wanted.store(NONE, Ordering::SeqCst);
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
        self.shared.room_wanted.store(NONE, Ordering::SeqCst);
    }

    /// [`send`](Self::send) without waiting: `Ok(None)` (nothing sent) when the lane is
    /// full, the producer's in-flight bound is reached or librdkafka's queue is full.
    ///
    /// # Errors
    /// [`Error::Kafka`] when librdkafka refuses the message (too large, unknown
    /// partition...); the lane is unchanged then.
    pub fn try_send(&mut self, topic: &str, record: &Record) -> Result<Option<Ticket>, Error> {
        let slot = self.next;
        if self.shared.states[slot].load(Ordering::SeqCst) != EMPTY {
            return Ok(None);
        }
        let inner = &self.producer.inner;
        if !inner.in_flight.try_take() {
            return Ok(None);
        }
        let lane = self.registration.lane;
        self.shared.states[slot].store(SENT, Ordering::SeqCst);
        self.shared.outstanding.fetch_add(1, Ordering::SeqCst);
        match self
            .producer
            .enqueue(topic, &mut self.topic, record, || Opaque::lane(lane, slot))
        {
            Ok(true) => {
                self.next = (slot + 1) % self.shared.states.len();
                Ok(Some(Ticket { lane, slot }))
            }
            r => {
                self.shared.outstanding.fetch_sub(1, Ordering::SeqCst);
                self.shared.states[slot].store(EMPTY, Ordering::SeqCst);
                inner.in_flight.give_back();
                r.map(|_| None)
            }
        }
    }

    /// Enqueues `record` for `topic`, waiting while the lane is full or the producer's
    /// in-flight bound is reached, and returns its [`Ticket`].
    ///
    /// # Errors
    /// [`Error::Kafka`] when librdkafka refuses the message at once (too large, unknown
    /// partition...); the lane is unchanged then.
    pub async fn send(&mut self, topic: &str, record: &Record) -> Result<Ticket, Error> {
        self.room().await;
        let slot = self.next;
        let lane = self.registration.lane;
        let inner = &self.producer.inner;
        let in_flight = inner.in_flight.take().await;
        self.shared.states[slot].store(SENT, Ordering::SeqCst);
        self.shared.outstanding.fetch_add(1, Ordering::SeqCst);
        // librdkafka's own queue may be full (by bytes): wait for deliveries to drain it.
        let enqueued = loop {
            match self
                .producer
                .enqueue(topic, &mut self.topic, record, || Opaque::lane(lane, slot))
            {
                Ok(true) => break Ok(()),
                Ok(false) => tokio::time::sleep(crate::producer::QUEUE_FULL_RETRY).await,
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = enqueued {
            self.shared.outstanding.fetch_sub(1, Ordering::SeqCst);
            self.shared.states[slot].store(EMPTY, Ordering::SeqCst);
            return Err(e);
        }
        in_flight.keep();
        self.next = (slot + 1) % self.shared.states.len();
        Ok(Ticket { lane, slot })
    }
}

/// The reporting half of a lane: see the [module docs](self).
pub struct LaneReports {
    shared: Arc<LaneShared>,
    registration: Arc<Registration<LaneShared>>,
}

impl std::fmt::Debug for LaneReports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneReports")
            .field("lane", &self.registration.lane)
            .finish_non_exhaustive()
    }
}

impl LaneReports {
    /// Kafka's answer for `ticket`'s message: `Ok` once acknowledged, [`Error::Delivery`]
    /// when Kafka finally refused it. Dropping the future before it is ready gives the
    /// report up (its slot is freed when the report comes).
    pub fn report(&mut self, ticket: Ticket) -> LaneReport<'_> {
        self.report_inner(ticket)
    }

    /// Takes `ticket`'s report if Kafka acknowledged the message already; otherwise (no
    /// report yet, or a failure) gives the ticket back for [`report`](Self::report). The
    /// synchronous fast path of a settling loop.
    ///
    /// # Errors
    /// The ticket, when its message is not known to be delivered.
    pub fn take_delivered(&mut self, ticket: Ticket) -> Result<(), Ticket> {
        if ticket.lane == self.registration.lane
            && self.shared.states[ticket.slot].load(Ordering::SeqCst) == DELIVERED
        {
            self.shared.free(ticket.slot);
            Ok(())
        } else {
            Err(ticket)
        }
    }

    fn report_inner(&mut self, ticket: Ticket) -> LaneReport<'_> {
        LaneReport {
            shared: &self.shared,
            ticket: Some(ticket),
            lane: self.registration.lane,
            registered: false,
        }
    }
}

/// The future of [`LaneReports::report`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct LaneReport<'a> {
    shared: &'a LaneShared,
    ticket: Option<Ticket>,
    lane: usize,
    /// Whether `report_wanted` names this ticket's slot (set when it waited).
    registered: bool,
}

impl std::fmt::Debug for LaneShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneShared")
            .field("capacity", &self.states.len())
            .finish_non_exhaustive()
    }
}

impl LaneReport<'_> {
    /// The report if it is there, freeing the slot.
    fn take(&mut self, slot: usize) -> Option<Result<(), Error>> {
        let r = match self.shared.states[slot].load(Ordering::SeqCst) {
            DELIVERED => Ok(()),
            FAILED => Err(self.shared.take_error(slot)),
            _ => return None,
        };
        self.ticket = None;
        if self.registered {
            self.shared.report_wanted.store(NONE, Ordering::SeqCst);
        }
        self.shared.free(slot);
        Some(r)
    }
}

impl Future for LaneReport<'_> {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(ticket) = &self.ticket else {
            return Poll::Ready(Err(Error::DeliveryLost));
        };
        if ticket.lane != self.lane {
            self.ticket = None;
            return Poll::Ready(Err(Error::DeliveryLost));
        }
        let slot = ticket.slot;
        if let Some(r) = self.take(slot) {
            return Poll::Ready(r);
        }
        self.shared.report_waker.register(cx.waker());
        self.shared.report_wanted.store(slot, Ordering::SeqCst);
        self.registered = true;
        match self.take(slot) {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

impl Drop for LaneReport<'_> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        if ticket.lane != self.lane {
            return;
        }
        let state = &self.shared.states[ticket.slot];
        // Still waiting: the report will free it. Already reported: free it now.
        if state
            .compare_exchange(SENT, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            if state.load(Ordering::SeqCst) == FAILED {
                drop(self.shared.take_error(ticket.slot));
            }
            self.shared.free(ticket.slot);
        }
    }
}
