//! The producer-wide bound on enqueued, unacknowledged messages.
//!
//! A counter taken by senders (one slot per message; a sink reserves a chunk at a time) and
//! given back by delivery reports, plus a wake-up for senders waiting for room. The delivery
//! thread, which gives a slot back per message, only reads `waiting` unless someone waits;
//! then it wakes one waiter per slot given back. A woken waiter that finds the slot taken
//! waits again; one dropped while woken passes the wake-up on (tokio's `Notify` does).
//!
//! There is no close: a producer's bound lives as long as its clients. What gives slots back
//! besides delivery reports is cancellation: a [`Slot`] dropped before [`Slot::keep`] (a
//! `send` cancelled after taking room), [`InFlight::give_back_many`] for what a sink
//! reserved and did not use, and [`InFlight::cancel_wait`] for a poll-based waiter going
//! away.
//!
//! The `kafka_seq_producer_in_flight` gauge moves with the counter (by the same amounts, so
//! several producers sum up); a sink's reservation counts as in flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use metrics::Gauge;
use tokio::sync::{Notify, futures::OwnedNotified};

/// The bound; see the [module docs](self).
pub(crate) struct InFlight {
    count: AtomicUsize,
    max: usize,
    /// Senders registered for a wake-up (registered with `room` before being counted).
    waiting: AtomicUsize,
    room: Arc<Notify>,
    /// Follows `count`.
    gauge: Gauge,
}

/// A poll-based waiter's registration for room, held between polls
/// ([`InFlight::poll_take`]); give it up with [`InFlight::cancel_wait`].
#[derive(Default)]
pub(crate) struct PollWait(Option<Pin<Box<OwnedNotified>>>);

impl PollWait {
    /// Whether a registration is held.
    pub(crate) fn is_waiting(&self) -> bool {
        self.0.is_some()
    }
}

impl InFlight {
    /// A bound of `max` slots (at least 1 is expected; the producer clamps it), reported
    /// through `gauge`.
    pub(crate) fn new(max: usize, gauge: Gauge) -> Self {
        Self {
            count: AtomicUsize::new(0),
            max,
            waiting: AtomicUsize::new(0),
            room: Arc::new(Notify::new()),
            gauge,
        }
    }

    /// Takes one slot if there is room.
    pub(crate) fn try_take(&self) -> bool {
        self.try_take_up_to(1) == 1
    }

    /// Takes up to `n` slots, as many as there is room for (maybe none).
    pub(crate) fn try_take_up_to(&self, n: usize) -> usize {
        let mut count = self.count.load(Ordering::Relaxed);
        loop {
            let take = n.min(self.max.saturating_sub(count));
            if take == 0 {
                return 0;
            }
            match self.count.compare_exchange_weak(
                count,
                count + take,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.gauge.increment(take as f64);
                    return take;
                }
                Err(now) => count = now,
            }
        }
    }

    /// Gives one slot back (a delivery report, or a message librdkafka refused).
    pub(crate) fn give_back(&self) {
        self.give_back_many(1);
    }

    /// Gives `n` slots back, waking one waiting sender per slot (a woken sender that finds
    /// the slot taken waits again; one dropped while woken passes the wake-up on).
    pub(crate) fn give_back_many(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.count.fetch_sub(n, Ordering::SeqCst);
        self.gauge.decrement(n as f64);
        let waiting = self.waiting.load(Ordering::SeqCst);
        for _ in 0..n.min(waiting) {
            self.room.notify_one();
        }
    }

    /// How many slots a sink reserves at a time: one shared-counter update per chunk
    /// rather than per message, while a sink never sits on more than 1/16 of the bound.
    pub(crate) fn chunk(&self) -> usize {
        (self.max / 16).clamp(1, 64)
    }

    /// Takes a slot, waiting for room. The slot is given back if the returned guard is
    /// dropped before [`Slot::keep`] (a `send` cancelled while waiting loses nothing).
    pub(crate) async fn take(&self) -> Slot<'_> {
        loop {
            if self.try_take() {
                return Slot(Some(self));
            }
            let room = self.room.clone().notified_owned();
            tokio::pin!(room);
            room.as_mut().enable();
            let waiting = Waiting::new(self);
            // A slot given back before `enable` is seen here; one given back after it
            // notifies `room`.
            if self.try_take() {
                return Slot(Some(self));
            }
            room.await;
            drop(waiting);
        }
    }

    /// `take` for a poll-based caller; `wait` holds its registration between polls.
    /// `Ready` means one slot was taken.
    pub(crate) fn poll_take(&self, wait: &mut PollWait, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Some(room) = wait.0.as_mut() {
                if room.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                wait.0 = None;
                self.waiting.fetch_sub(1, Ordering::SeqCst);
            }
            if self.try_take() {
                return Poll::Ready(());
            }
            let mut room = Box::pin(self.room.clone().notified_owned());
            room.as_mut().enable();
            self.waiting.fetch_add(1, Ordering::SeqCst);
            if self.try_take() {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                return Poll::Ready(());
            }
            wait.0 = Some(room);
        }
    }

    /// Gives up a registration made by [`poll_take`](Self::poll_take) (a sink dropped
    /// while waiting for room); a wake-up it had received goes on to another waiter.
    pub(crate) fn cancel_wait(&self, wait: &mut PollWait) {
        if wait.0.take().is_some() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Slots taken now.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Senders registered for a wake-up now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// An in-flight slot held by a `send` until its message is enqueued.
pub(crate) struct Slot<'a>(Option<&'a InFlight>);

impl Slot<'_> {
    /// The message was enqueued: its delivery report gives the slot back.
    pub(crate) fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(in_flight) = self.0 {
            in_flight.give_back();
        }
    }
}

/// Counts a sender waiting for room while it lives.
struct Waiting<'a>(&'a InFlight);

impl<'a> Waiting<'a> {
    fn new(in_flight: &'a InFlight) -> Self {
        in_flight.waiting.fetch_add(1, Ordering::SeqCst);
        Self(in_flight)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::task::noop_waker_ref;

    use super::*;

    /// Polls `f` once without a runtime's waker.
    fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(noop_waker_ref()))
    }

    fn poll_take_once(in_flight: &InFlight, wait: &mut PollWait) -> Poll<()> {
        in_flight.poll_take(wait, &mut Context::from_waker(noop_waker_ref()))
    }

    #[test]
    fn slots_are_taken_up_to_the_bound_and_given_back() {
        let f = InFlight::new(3, Gauge::noop());
        assert!(f.try_take());
        assert!(f.try_take());
        assert!(f.try_take());
        assert!(!f.try_take(), "the bound is 3");
        assert_eq!(f.count(), 3);
        f.give_back();
        assert_eq!(f.count(), 2);
        assert!(f.try_take(), "a slot given back can be taken again");
        assert!(!f.try_take());
        f.give_back_many(3);
        assert_eq!(f.count(), 0);
        f.give_back_many(0);
        assert_eq!(f.count(), 0, "giving back nothing changes nothing");
    }

    #[test]
    fn chunks_take_what_room_there_is() {
        let f = InFlight::new(100, Gauge::noop());
        assert_eq!(f.chunk(), 6, "1/16 of the bound");
        assert_eq!(
            InFlight::new(100_000, Gauge::noop()).chunk(),
            64,
            "at most 64"
        );
        assert_eq!(InFlight::new(5, Gauge::noop()).chunk(), 1, "at least 1");
        assert_eq!(f.try_take_up_to(60), 60);
        assert_eq!(f.try_take_up_to(64), 40, "only the room left");
        assert_eq!(f.try_take_up_to(64), 0, "full");
        assert_eq!(f.count(), 100);
        f.give_back_many(7);
        assert_eq!(f.try_take_up_to(f.chunk()), 6);
        assert_eq!(f.try_take_up_to(f.chunk()), 1);
    }

    #[test]
    fn a_dropped_slot_is_given_back_and_a_kept_one_is_not() {
        let f = InFlight::new(2, Gauge::noop());
        let mut take = Box::pin(f.take());
        let Poll::Ready(slot) = poll_once(&mut take) else {
            panic!("room for the first slot");
        };
        drop(take);
        assert_eq!(f.count(), 1);
        drop(slot);
        assert_eq!(
            f.count(),
            0,
            "a send cancelled after taking room loses nothing"
        );
        let mut take = Box::pin(f.take());
        let Poll::Ready(slot) = poll_once(&mut take) else {
            panic!("room");
        };
        drop(take);
        slot.keep();
        assert_eq!(f.count(), 1, "a kept slot waits for its delivery report");
    }

    #[test]
    fn a_waiter_is_woken_when_room_frees() {
        let f = InFlight::new(1, Gauge::noop());
        assert!(f.try_take());
        let mut take = Box::pin(f.take());
        assert!(poll_once(&mut take).is_pending(), "no room");
        assert_eq!(f.waiting(), 1);
        assert!(poll_once(&mut take).is_pending(), "still no room");
        f.give_back();
        let Poll::Ready(slot) = poll_once(&mut take) else {
            panic!("the slot given back goes to the waiter");
        };
        assert_eq!(f.waiting(), 0);
        assert_eq!(f.count(), 1);
        drop(slot);
        drop(take);
        assert_eq!(f.count(), 0);
    }

    #[test]
    fn each_slot_given_back_wakes_one_waiter() {
        let f = InFlight::new(3, Gauge::noop());
        assert_eq!(f.try_take_up_to(3), 3);
        let mut takes: Vec<_> = (0..3).map(|_| Box::pin(f.take())).collect();
        for t in &mut takes {
            assert!(poll_once(t).is_pending());
        }
        assert_eq!(f.waiting(), 3);
        f.give_back_many(2);
        // The slots taken are held (dropping one would give it back and wake the next).
        let polled: Vec<_> = takes.iter_mut().map(poll_once).collect();
        let ready: Vec<bool> = polled.iter().map(Poll::is_ready).collect();
        assert_eq!(
            ready,
            [true, true, false],
            "two slots wake the two oldest waiters, not the third"
        );
        assert_eq!(f.count(), 3);
        assert_eq!(f.waiting(), 1);
        assert!(poll_once(&mut takes[2]).is_pending(), "no spurious wake-up");
        f.give_back();
        assert!(poll_once(&mut takes[2]).is_ready());
        assert_eq!(f.waiting(), 0);
        drop(polled);
    }

    #[test]
    fn a_waiter_dropped_after_its_wake_up_passes_it_on() {
        let f = InFlight::new(1, Gauge::noop());
        assert!(f.try_take());
        let mut first = Box::pin(f.take());
        let mut second = Box::pin(f.take());
        assert!(poll_once(&mut first).is_pending());
        assert!(poll_once(&mut second).is_pending());
        f.give_back(); // wakes `first`...
        drop(first); // ...which goes away without taking the slot
        assert_eq!(f.waiting(), 1);
        assert!(
            poll_once(&mut second).is_ready(),
            "the wake-up went on to the next waiter"
        );
    }

    #[test]
    fn poll_takers_wait_are_woken_and_can_cancel() {
        let f = InFlight::new(1, Gauge::noop());
        assert!(f.try_take());
        let mut a = PollWait::default();
        let mut b = PollWait::default();
        assert!(poll_take_once(&f, &mut a).is_pending());
        assert!(poll_take_once(&f, &mut b).is_pending());
        assert!(a.is_waiting() && b.is_waiting());
        assert_eq!(f.waiting(), 2);
        f.give_back(); // wakes `a`
        f.cancel_wait(&mut a); // a sink dropped while woken
        assert!(!a.is_waiting());
        assert_eq!(f.waiting(), 1);
        assert!(
            poll_take_once(&f, &mut b).is_ready(),
            "the cancelled waiter's wake-up went on"
        );
        assert!(!b.is_waiting());
        assert_eq!(f.waiting(), 0);
        assert_eq!(f.count(), 1);
        f.cancel_wait(&mut b); // nothing held: nothing changes
        assert_eq!(f.waiting(), 0);
        f.give_back();
        assert!(
            poll_take_once(&f, &mut a).is_ready(),
            "room without waiting"
        );
        assert!(!a.is_waiting());
    }

    #[test]
    fn the_gauge_follows_the_count() {
        let recorder = telemetry::Recorder::new();
        let gauge = metrics::with_local_recorder(&recorder, || metrics::gauge!("in_flight"));
        let f = InFlight::new(100, gauge);
        let read = || recorder.snapshot().gauge("in_flight", &[]);
        assert_eq!(f.try_take_up_to(f.chunk()), 6);
        assert!(f.try_take());
        assert_eq!(read(), Some(7.0), "a sink's reservation counts");
        f.give_back();
        f.give_back_many(4);
        assert_eq!(read(), Some(2.0));
        assert_eq!(f.try_take_up_to(200), 98);
        assert!(!f.try_take());
        assert_eq!(read(), Some(100.0), "nothing counted past the bound");
        f.give_back_many(100);
        assert_eq!(read(), Some(0.0));
    }

    /// Senders on runtime threads and on plain threads (as `send` and a sink) contend for a
    /// small bound while a "delivery thread" gives slots back: every sender finishes (no
    /// wake-up is lost) and the count never passes the bound.
    #[test]
    fn no_wake_up_is_lost_under_contention() {
        const MAX: usize = 2;
        const SENDERS: usize = 8;
        const ROUNDS: usize = 2_000;
        let f = Arc::new(InFlight::new(MAX, Gauge::noop()));
        let (given_tx, given_rx) = std::sync::mpsc::channel::<()>();
        // The delivery thread: gives back one slot per report, after a short while.
        let delivery = std::thread::spawn({
            let f = f.clone();
            move || {
                let mut n = 0;
                while given_rx.recv_timeout(Duration::from_secs(30)).is_ok() {
                    assert!(f.count() <= MAX, "the bound holds");
                    if n % 7 == 0 {
                        std::thread::yield_now();
                    }
                    f.give_back();
                    n += 1;
                }
                n
            }
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut tasks = Vec::new();
            for s in 0..SENDERS {
                let f = f.clone();
                let given_tx = given_tx.clone();
                tasks.push(tokio::spawn(async move {
                    let mut wait = PollWait::default();
                    for _ in 0..ROUNDS {
                        if s % 2 == 0 {
                            f.take().await.keep();
                        } else {
                            std::future::poll_fn(|cx| f.poll_take(&mut wait, cx)).await;
                        }
                        given_tx.send(()).unwrap();
                    }
                }));
            }
            drop(given_tx);
            for t in tasks {
                tokio::time::timeout(Duration::from_secs(60), t)
                    .await
                    .expect("every sender got its slots: no lost wake-up")
                    .unwrap();
            }
        });
        let reported = delivery.join().unwrap();
        assert_eq!(reported, SENDERS * ROUNDS);
        assert_eq!(f.count(), 0);
        assert_eq!(f.waiting(), 0);
    }
}
