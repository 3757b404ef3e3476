//! The executor: a coordinator task that admits units, dispatches transitions to at most
//! `concurrency` concurrent worker tasks, honours per-state limits and keeps failed units in
//! a timer queue.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use metrics::{Counter, Gauge, Histogram};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::journal::{JournalTx, RecordOut};
use crate::snapshot::{Progress, Snapshot, StateCounts};
use crate::{DeadLetter, Error, Journal, Machine, RetryPolicy, StepError, Transition, Unit};

/// Limits for one state name.
#[derive(Debug, Clone, Default)]
struct StateLimits {
    concurrency: Option<usize>,
    rate: Option<Quota>,
}

/// Runs many units of one [`Machine`] concurrently. Build it, then call [`run`](Self::run).
///
/// ```
/// use state_machine::{Executor, Machine, StepError, Transition, Unit};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// enum Job { Fetch, Store(u32) }
///
/// struct Jobs;
/// impl Machine for Jobs {
///     type State = Job;
///     fn state_name(&self, state: &Job) -> &'static str {
///         match state { Job::Fetch => "fetch", Job::Store(_) => "store" }
///     }
///     async fn step(&self, _id: &str, state: &Job) -> Result<Transition<Job>, StepError> {
///         Ok(match state {
///             Job::Fetch => Transition::Next(Job::Store(42)),
///             Job::Store(_) => Transition::Completed,
///         })
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let units = (0..100).map(|i| Unit::new(format!("job-{i}"), Job::Fetch));
/// let report = Executor::new(Jobs).concurrency(8).limit_concurrency("fetch", 2).run_iter(units).await;
/// assert_eq!(report.completed, 100);
/// assert!(report.dead.is_empty() && report.unfinished.is_empty());
/// # });
/// ```
pub struct Executor<M: Machine> {
    machine: Arc<M>,
    concurrency: usize,
    max_active: Option<usize>,
    policy: RetryPolicy,
    limits: Vec<(String, StateLimits)>,
    journal: Option<Journal>,
    cancel: CancellationToken,
    progress: Progress,
}

/// Stops a run: no new transition starts, running ones finish, and the run returns every
/// unfinished unit in its current state. Clone it freely.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// Asks the run to stop.
    pub fn shutdown(&self) {
        self.token.cancel();
    }

    /// Whether a stop was asked for.
    pub fn is_shutdown(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Report<S> {
    /// Units that completed.
    pub completed: u64,
    /// Units given up: permanent errors, or transient ones past the retry policy.
    pub dead: Vec<DeadLetter<S>>,
    /// Units taken from the input that neither completed nor died (after a shutdown or a
    /// journal failure), each in its current state.
    pub unfinished: Vec<Unit<S>>,
    /// Step attempts, successful or not.
    pub attempts: u64,
    /// Successful transitions (completions included).
    pub transitions: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Whether the run was stopped through its [`Shutdown`] handle.
    pub shut_down: bool,
    /// Why the journal failed, if it did (the run then stopped as after a shutdown).
    pub journal_error: Option<Error>,
}

impl<S> Report<S> {
    /// Completed units per second of the run.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.completed as f64 / secs
        } else {
            0.0
        }
    }
}

impl<M: Machine> Executor<M> {
    /// An executor for `machine` with 16 workers and the default [`RetryPolicy`].
    pub fn new(machine: M) -> Self {
        Self::with_shared(Arc::new(machine))
    }

    /// Like [`new`](Self::new), for a machine shared with other code.
    pub fn with_shared(machine: Arc<M>) -> Self {
        Executor {
            machine,
            concurrency: 16,
            max_active: None,
            policy: RetryPolicy::default(),
            limits: Vec::new(),
            journal: None,
            cancel: CancellationToken::new(),
            progress: Progress::default(),
        }
    }

    /// How many transitions may run at once, across all states (at least 1).
    pub fn concurrency(mut self, workers: usize) -> Self {
        self.concurrency = workers.max(1);
        self
    }

    /// The most units held at once (running, ready or waiting for a retry); the input is not
    /// pulled beyond it. Default: `max(64 * concurrency, 1024)`.
    pub fn max_active(mut self, units: usize) -> Self {
        self.max_active = Some(units.max(1));
        self
    }

    /// The retry policy for transient failures.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    fn limits_mut(&mut self, state: &str) -> &mut StateLimits {
        let i = match self.limits.iter().position(|(name, _)| name == state) {
            Some(i) => i,
            None => {
                self.limits
                    .push((state.to_string(), StateLimits::default()));
                self.limits.len() - 1
            }
        };
        &mut self.limits[i].1
    }

    /// At most `limit` transitions out of state `state` run at once (at least 1).
    pub fn limit_concurrency(mut self, state: &str, limit: usize) -> Self {
        self.limits_mut(state).concurrency = Some(limit.max(1));
        self
    }

    /// Transitions out of state `state` start at most at this rate (GCRA). A unit held back
    /// waits in its queue; other states go on.
    pub fn limit_rate(mut self, state: &str, quota: Quota) -> Self {
        self.limits_mut(state).rate = Some(quota);
        self
    }

    /// Writes every unit's state to `journal` after each transition.
    pub fn journal(mut self, journal: Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// A handle that stops the run.
    pub fn shutdown_handle(&self) -> Shutdown {
        Shutdown {
            token: self.cancel.clone(),
        }
    }

    /// A handle to the run's live [`Snapshot`].
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// Runs every unit of `input` to completion or dead letter; units are pulled as capacity
    /// frees. To keep the part of the input not pulled after a shutdown, pass a
    /// `&mut` stream (e.g. `stream.by_ref()`).
    ///
    /// Steps are spawned on the current tokio runtime. Run this future on a runtime worker
    /// (`tokio::spawn(executor.run(..))`) rather than directly under `Runtime::block_on`:
    /// steps then start on the coordinator's worker thread without a cross-thread wake-up
    /// (about half the per-transition overhead).
    ///
    /// Dropping this future (instead of a [`Shutdown`]) drops the units it holds; running
    /// steps finish in the background. For a journal that is a crash: a resume redoes at
    /// most the transitions that were running.
    pub async fn run<I>(self, input: I) -> Report<M::State>
    where
        I: Stream<Item = Unit<M::State>>,
    {
        let mut run = Run::new(self);
        run.drive(input).await;
        run.finish().await
    }

    /// [`run`](Self::run) over an iterator.
    pub async fn run_iter<I>(self, input: I) -> Report<M::State>
    where
        I: IntoIterator<Item = Unit<M::State>>,
    {
        self.run(futures::stream::iter(input)).await
    }

    /// Opens the journal at `path` (see [`Journal::open`]), continues every unfinished unit it
    /// holds, journaling to the same file, and returns the report of the continued units.
    pub async fn resume(self, path: impl AsRef<Path>) -> Result<Report<M::State>, Error> {
        // Reading (and repairing) a journal is file I/O of its whole length: off the runtime.
        let path = path.as_ref().to_path_buf();
        let opened = path.clone();
        let (journal, recovery) =
            tokio::task::spawn_blocking(move || Journal::open::<M::State>(opened))
                .await
                .map_err(|e| Error::JournalIo {
                    path,
                    action: "open",
                    source: std::io::Error::other(e),
                })??;
        Ok(self.journal(journal).run_iter(recovery.unfinished).await)
    }
}

/// A unit held by the executor.
struct Entry<S> {
    unit: Unit<S>,
    /// Attempts of the current state's transition that failed.
    attempts: u32,
    first_failure: Option<Instant>,
    span: tracing::Span,
}

/// A unit waiting for its retry; ordered so that the heap's top is the earliest due.
struct Timed<S> {
    due: Instant,
    seq: u64,
    state: usize,
    entry: Entry<S>,
}

impl<S> PartialEq for Timed<S> {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due && self.seq == other.seq
    }
}
impl<S> Eq for Timed<S> {}
impl<S> PartialOrd for Timed<S> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<S> Ord for Timed<S> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

struct StateMetrics {
    transitions: Counter,
    transient: Counter,
    permanent: Counter,
    retries: Counter,
    latency: Histogram,
}

impl StateMetrics {
    fn new(state: &'static str) -> Self {
        StateMetrics {
            transitions: metrics::counter!("state_machine_transitions_total", "state" => state),
            transient: metrics::counter!("state_machine_failures_total", "state" => state, "kind" => "transient"),
            permanent: metrics::counter!("state_machine_failures_total", "state" => state, "kind" => "permanent"),
            retries: metrics::counter!("state_machine_retries_total", "state" => state),
            latency: metrics::histogram!("state_machine_transition_seconds", "state" => state),
        }
    }
}

struct Slot<S> {
    name: &'static str,
    ready: VecDeque<Entry<S>>,
    limit: usize,
    limiter: Option<DefaultDirectRateLimiter>,
    blocked_until: Option<Instant>,
    metrics: StateMetrics,
}

struct RunMetrics {
    admitted: Counter,
    completed: Counter,
    dead: Counter,
    in_flight: Gauge,
    waiting: Gauge,
}

/// What a worker task hands back.
struct Done<S> {
    state: usize,
    entry: Entry<S>,
    result: Result<Transition<S>, StepError>,
    elapsed: Duration,
}

struct Run<M: Machine> {
    machine: Arc<M>,
    concurrency: usize,
    max_active: usize,
    policy: RetryPolicy,
    limits: Vec<(String, StateLimits)>,
    cancel: CancellationToken,
    progress: Progress,
    journal: Option<JournalTx>,
    journal_error: Option<Error>,
    clock: DefaultClock,
    started: Instant,

    slots: Vec<Slot<M::State>>,
    timers: BinaryHeap<Timed<M::State>>,
    /// Worker tasks send their outcome here (capacity `concurrency`: never more in flight).
    done_tx: mpsc::Sender<Done<M::State>>,
    done_rx: mpsc::Receiver<Done<M::State>>,
    next_seq: u64,
    rr: usize,
    /// Units held (ready, running or waiting).
    active: usize,
    input_done: bool,
    stopping: bool,

    snap: Snapshot,
    transitions: u64,
    dead: Vec<DeadLetter<M::State>>,
    metrics: RunMetrics,
}

impl<M: Machine> Run<M> {
    fn new(executor: Executor<M>) -> Self {
        let Executor {
            machine,
            concurrency,
            max_active,
            policy,
            limits,
            journal,
            cancel,
            progress,
        } = executor;
        let (done_tx, done_rx) = mpsc::channel(concurrency);
        Run {
            machine,
            concurrency,
            max_active: max_active.unwrap_or((concurrency.saturating_mul(64)).max(1024)),
            policy,
            limits,
            cancel,
            progress,
            journal: journal.map(JournalTx::start),
            journal_error: None,
            clock: DefaultClock::default(),
            started: Instant::now(),
            slots: Vec::new(),
            timers: BinaryHeap::new(),
            done_tx,
            done_rx,
            next_seq: 0,
            rr: 0,
            active: 0,
            input_done: false,
            stopping: false,
            snap: Snapshot::default(),
            transitions: 0,
            dead: Vec::new(),
            metrics: RunMetrics {
                admitted: metrics::counter!("state_machine_units_admitted_total"),
                completed: metrics::counter!("state_machine_units_completed_total"),
                dead: metrics::counter!("state_machine_units_dead_total"),
                in_flight: metrics::gauge!("state_machine_in_flight"),
                waiting: metrics::gauge!("state_machine_waiting"),
            },
        }
    }

    /// The slot index for state `name`, created on first sight.
    fn slot(&mut self, name: &'static str) -> usize {
        if let Some(i) = self
            .slots
            .iter()
            .position(|s| std::ptr::eq(s.name, name) || s.name == name)
        {
            return i;
        }
        let limits = self
            .limits
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| l.clone())
            .unwrap_or_default();
        self.slots.push(Slot {
            name,
            ready: VecDeque::new(),
            limit: limits.concurrency.unwrap_or(usize::MAX),
            limiter: limits.rate.map(DefaultDirectRateLimiter::direct),
            blocked_until: None,
            metrics: StateMetrics::new(name),
        });
        self.snap.states.push(StateCounts {
            state: name,
            ..StateCounts::default()
        });
        self.slots.len() - 1
    }

    fn push_ready(&mut self, entry: Entry<M::State>) {
        let name = self.machine.state_name(&entry.unit.state);
        let i = self.slot(name);
        self.slots[i].ready.push_back(entry);
        self.snap.states[i].ready += 1;
        self.snap.ready += 1;
    }

    async fn journal(&mut self, record: RecordOut<'_, M::State>) {
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        if let Err(e) = journal.append(&record).await {
            tracing::error!(error = %e, "journal failed: stopping the run");
            self.journal = None;
            self.journal_error = Some(e);
            self.stopping = true;
        }
    }

    async fn admit(&mut self, unit: Unit<M::State>) {
        self.journal(RecordOut::State {
            id: &unit.id,
            state: &unit.state,
        })
        .await;
        let span = tracing::info_span!("unit", id = %unit.id);
        self.active += 1;
        self.snap.admitted += 1;
        self.metrics.admitted.increment(1);
        self.push_ready(Entry {
            unit,
            attempts: 0,
            first_failure: None,
            span,
        });
    }

    /// Whether to take another unit from the input: below `max_active`, and either a worker
    /// is idle (the ready units are all held back by their states' limits, so a unit of another
    /// state may be next in the input) or fewer than `concurrency` units are ready.
    fn can_pull(&self) -> bool {
        !self.stopping
            && !self.input_done
            && self.active < self.max_active
            && (self.snap.in_flight < self.concurrency || self.snap.ready < self.concurrency)
    }

    /// Moves units whose retry is due to their ready queue.
    fn promote_due(&mut self, now: Instant) {
        while self.timers.peek().is_some_and(|t| t.due <= now) {
            let Some(timed) = self.timers.pop() else {
                break;
            };
            self.snap.states[timed.state].waiting -= 1;
            self.snap.waiting -= 1;
            self.slots[timed.state].ready.push_back(timed.entry);
            self.snap.states[timed.state].ready += 1;
            self.snap.ready += 1;
        }
    }

    /// Starts the next transition out of state `i` if its limits allow.
    fn try_start(&mut self, i: usize, now: Instant) -> bool {
        let slot = &mut self.slots[i];
        let counts = &mut self.snap.states[i];
        if slot.ready.is_empty() || counts.in_flight >= slot.limit {
            return false;
        }
        if let Some(until) = slot.blocked_until {
            if until > now {
                return false;
            }
            slot.blocked_until = None;
        }
        if let Some(limiter) = &slot.limiter
            && let Err(not_until) = limiter.check()
        {
            let wait = not_until.wait_time_from(self.clock.now());
            slot.blocked_until = Some(now + wait.max(Duration::from_micros(100)));
            return false;
        }
        let Some(entry) = slot.ready.pop_front() else {
            return false;
        };
        counts.ready -= 1;
        counts.in_flight += 1;
        counts.max_in_flight = counts.max_in_flight.max(counts.in_flight);
        self.snap.ready -= 1;
        self.snap.in_flight += 1;
        self.snap.attempts += 1;
        let machine = Arc::clone(&self.machine);
        let span = tracing::debug_span!(parent: &entry.span, "transition", state = slot.name, attempt = entry.attempts + 1);
        let done_tx = self.done_tx.clone();
        tokio::spawn(
            async move {
                let started = Instant::now();
                let result = AssertUnwindSafe(machine.step(&entry.unit.id, &entry.unit.state))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Err(StepError::permanent(format!("the step panicked: {what}")))
                    });
                let done = Done {
                    state: i,
                    entry,
                    result,
                    elapsed: started.elapsed(),
                };
                // Fails only when the run was dropped (not shut down): nobody is waiting.
                let _ = done_tx.send(done).await;
            }
            .instrument(span),
        );
        true
    }

    /// Starts transitions while workers are free, round-robin over the states.
    fn dispatch(&mut self, now: Instant) {
        let n = self.slots.len();
        if n == 0 || self.stopping {
            return;
        }
        let mut i = self.rr % n;
        let mut misses = 0;
        while self.snap.in_flight < self.concurrency && self.snap.ready > 0 && misses < n {
            if self.try_start(i, now) {
                misses = 0;
            } else {
                misses += 1;
            }
            i = (i + 1) % n;
        }
        self.rr = i;
    }

    /// When the loop must wake up by itself: the next retry, or a rate limit clearing.
    fn next_deadline(&self) -> Option<Instant> {
        let retry = self.timers.peek().map(|t| t.due);
        let limited = self
            .slots
            .iter()
            .filter(|s| !s.ready.is_empty())
            .filter_map(|s| s.blocked_until)
            .min();
        match (retry, limited) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn complete(&mut self, done: Done<M::State>) {
        let Done {
            state: i,
            mut entry,
            result,
            elapsed,
        } = done;
        self.snap.states[i].in_flight -= 1;
        self.snap.in_flight -= 1;
        self.slots[i].metrics.latency.record(elapsed.as_secs_f64());
        match result {
            Ok(Transition::Next(state)) => {
                self.slots[i].metrics.transitions.increment(1);
                self.snap.states[i].transitions += 1;
                self.transitions += 1;
                entry.unit.state = state;
                entry.attempts = 0;
                entry.first_failure = None;
                self.journal(RecordOut::State {
                    id: &entry.unit.id,
                    state: &entry.unit.state,
                })
                .await;
                self.push_ready(entry);
            }
            Ok(Transition::Completed) => {
                self.slots[i].metrics.transitions.increment(1);
                self.snap.states[i].transitions += 1;
                self.transitions += 1;
                self.snap.completed += 1;
                self.metrics.completed.increment(1);
                self.active -= 1;
                self.journal(RecordOut::Completed { id: &entry.unit.id })
                    .await;
            }
            Err(error) => {
                self.snap.states[i].failures += 1;
                entry.attempts += 1;
                let now = Instant::now();
                let first = *entry
                    .first_failure
                    .get_or_insert(now.checked_sub(elapsed).unwrap_or(now));
                if error.is_transient() {
                    self.slots[i].metrics.transient.increment(1);
                    if entry.attempts < self.policy.max_attempts {
                        let delay = error
                            .retry_after_hint()
                            .unwrap_or_else(|| self.policy.backoff(entry.attempts));
                        let due = now + delay;
                        let in_time = self
                            .policy
                            .max_elapsed
                            .is_none_or(|max| due.duration_since(first) <= max);
                        if in_time {
                            self.slots[i].metrics.retries.increment(1);
                            tracing::debug!(parent: &entry.span, state = self.slots[i].name, attempt = entry.attempts, delay_ms = delay.as_millis() as u64, %error, "retry scheduled");
                            self.snap.retries += 1;
                            self.snap.states[i].waiting += 1;
                            self.snap.waiting += 1;
                            self.next_seq += 1;
                            self.timers.push(Timed {
                                due,
                                seq: self.next_seq,
                                state: i,
                                entry,
                            });
                            return;
                        }
                    }
                } else {
                    self.slots[i].metrics.permanent.increment(1);
                }
                tracing::warn!(parent: &entry.span, state = self.slots[i].name, attempts = entry.attempts, %error, "dead letter");
                self.metrics.dead.increment(1);
                self.snap.dead += 1;
                self.active -= 1;
                self.journal(RecordOut::Dead {
                    id: &entry.unit.id,
                    state: &entry.unit.state,
                    error: &error,
                    attempts: entry.attempts,
                })
                .await;
                self.dead.push(DeadLetter {
                    id: entry.unit.id,
                    state: entry.unit.state,
                    error,
                    attempts: entry.attempts,
                });
            }
        }
    }

    fn publish(&mut self) {
        self.metrics.in_flight.set(self.snap.in_flight as f64);
        self.metrics.waiting.set(self.snap.waiting as f64);
        self.progress.publish(&self.snap);
    }

    async fn drive<I>(&mut self, input: I)
    where
        I: Stream<Item = Unit<M::State>>,
    {
        let mut input = pin!(input);
        let mut sleep = pin!(tokio::time::sleep(Duration::ZERO));
        // One waiter for the whole run, not one registered and dropped per loop turn.
        let mut cancelled = pin!(self.cancel.clone().cancelled_owned());
        let mut armed: Option<Instant> = None;
        loop {
            let now = Instant::now();
            self.promote_due(now);
            if !self.stopping {
                self.dispatch(now);
            }
            self.publish();
            let idle = self.snap.ready == 0 && self.snap.waiting == 0;
            if self.snap.in_flight == 0 && (self.stopping || (self.input_done && idle)) {
                break;
            }
            let deadline = if self.stopping {
                None
            } else {
                self.next_deadline()
            };
            if deadline != armed {
                if let Some(at) = deadline {
                    sleep.as_mut().reset(at);
                }
                armed = deadline;
            }
            let can_pull = self.can_pull();
            tokio::select! {
                biased;
                () = &mut cancelled, if !self.stopping => {
                    tracing::info!("shutdown: letting running transitions finish");
                    self.stopping = true;
                }
                Some(done) = self.done_rx.recv(), if self.snap.in_flight > 0 => {
                    self.complete(done).await;
                    while let Ok(done) = self.done_rx.try_recv() {
                        self.complete(done).await;
                    }
                }
                item = input.next(), if can_pull => match item {
                    Some(unit) => {
                        self.admit(unit).await;
                        self.dispatch(Instant::now());
                        // Take what the input has at hand without another trip round the loop.
                        while self.can_pull() {
                            match input.next().now_or_never() {
                                Some(Some(unit)) => {
                                    self.admit(unit).await;
                                    self.dispatch(Instant::now());
                                }
                                Some(None) => self.input_done = true,
                                None => break,
                            }
                        }
                    }
                    None => self.input_done = true,
                },
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                }
                // Nothing running, nothing to pull, nothing due: cannot happen (a held-back
                // unit always has a deadline), but never hang: stop and return the units.
                else => {
                    tracing::error!("executor stalled with no event to wait for: stopping");
                    self.stopping = true;
                }
            }
        }
    }

    async fn finish(mut self) -> Report<M::State> {
        let mut unfinished = Vec::with_capacity(self.active);
        for slot in &mut self.slots {
            unfinished.extend(slot.ready.drain(..).map(|e| e.unit));
        }
        unfinished.extend(self.timers.drain().map(|t| t.entry.unit));
        if let Some(mut journal) = self.journal.take()
            && let Err(e) = journal.stop().await
        {
            self.journal_error = Some(e);
        }
        for counts in &mut self.snap.states {
            counts.ready = 0;
            counts.waiting = 0;
        }
        self.snap.ready = 0;
        self.snap.waiting = 0;
        self.publish();
        Report {
            completed: self.snap.completed,
            dead: self.dead,
            unfinished,
            attempts: self.snap.attempts,
            transitions: self.transitions,
            retries: self.snap.retries,
            elapsed: self.started.elapsed(),
            shut_down: self.cancel.is_cancelled(),
            journal_error: self.journal_error,
        }
    }
}
