//! The service: consume, spool per partition, rotate, hand finished files to their
//! uploaders; tokens and replays at assignment; pause partitions whose uploads lag; shut
//! down consistently.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kafka_seq::{
    Ack, ConsumerConfig, ConsumerControl, KafkaMessage, KafkaStream, MessageRef, SeekTo,
};
use object_store::ObjectStore;
use object_store::path::Path;
use regex::Regex;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::args::{Args, Tombstones};
use crate::error::{Error, Result};
use crate::layout;
use crate::meta::{HEADER_READ, ObjectRange};
use crate::metrics::{PartitionMetrics, describe_metrics};
use crate::spool::{self, Batch, Command, SKIPPED, SpoolDir, VALUE};
use crate::token;
use crate::upload::{FinishedSpool, Progress, ReplayPlan, UploadJob, Uploader, Uploads};

/// Finished files waiting for upload per partition before the partition is paused.
const MAX_BACKLOG: usize = 4;
/// At most this many already-fetched messages are handled between two looks at the
/// shutdown signal, the ticker and fatal errors.
const DRAIN: usize = 256;
/// Batches of spool writes in circulation (being filled, queued, being written).
const BATCHES: usize = 4;

/// What a run of the service did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Messages consumed into spool files.
    pub messages: u64,
    /// Spool files finished and handed to their uploaders.
    pub files: u64,
    /// Open spool files abandoned (their partition was revoked, sought, or the shutdown's
    /// upload time ran out): their messages are read again by whoever owns the partition.
    pub abandoned: u64,
}

/// The flags, checked.
struct Config {
    brokers: String,
    group: String,
    pattern: String,
    allow: Vec<Regex>,
    deny: Vec<Regex>,
    tombstones: Tombstones,
    rotate_records: u64,
    rotate_bytes: u64,
    rotate_interval: Duration,
    tick: Duration,
    tokens: bool,
    key_prefix: String,
    budget: u64,
    properties: Vec<(String, String)>,
    finish_timeout: Duration,
}

fn flag(flag: &'static str, value: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Flag {
        flag,
        value: value.into(),
        message: message.into(),
    }
}

fn required(name: &'static str, v: &Option<String>) -> Result<String> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => Err(flag(name, "", "required")),
    }
}

fn full_match(name: &'static str, re: &str) -> Result<Regex> {
    Regex::new(&format!("^(?:{re})$")).map_err(|e| flag(name, re, e.to_string()))
}

impl Config {
    fn new(args: &Args) -> Result<Config> {
        let brokers = required("brokers", &args.brokers)?;
        let group = required("group", &args.group)?;
        if group.contains('/') {
            return Err(flag("group", &group, "a group id is a key segment: no '/'"));
        }
        let topics = required("topics", &args.topics)?;
        full_match("topics", &topics)?;
        let allow = args
            .allow_topics
            .iter()
            .map(|r| full_match("allow-topic", r))
            .collect::<Result<Vec<_>>>()?;
        let deny = args
            .deny_topics
            .iter()
            .map(|r| full_match("deny-topic", r))
            .collect::<Result<Vec<_>>>()?;
        if args.memory_budget < 16 << 20 {
            return Err(flag(
                "memory-budget",
                args.memory_budget.to_string(),
                "at least 16MiB",
            ));
        }
        if args.rotate_bytes > args.memory_budget / 8 * 3 {
            return Err(flag(
                "rotate-bytes",
                args.rotate_bytes.to_string(),
                format!(
                    "at most 3/8 of --memory-budget ({}): a file is compressed in memory before its upload",
                    args.memory_budget / 8 * 3
                ),
            ));
        }
        if let Some(l) = args.compression_level {
            let ok = match args.compression {
                crate::args::Codec::Gzip => (0..=9).contains(&l),
                crate::args::Codec::Zstd => (1..=22).contains(&l),
            };
            if !ok {
                return Err(flag(
                    "compression-level",
                    l.to_string(),
                    "gzip takes 0-9, zstd 1-22",
                ));
            }
        }
        Ok(Config {
            brokers,
            group,
            // librdkafka takes a subscription starting with ^ as a regular expression.
            pattern: format!("^({topics})$"),
            allow,
            deny,
            tombstones: args.tombstones,
            rotate_records: args.rotate_records,
            rotate_bytes: args.rotate_bytes,
            rotate_interval: args.rotate_interval,
            tick: (args.rotate_interval / 10)
                .clamp(Duration::from_millis(10), Duration::from_secs(1)),
            tokens: args.tokens,
            key_prefix: args.prefix.trim_matches('/').to_string(),
            budget: args.memory_budget,
            properties: args.kafka_properties.clone(),
            finish_timeout: args.finish_timeout,
        })
    }

    fn archived(&self, topic: &str) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|r| r.is_match(topic)))
            && !self.deny.iter().any(|r| r.is_match(topic))
    }
}

/// A file being filled.
struct OpenSpool {
    id: u64,
    first: i64,
    last: i64,
    entries: u64,
    bytes: u64,
    held: Ack,
    opened: Instant,
}

/// What to do once a partition's sought position is reached.
#[derive(Debug, Clone, Copy)]
enum AfterSeek {
    Nothing,
    Replay,
}

/// A message's acknowledgement, as the consuming loop got it.
enum Incoming<'a> {
    /// From an owned message.
    Owned(Ack),
    /// From a message borrowed in a batch.
    Borrowed(MessageRef<'a>),
}

impl Incoming<'_> {
    /// Processed: acknowledged.
    fn done(self) {
        match self {
            Incoming::Owned(ack) => ack.ack(),
            // Acknowledged when the batch's callback returns.
            Incoming::Borrowed(m) => drop(m),
        }
    }

    /// Kept unacknowledged (a file's first message).
    fn hold(self) -> Ack {
        match self {
            Incoming::Owned(ack) => ack,
            Incoming::Borrowed(m) => m.hold(),
        }
    }
}

/// What is due after a message was appended.
enum Next {
    Go,
    Rotate,
    Flush,
}

/// What a batch left to do (it stopped there).
enum After {
    /// A message that needs the full (async) path: a new assignment, a paused or
    /// unsettled partition, a failing tombstone.
    Message(KafkaMessage),
    /// What appending partition `i`'s message made due.
    Due(usize, Next),
    Failed(Error),
}

/// One partition as the consumer sees it.
struct Part {
    topic: Arc<str>,
    partition: i32,
    dir: String,
    archived: bool,
    assignment: u64,
    open: Option<OpenSpool>,
    uploader: mpsc::Sender<UploadJob>,
    progress: Progress,
    consumed_next: i64,
    paused: bool,
    /// With `--tokens`: the assignment whose start position is settled (the one our seek
    /// made); messages of any other are not archived.
    settled: u64,
    /// The token's decision, until a seek to it is taken (a refused seek starts another
    /// assignment id, so this is not per id).
    decision: Option<(SeekTo, AfterSeek)>,
    /// What to do at the first message of the settled assignment.
    sought: Option<AfterSeek>,
    metrics: PartitionMetrics,
}

/// The consuming side of the service.
struct Archiver {
    cfg: Config,
    store: Arc<dyn ObjectStore>,
    url: String,
    control: ConsumerControl,
    parts: Vec<Part>,
    index: HashMap<(Arc<str>, i32), usize>,
    last: Option<(usize, i32, usize)>,
    spool: SpoolDir,
    spool_tx: mpsc::Sender<Command>,
    recycle: mpsc::Receiver<Batch>,
    batch: Batch,
    batch_max: usize,
    next_spool: u64,
    uploads: Arc<Uploads>,
    uploaders: JoinSet<()>,
    outcome: Outcome,
    paused_gauge: metrics::Gauge,
    spool_gauge: metrics::Gauge,
}

/// Runs the service until `stop` fires (SIGTERM) or an error it cannot go on with; then
/// uploads the open files within `--finish-timeout` (abandoning what is left: read again
/// later), commits what was uploaded and leaves the group.
///
/// # Errors
/// Bad flags or an unopenable store ([`Error::is_config`]); a store that cannot create
/// objects only when absent; a tombstone with `--tombstones fail`; a spool I/O error.
pub async fn run(args: Args, stop: CancellationToken) -> Result<Outcome> {
    Config::new(&args)?;
    let opened = lifecycle::store::open(
        args.store.as_deref().unwrap_or_default(),
        &args.store_options.store_options,
    )?;
    run_with_store(args, opened, stop).await
}

/// [`run`] on a store opened already (`--store` is then only named in logs): for
/// programs embedding the service, and tests that wrap the store.
///
/// # Errors
/// As [`run`].
pub async fn run_with_store(
    args: Args,
    opened: lifecycle::store::OpenedStore,
    stop: CancellationToken,
) -> Result<Outcome> {
    describe_metrics();
    let cfg = Config::new(&args)?;
    let key_prefix = match (opened.prefix.as_ref(), cfg.key_prefix.as_str()) {
        ("", p) => p.to_string(),
        (u, "") => u.to_string(),
        (u, p) => format!("{u}/{p}"),
    };
    let spool_parent = args
        .spool_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("bifrost"));
    let spool = SpoolDir::create(&spool_parent)?;
    let budget = cfg.budget;
    let fetch_max = (budget / 8).min(50 << 20);
    let consumer = ConsumerConfig::new(&cfg.brokers, &cfg.group)
        .pattern(&cfg.pattern)
        // librdkafka's share is 1/4 of the budget, but this bound counts payload bytes
        // only: each queued message also holds an op (~128 bytes, as much as a small
        // message) and its fetch buffer (measured with massif: 200k queued messages of
        // ~200 bytes held 25.7 MB of ops and 18.7 MB of buffers). Hence 1/16.
        .set(
            "queued.max.messages.kbytes",
            (budget / 16 / 1024).clamp(1024, 2_097_151).to_string(),
        )
        .set("fetch.max.bytes", fetch_max.to_string())
        .set(
            "max.partition.fetch.bytes",
            fetch_max.min(1 << 20).to_string(),
        )
        .set(
            "receive.message.max.bytes",
            (fetch_max + 64 * 1024).max(1_000_000).to_string(),
        )
        // A full local queue (queued.min.messages, counted over all partitions) stops
        // fetching for fetch.queue.backoff.ms, 1 s by default: while spool writes and
        // uploads drain it, that idled the archiver most of each second (measured: about
        // 3x the throughput with 20 ms; benches/README.md).
        .set("fetch.queue.backoff.ms", "20")
        .set_all(cfg.properties.clone())
        .max_unacked(1 << 20)
        // At shutdown the held acknowledgements resolve once the uploads finished.
        .drain_timeout(cfg.finish_timeout + Duration::from_secs(10))
        .close_timeout(Duration::from_secs(10));
    let stream = consumer.subscribe()?;
    let (spool_tx, spool_rx) = mpsc::channel(BATCHES);
    let (recycle_tx, recycle) = mpsc::channel(BATCHES + 2);
    let writer = spool::start_writer(
        spool.path().to_path_buf(),
        spool.files.clone(),
        spool_rx,
        recycle_tx,
    )?;
    let (fatal_tx, fatal_rx) = mpsc::channel(4);
    let memory_kib = (budget / 8 * 3 / 1024).min(u64::from(u32::MAX >> 4)) as u32;
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let codec = args.compression;
    let uploads = Arc::new(Uploads {
        store: opened.store.clone(),
        url: opened.url.clone(),
        kind: opened.kind,
        codec,
        level: args.compression_level.unwrap_or(codec.default_level()),
        memory: Arc::new(Semaphore::new(memory_kib as usize)),
        memory_kib,
        cpu: Arc::new(Semaphore::new(cpus)),
        tokens: cfg.tokens,
        abandon: CancellationToken::new(),
        fatal: fatal_tx,
        spool: spool.files.clone(),
    });
    tracing::info!(store = %opened.url, prefix = %key_prefix, group = %cfg.group, topics = %cfg.pattern, spool = %spool.path().display(), "bifrost archiving");
    let mut a = Archiver {
        control: stream.control(),
        store: opened.store,
        url: opened.url,
        cfg: Config { key_prefix, ..cfg },
        parts: Vec::new(),
        index: HashMap::new(),
        last: None,
        spool,
        spool_tx,
        recycle,
        batch: Batch::default(),
        batch_max: (budget / 8 / (BATCHES as u64 + 2)).clamp(64 << 10, 8 << 20) as usize,
        next_spool: 1,
        uploads,
        uploaders: JoinSet::new(),
        outcome: Outcome::default(),
        paused_gauge: metrics::gauge!("bifrost_paused_partitions"),
        spool_gauge: metrics::gauge!("bifrost_spool_bytes"),
    };
    let result = a.consume(stream, stop, fatal_rx).await;
    let finished = a.finish(writer).await;
    result.and(finished)?;
    Ok(a.outcome)
}

impl Archiver {
    async fn consume(
        &mut self,
        mut stream: KafkaStream,
        stop: CancellationToken,
        mut fatal: mpsc::Receiver<Error>,
    ) -> Result<()> {
        let mut ticker = tokio::time::interval(self.cfg.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Registered once, not once per message.
        let mut stopped = std::pin::pin!(stop.cancelled());
        /// What woke the loop.
        enum Step {
            Stop,
            Fatal(Error),
            Tick,
            Batch(Option<std::result::Result<usize, kafka_seq::Error>>),
        }
        let result = loop {
            let mut after = None;
            let step = tokio::select! {
                biased;
                () = &mut stopped => Step::Stop,
                Some(e) = fatal.recv() => Step::Fatal(e),
                _ = ticker.tick() => Step::Tick,
                // Up to DRAIN already fetched messages are handled before the other
                // branches are polled again (they cost more than a message).
                r = stream.next_batch(DRAIN, |m| self.on_borrowed(m, &mut after)) => Step::Batch(r),
            };
            let done = match step {
                Step::Stop => break Ok(()),
                Step::Fatal(e) => break Err(e),
                Step::Tick => self.tick().await,
                Step::Batch(None) => break Ok(()),
                Step::Batch(Some(r)) => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "consumer error");
                    }
                    match after {
                        None => Ok(()),
                        Some(After::Message(m)) => self.on_message(m).await,
                        Some(After::Due(i, next)) => self.due(i, next).await,
                        Some(After::Failed(e)) => Err(e),
                    }
                }
            };
            if let Err(e) = done {
                break Err(e);
            }
        };
        // The stream goes away here; its consumer commits and leaves the group once every
        // held acknowledgement is resolved (see `finish`).
        drop(stream);
        result
    }

    fn part_index(&mut self, topic: &Arc<str>, partition: i32) -> usize {
        let ptr = Arc::as_ptr(topic) as *const u8 as usize;
        if let Some((p, part, i)) = self.last
            && p == ptr
            && part == partition
        {
            return i;
        }
        let i = match self.index.get(&(topic.clone(), partition)) {
            Some(i) => *i,
            None => self.new_part(topic.clone(), partition),
        };
        self.last = Some((ptr, partition, i));
        i
    }

    fn new_part(&mut self, topic: Arc<str>, partition: i32) -> usize {
        let dir = layout::partition_dir(&self.cfg.key_prefix, &self.cfg.group, &topic, partition);
        let (tx, rx) = mpsc::channel(MAX_BACKLOG * 2 + 4);
        let progress = Progress::default();
        let metrics = PartitionMetrics::new(&topic, partition);
        let uploader = Uploader::new(
            self.uploads.clone(),
            topic.clone(),
            partition,
            dir.clone(),
            progress.clone(),
            metrics.clone(),
        );
        self.uploaders.spawn(uploader.run(rx));
        let archived = self.cfg.archived(&topic);
        if !archived {
            tracing::info!(topic = %topic, "topic not archived (--allow-topic / --deny-topic): its partitions are paused");
        }
        self.parts.push(Part {
            topic: topic.clone(),
            partition,
            dir,
            archived,
            assignment: 0,
            open: None,
            uploader: tx,
            progress,
            consumed_next: -1,
            paused: false,
            settled: 0,
            decision: None,
            sought: None,
            metrics,
        });
        let i = self.parts.len() - 1;
        self.index.insert((topic, partition), i);
        i
    }

    async fn on_message(&mut self, m: KafkaMessage) -> Result<()> {
        let i = self.part_index(&m.topic, m.partition);
        let assignment = m.ack.assignment();
        if self.cfg.tokens && self.parts[i].archived && self.parts[i].settled != assignment {
            // Its position comes from the token: nothing of it is archived before the seek.
            drop(m);
            return self.settle(i, assignment).await;
        }
        if self.parts[i].assignment != assignment {
            self.abandon(i).await?;
            let p = &mut self.parts[i];
            p.assignment = assignment;
            if p.paused {
                // An assignment starts unpaused in librdkafka.
                p.paused = false;
                self.paused_gauge.decrement(1.0);
            }
            let p = &mut self.parts[i];
            if !p.archived {
                self.pause(i, true);
            } else if let Some(AfterSeek::Replay) = p.sought.take() {
                let plan = self.replay_plan(i, m.offset).await?;
                let _ = self.parts[i].uploader.send(UploadJob::Replay(plan)).await;
            }
        }
        if !self.parts[i].archived {
            // Not archived, nor what was fetched before the pause took effect (dropped
            // unacknowledged).
            return Ok(());
        }
        let KafkaMessage {
            offset,
            payload,
            ack,
            ..
        } = m;
        let next = self.append(i, offset, payload.as_deref(), Incoming::Owned(ack))?;
        self.due(i, next).await
    }

    /// Does what appending partition `i`'s message made due.
    async fn due(&mut self, i: usize, next: Next) -> Result<()> {
        match next {
            Next::Go => Ok(()),
            Next::Rotate => self.rotate(i).await,
            Next::Flush => self.flush().await,
        }
    }

    /// The fast path of a message borrowed in a batch: appended when it belongs to the
    /// partition's current, settled, archived assignment; otherwise (or when a rotation
    /// or a flush is due after it) the batch stops and `after` says what is left to do.
    fn on_borrowed(&mut self, m: MessageRef<'_>, after: &mut Option<After>) -> ControlFlow<()> {
        let i = self.part_index(m.topic, m.partition);
        let assignment = m.assignment();
        let p = &self.parts[i];
        let slow = p.assignment != assignment
            || !p.archived
            || (self.cfg.tokens && p.settled != assignment)
            || (m.payload.is_none() && matches!(self.cfg.tombstones, Tombstones::Fail));
        if slow {
            *after = Some(After::Message(m.to_owned()));
            return ControlFlow::Break(());
        }
        let (offset, payload) = (m.offset, m.payload);
        *after = match self.append(i, offset, payload, Incoming::Borrowed(m)) {
            Ok(Next::Go) => return ControlFlow::Continue(()),
            Ok(next) => Some(After::Due(i, next)),
            Err(e) => Some(After::Failed(e)),
        };
        ControlFlow::Break(())
    }

    /// Appends a message of partition `i`'s current assignment to its open file (opening
    /// one, which holds the message's acknowledgement: the commit cannot pass a file's
    /// first message before the file is uploaded), and says what is due next.
    fn append(
        &mut self,
        i: usize,
        offset: i64,
        payload: Option<&[u8]>,
        ack: Incoming<'_>,
    ) -> Result<Next> {
        let p = &mut self.parts[i];
        p.consumed_next = offset + 1;
        p.metrics.received.increment(1);
        self.outcome.messages += 1;
        let (flag, value) = match payload {
            Some(v) => (VALUE, v),
            None => {
                p.metrics.tombstones.increment(1);
                match self.cfg.tombstones {
                    Tombstones::Skip => (SKIPPED, &[][..]),
                    Tombstones::Empty => (VALUE, &[][..]),
                    Tombstones::Fail => {
                        return Err(Error::Tombstone {
                            topic: p.topic.to_string(),
                            partition: p.partition,
                            offset,
                        });
                    }
                }
            }
        };
        let size = spool::OVERHEAD + value.len() as u64;
        let open = match &mut p.open {
            Some(open) => {
                ack.done();
                open
            }
            None => {
                let id = self.next_spool;
                self.next_spool += 1;
                p.open.insert(OpenSpool {
                    id,
                    first: offset,
                    last: offset,
                    entries: 0,
                    bytes: 0,
                    held: ack.hold(),
                    opened: Instant::now(),
                })
            }
        };
        open.last = offset;
        open.entries += 1;
        open.bytes += size;
        let rotate = open.entries >= self.cfg.rotate_records || open.bytes >= self.cfg.rotate_bytes;
        self.batch.push(open.id, offset, flag, value);
        Ok(if rotate {
            Next::Rotate
        } else if self.batch.bytes() >= self.batch_max {
            Next::Flush
        } else {
            Next::Go
        })
    }

    async fn send(&self, cmd: Command) -> Result<()> {
        self.spool_tx
            .send(cmd)
            .await
            .map_err(|_| Error::Internal("the spool writer stopped".into()))
    }

    /// Sends the batch to the writer thread.
    async fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let next = self.recycle.try_recv().unwrap_or_default();
        let batch = std::mem::replace(&mut self.batch, next);
        self.send(Command::Write(batch)).await
    }

    /// Finishes partition `i`'s open file and hands it to its uploader.
    async fn rotate(&mut self, i: usize) -> Result<()> {
        let Some(open) = self.parts[i].open.take() else {
            return Ok(());
        };
        self.flush().await?;
        let p = &self.parts[i];
        let backlog = p.progress.backlog.fetch_add(1, Ordering::SeqCst) + 1;
        let job = UploadJob::Spool(FinishedSpool {
            path: self.spool.file(open.id),
            first: open.first,
            last: open.last,
            // Both as counted here; the spool writer sets them from what it wrote.
            bytes: open.bytes,
            disk: open.bytes,
            held: open.held,
            opened: open.opened,
        });
        let to = p.uploader.clone();
        self.send(Command::Finish {
            spool: open.id,
            job,
            to,
        })
        .await?;
        self.outcome.files += 1;
        if backlog >= MAX_BACKLOG && !self.parts[i].paused {
            tracing::info!(topic = %self.parts[i].topic, partition = self.parts[i].partition, backlog, "uploads lag: pausing the partition");
            self.pause(i, true);
        }
        Ok(())
    }

    /// Drops partition `i`'s open file (its messages are read again by the partition's
    /// owner: the held acknowledgement is dropped, so no commit passes them).
    async fn abandon(&mut self, i: usize) -> Result<()> {
        if let Some(open) = self.parts[i].open.take() {
            self.flush().await?;
            tracing::info!(topic = %self.parts[i].topic, partition = self.parts[i].partition, first = open.first, last = open.last, "open file abandoned (revoked or restarted partition)");
            self.outcome.abandoned += 1;
            drop(open.held);
            self.send(Command::Discard { spool: open.id }).await?;
        }
        Ok(())
    }

    fn pause(&mut self, i: usize, pause: bool) {
        let p = &mut self.parts[i];
        if p.paused == pause {
            return;
        }
        let r = if pause {
            self.control.pause(&p.topic, p.partition)
        } else {
            self.control.resume(&p.topic, p.partition)
        };
        match r {
            Ok(()) => {
                p.paused = pause;
                if pause {
                    self.paused_gauge.increment(1.0);
                } else {
                    self.paused_gauge.decrement(1.0);
                }
            }
            Err(e) => tracing::debug!(error = %e, "pause/resume"),
        }
    }

    async fn tick(&mut self) -> Result<()> {
        self.flush().await?;
        // An uploader ends only when its queue closes (at shutdown): one that ended now
        // panicked, and its partition would stop being archived.
        if let Some(ended) = self.uploaders.try_join_next() {
            return Err(Error::Internal(match ended {
                Err(e) => format!("a partition's uploader failed: {e}"),
                Ok(()) => "a partition's uploader stopped".into(),
            }));
        }
        if self.cfg.tokens {
            // Partitions assigned but silent still start where their token says.
            for (topic, partition, id) in self.control.assignment_ids() {
                let i = self.part_index(&topic, partition);
                if self.parts[i].archived && self.parts[i].settled != id {
                    self.settle(i, id).await?;
                }
            }
        }
        let now = Instant::now();
        // A file rotates by age one tick early rather than one late: uploaded within the limit.
        let due = self.cfg.rotate_interval.saturating_sub(self.cfg.tick);
        for i in 0..self.parts.len() {
            let (revoked, old) = match &self.parts[i].open {
                Some(o) => (!o.held.is_current(), now.duration_since(o.opened) >= due),
                None => (false, false),
            };
            if revoked {
                self.abandon(i).await?;
            } else if old {
                self.rotate(i).await?;
            }
            let p = &self.parts[i];
            if p.paused && p.archived && p.progress.backlog.load(Ordering::SeqCst) < MAX_BACKLOG / 2
            {
                self.pause(i, false);
            }
            let p = &self.parts[i];
            let archived = p.progress.archived_next.load(Ordering::Relaxed);
            if p.consumed_next >= 0 {
                p.metrics
                    .commit_lag
                    .set((p.consumed_next - archived.max(0)).max(0) as f64);
            }
            let uploading = *p
                .progress
                .uploading_since
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let oldest = uploading
                .or(p.open.as_ref().map(|o| o.opened))
                .map(|t| now.duration_since(t));
            p.metrics
                .oldest
                .set(oldest.map_or(0.0, |d| d.as_secs_f64()));
        }
        self.spool_gauge
            .set(self.spool.files.bytes.load(Ordering::Relaxed) as f64);
        Ok(())
    }

    fn token_key(&self, i: usize) -> Path {
        Path::from(format!("{}/{}", self.parts[i].dir, layout::TOKEN_NAME))
    }

    /// With `--tokens`: starts a new assignment of partition `i` where its token says, with
    /// a seek (tried again at the next tick or message when librdkafka is not fetching the
    /// partition yet).
    async fn settle(&mut self, i: usize, assignment: u64) -> Result<()> {
        let (to, after) = match self.parts[i].decision {
            Some(d) => d,
            None => match self.token_position(i).await {
                Ok(d) => {
                    self.parts[i].decision = Some(d);
                    d
                }
                Err(e) => {
                    // Tried again at the next tick or message; nothing is archived meanwhile.
                    self.parts[i].metrics.upload_errors.increment(1);
                    tracing::warn!(topic = %self.parts[i].topic, partition = self.parts[i].partition, error = %e, "cannot read the token; trying again");
                    return Ok(());
                }
            },
        };
        tracing::debug!(assignment, "settling the position from the token");
        let (control, topic, partition) = (
            self.control.clone(),
            self.parts[i].topic.clone(),
            self.parts[i].partition,
        );
        let t = topic.clone();
        let sought = tokio::task::spawn_blocking(move || {
            control.seek(&t, partition, to, Duration::from_secs(2))
        })
        .await
        .map_err(|e| Error::Internal(format!("seek task: {e}")))?;
        match sought {
            Ok(id) => {
                tracing::info!(topic = %topic, partition, ?to, replay = matches!(after, AfterSeek::Replay), "token: position set");
                let p = &mut self.parts[i];
                p.settled = id;
                p.decision = None;
                p.sought = Some(after);
            }
            Err(e) => {
                tracing::debug!(topic = %topic, partition, error = %e, "seek not taken yet; trying again")
            }
        }
        Ok(())
    }

    /// With `--tokens`: where partition `i` starts, as its token says.
    async fn token_position(&mut self, i: usize) -> Result<(SeekTo, AfterSeek)> {
        let key = self.token_key(i);
        let (topic, partition) = (self.parts[i].topic.clone(), self.parts[i].partition);
        let t = token::read(&*self.store, &self.url, &key, &topic, partition).await?;
        Ok(match t {
            None => {
                tracing::warn!(topic = %topic, partition, token = %key, "no token: replaying the partition from the beginning, replacing its objects");
                (SeekTo::Beginning, AfterSeek::Replay)
            }
            Some(t) if t.replay => {
                let start = self.object_start_holding(i, t.next).await?;
                tracing::warn!(topic = %topic, partition, from = t.next, start, "replay token: replaying the partition, replacing its objects");
                (SeekTo::Offset(start), AfterSeek::Replay)
            }
            Some(t) => (SeekTo::Offset(t.next), AfterSeek::Nothing),
        })
    }

    /// The first offsets of the partition's objects.
    async fn object_starts(&self, i: usize) -> Result<BTreeSet<i64>> {
        let dir = Path::from(self.parts[i].dir.clone());
        let mut list = self.store.list(Some(&dir));
        let mut starts = BTreeSet::new();
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(|source| Error::Object {
                url: self.url.clone(),
                op: "list",
                key: dir.to_string(),
                source: Box::new(source),
            })?;
            if let Some(k) = layout::parse_key(meta.location.as_ref()) {
                starts.insert(k.first);
            }
        }
        Ok(starts)
    }

    async fn range_of(&self, i: usize, first: i64) -> Result<Option<ObjectRange>> {
        let starts_key = |suffix: &str| {
            Path::from(format!(
                "{}/{}",
                self.parts[i].dir,
                format_args!("{first:010}{suffix}")
            ))
        };
        for suffix in [".baldr.gz", ".baldr.zst", ".baldr"] {
            let key = starts_key(suffix);
            let opts = object_store::GetOptions {
                range: Some(object_store::GetRange::Bounded(0..HEADER_READ)),
                ..Default::default()
            };
            let err = |source| Error::Object {
                url: self.url.clone(),
                op: "get",
                key: key.to_string(),
                source: Box::new(source),
            };
            match self.store.get_opts(&key, opts).await {
                Ok(r) => {
                    let head = r.bytes().await.map_err(err)?;
                    return Ok(ObjectRange::parse(&head).ok());
                }
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(err(e)),
            }
        }
        Ok(None)
    }

    /// The start of the object holding `offset`, or `offset` when none does.
    async fn object_start_holding(&self, i: usize, offset: i64) -> Result<i64> {
        let starts = self.object_starts(i).await?;
        let Some(&k) = starts.range(..=offset).next_back() else {
            return Ok(offset);
        };
        Ok(match self.range_of(i, k).await? {
            Some(r) if r.last >= offset => k,
            _ => offset,
        })
    }

    /// A replay starting at message `first`: replace the objects from there on; messages
    /// inside an object that starts before `first` (its start is no longer in Kafka) stay
    /// as archived.
    async fn replay_plan(&self, i: usize, first: i64) -> Result<ReplayPlan> {
        let starts = self.object_starts(i).await?;
        let mut plan = ReplayPlan::default();
        let mut from = first;
        if let Some(&k) = starts.range(..first).next_back()
            && let Some(r) = self.range_of(i, k).await?
            && r.last >= first
        {
            plan.skip_through = Some(r.last);
            from = r.last + 1;
        }
        plan.replace = starts.range(from..).copied().collect();
        Ok(plan)
    }

    /// After the loop: upload open files within `--finish-timeout`, stop the writer and the
    /// uploaders, and wait for the consumer's final commit.
    async fn finish(&mut self, writer: std::thread::JoinHandle<Result<()>>) -> Result<()> {
        let mut result = Ok(());
        for i in 0..self.parts.len() {
            let current = self.parts[i]
                .open
                .as_ref()
                .is_some_and(|o| o.held.is_current());
            let r = if current {
                self.rotate(i).await
            } else {
                self.abandon(i).await
            };
            if let Err(e) = r {
                result = Err(e);
                break;
            }
        }
        if result.is_err() {
            for p in &mut self.parts {
                p.open = None;
            }
        }
        let _ = self.flush().await;
        // Closing every queue ends the writer, then each uploader after its queue.
        let (closed_tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.spool_tx, closed_tx));
        for p in &mut self.parts {
            let (closed, _) = mpsc::channel(1);
            drop(std::mem::replace(&mut p.uploader, closed));
        }
        let deadline = tokio::time::sleep(self.cfg.finish_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = self.uploaders.join_next() => if r.is_none() { break },
                () = &mut deadline => {
                    tracing::warn!(timeout = ?self.cfg.finish_timeout, "shutdown: uploads not finished in time are abandoned (read again later)");
                    self.uploads.abandon.cancel();
                    if tokio::time::timeout(Duration::from_secs(5), async {
                        while self.uploaders.join_next().await.is_some() {}
                    }).await.is_err() {
                        self.uploaders.abort_all();
                    }
                    break;
                }
            }
        }
        match tokio::task::spawn_blocking(move || writer.join()).await {
            Ok(Ok(Err(e))) if result.is_ok() => result = Err(e),
            Ok(Ok(_)) => {}
            _ => tracing::error!("the spool writer thread panicked"),
        }
        match self.control.closed().await {
            Ok(()) => tracing::info!(
                messages = self.outcome.messages,
                files = self.outcome.files,
                abandoned = self.outcome.abandoned,
                "bifrost stopped; offsets committed"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "final commit failed; the uncommitted tail is read again later")
            }
        }
        result
    }
}
