//! Connections: a TCP (or TLS) syslog stream, a RELP session, the UDP socket.
//!
//! Each connection is a reader that frames, builds and produces messages (waiting when the
//! in-flight budget is full, so the socket is not read and the client is pushed back), and
//! a settler. A TCP or TLS stream produces on a detached lane: nothing is kept of a produced
//! message, delivered ones give their room back in bulk, and its settler gets only what
//! Kafka did not take (handed back whole) and what librdkafka refused at once. A RELP
//! session (and the UDP socket) produces on a delivery lane: its settler takes the produced
//! messages in order from a bounded channel and waits for each one's fate, and for RELP
//! writes the answers, in transaction order, each `syslog` one after Kafka acknowledged the
//! message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use metrics::Counter;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use kafka_seq::{DetachedSender, LaneReports, LaneSender, Returns};

use crate::forward::{Outgoing, Scratch, SettleBatch, Shared, Submitted, TryDetached};
use crate::framing::{Decoder, Frame, Framing, trim};
use crate::relp;

/// Batches a connection may have produced and not settled (256 messages each). The real
/// bound is the byte budget, which also counts each message's bookkeeping
/// (`forward::MESSAGE_OVERHEAD`); this one is only a backstop. It must let a connection
/// keep many messages in flight: a connection's throughput is at most what it has in flight
/// per Kafka round trip (`linger.ms` included).
const SETTLE_BATCHES: usize = 1024;
/// How long a connection's settler waits, after the shutdown deadline, for librdkafka to
/// hand back the messages it purged (it does so at once).
const RETURNS_AFTER_DEADLINE: Duration = Duration::from_secs(10);
/// Bytes read at a time.
const READ_CHUNK: usize = 64 * 1024;

/// What happens to frames longer than `--max-frame`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Oversize {
    /// Forward the first `--max-frame` bytes.
    #[default]
    Truncate,
    /// Send the first `--max-frame` bytes to the dead-letter destination.
    DeadLetter,
}

/// The kind of listener, a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Tcp,
    Tls,
    Relp,
    RelpTls,
    Udp,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Tcp => "tcp",
            Listener::Tls => "tls",
            Listener::Relp => "relp",
            Listener::RelpTls => "relp_tls",
            Listener::Udp => "udp",
        }
    }
}

/// Per-listener metric handles.
#[derive(Clone)]
pub struct ConnMetrics {
    pub frames: Counter,
    pub bytes: Counter,
    pub parse_failures: Counter,
    pub oversize: Counter,
    pub framing_errors: Counter,
}

impl ConnMetrics {
    pub fn new(l: Listener) -> Self {
        let label = l.as_str();
        Self {
            frames: metrics::counter!("syslogger_frames_total", "listener" => label),
            bytes: metrics::counter!("syslogger_received_bytes_total", "listener" => label),
            parse_failures: metrics::counter!("syslogger_parse_failures_total", "listener" => label),
            oversize: metrics::counter!("syslogger_oversize_frames_total", "listener" => label),
            framing_errors: metrics::counter!("syslogger_framing_errors_total", "listener" => label),
        }
    }
}

/// What a connection needs besides its socket.
#[derive(Clone)]
pub struct ConnConfig {
    pub shared: Arc<Shared>,
    pub framing: Framing,
    pub max_frame: usize,
    pub oversize: Oversize,
    pub metrics: ConnMetrics,
    /// Fires when reading must stop (the grace period after SIGTERM ended).
    pub stop_reading: CancellationToken,
    /// Fires on SIGTERM (RELP sessions stop taking transactions then).
    pub stop: CancellationToken,
}

/// An item for a connection's settler, in arrival order. Messages are the common case and
/// stay unboxed (a box would be an allocation per message).
#[allow(clippy::large_enum_variant)]
enum Item {
    /// A message; `txnr` for a RELP `syslog` transaction.
    Message(Submitted, Option<u64>),
    /// A RELP answer to send as it comes in the order (open, close, errors).
    Reply(Vec<u8>),
}

/// Items at most per batch handed to the settler.
const BATCH: usize = 256;

/// A connection's items on their way to its settler, handed over a batch at a time (one
/// channel operation and at most one wake-up per batch rather than per message). The
/// settler sends the emptied vectors back to be filled again: a batch is ~50 KB, and fresh
/// memory for each one cost ~1% of the CPU (page faults).
struct Batcher {
    tx: mpsc::Sender<Vec<Item>>,
    spare: mpsc::Receiver<Vec<Item>>,
    items: Vec<Item>,
}

/// The settler's end of a [`Batcher`]: batches in, emptied vectors back.
struct Batches {
    rx: mpsc::Receiver<Vec<Item>>,
    spare: mpsc::Sender<Vec<Item>>,
}

impl Batcher {
    /// A connection's batcher and its settler's end.
    fn new() -> (Self, Batches) {
        let (tx, rx) = mpsc::channel(SETTLE_BATCHES);
        // Room for every vector in use at once (those queued, the one being settled and
        // the one being filled), so a returned one is never dropped for want of room.
        let (spare_tx, spare) = mpsc::channel(SETTLE_BATCHES + 2);
        let batcher = Self {
            tx,
            spare,
            items: Vec::with_capacity(BATCH),
        };
        (
            batcher,
            Batches {
                rx,
                spare: spare_tx,
            },
        )
    }

    /// Adds an item, handing the batch over when full; `false` when the settler is gone.
    async fn push(&mut self, item: Item) -> bool {
        !self.add(item) || self.flush().await
    }

    /// Adds an item without waiting; `true` when the batch is full and must be flushed.
    /// (The per-message path: an item given to the async `push` is first moved into its
    /// future, a copy of a few hundred bytes per message.)
    fn add(&mut self, item: Item) -> bool {
        self.items.push(item);
        self.items.len() >= BATCH
    }

    /// Hands over what is pending; `false` when the settler is gone.
    async fn flush(&mut self) -> bool {
        if self.items.is_empty() {
            return true;
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH));
        let items = std::mem::replace(&mut self.items, next);
        self.tx.send(items).await.is_ok()
    }
}

/// When the bytes of a read arrived: one clock reading per read, not per message.
#[derive(Clone, Copy)]
struct Clock {
    utc: DateTime<Utc>,
    at: Instant,
}

impl Clock {
    fn now() -> Self {
        Self {
            utc: Utc::now(),
            at: Instant::now(),
        }
    }
}

/// A connection's reading side: its items on their way to the settler, its delivery lane,
/// its scratch buffers, and whom it reads from.
struct Reader {
    batch: Batcher,
    lane: Option<LaneSender>,
    /// A stream connection's detached lane (then `lane` is `None`).
    detached: Option<DetachedSender>,
    scratch: Scratch,
    oversize_logged: bool,
    peer: SocketAddr,
}

impl Reader {
    fn new(batch: Batcher, lane: Option<LaneSender>, peer: SocketAddr) -> Self {
        Self {
            batch,
            lane,
            detached: None,
            scratch: Scratch::default(),
            oversize_logged: false,
            peer,
        }
    }
}

/// Builds and submits one frame's message (or dead-letters an oversized one). Messages
/// held in the reader's batch hold budget that only their settling gives back: they are
/// handed over before waiting for room. `None`: sent on the detached lane, nothing to
/// settle.
async fn submit_frame(
    cfg: &ConnConfig,
    r: &mut Reader,
    frame: Frame,
    clock: Clock,
) -> Option<Submitted> {
    match submit_now(cfg, r, frame, clock) {
        Ok(s) => s,
        Err(out) => submit_waiting(cfg, r, out).await,
    }
}

/// Builds the frame's record and, when the budget and the lane have room (the common case),
/// produces it without waiting; `Err` with the record when it must wait
/// ([`submit_waiting`]), whose future (holding the record) is made only then.
#[allow(clippy::result_large_err)] // as `Shared::try_submit`: a box would allocate per message
fn submit_now(
    cfg: &ConnConfig,
    r: &mut Reader,
    frame: Frame,
    clock: Clock,
) -> Result<Option<Submitted>, Outgoing> {
    let Reader {
        lane,
        detached,
        scratch,
        oversize_logged,
        peer,
        ..
    } = r;
    let peer = *peer;
    let mut lane = lane.as_mut();
    let shared = &cfg.shared;
    shared.counts.received.fetch_add(1, Ordering::Relaxed);
    cfg.metrics.frames.increment(1);
    let oversized = match &frame {
        Frame::Oversize { len, .. } => {
            cfg.metrics.oversize.increment(1);
            if !*oversize_logged {
                *oversize_logged = true;
                tracing::warn!(%peer, max = cfg.max_frame, announced = ?len, action = ?cfg.oversize, "frame longer than --max-frame (logged once per connection; syslogger_oversize_frames_total counts them)");
            }
            Some(len.map_or_else(
                || {
                    format!(
                        "oversize frame: line longer than {} bytes, truncated",
                        cfg.max_frame
                    )
                },
                |l| format!("oversize frame: {l} bytes, truncated to {}", cfg.max_frame),
            ))
        }
        Frame::Unframed(_) => {
            cfg.metrics.framing_errors.increment(1);
            None
        }
        Frame::Message(_) => None,
    };
    let (out, parsed) = shared
        .pipeline
        .build(frame.into_bytes(), clock.utc, clock.at, scratch);
    if !parsed {
        cfg.metrics.parse_failures.increment(1);
    }
    match oversized {
        Some(reason) if cfg.oversize == Oversize::DeadLetter => {
            Ok(Some(Submitted::Refused(out, reason)))
        }
        _ => match (lane.as_mut(), detached.as_mut()) {
            (_, Some(d)) => match shared.try_submit_detached(&out, d) {
                TryDetached::Sent => Ok(None),
                TryDetached::Wait => Err(out),
                TryDetached::Refused(reason) => Ok(Some(Submitted::Refused(out, reason))),
            },
            (Some(l), None) => shared.try_submit(out, l).map(Some),
            (None, None) => Err(out),
        },
    }
}

/// Submits a record [`submit_now`] could not: hands over the pending batch first (what it
/// holds is settled only once handed over), then waits for budget and a lane slot.
async fn submit_waiting(cfg: &ConnConfig, r: &mut Reader, out: Outgoing) -> Option<Submitted> {
    let shared = &cfg.shared;
    let lane = r.lane.as_mut();
    if !shared.has_room(&out) || lane.as_ref().is_some_and(|l| !l.has_room()) {
        r.batch.flush().await;
    }
    match r.detached.as_mut() {
        Some(d) => shared.submit_detached(out, d).await,
        None => Some(shared.submit(out, lane).await),
    }
}

/// Settles items in order, and what a detached lane hands back as it comes; for RELP
/// writes the answers to `writer`.
async fn settle_all<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    batches: Batches,
    mut reports: Option<LaneReports>,
    mut returns: Option<Returns>,
    writer: Option<W>,
) {
    let mut writer = writer.map(|w| BufWriter::with_capacity(16 * 1024, w));
    let mut answer = Vec::with_capacity(64);
    let mut broken = false;
    // Registered once for the connection, not once per message.
    let mut deadline = std::pin::pin!(shared.deadline.clone().cancelled_owned());
    let Batches { mut rx, spare } = batches;
    let mut items_open = true;
    loop {
        let received = tokio::select! {
            biased;
            r = async { returns.as_mut()?.next().await }, if returns.is_some() => {
                match r {
                    Some(r) => {
                        let mut batch = SettleBatch::default();
                        shared
                            .settle(Shared::returned(r), None, deadline.as_mut(), &mut batch)
                            .await;
                        shared.release(batch.released);
                    }
                    // The detached lane is done: its sender is gone, its messages settled.
                    None => returns = None,
                }
                continue;
            }
            // Past the deadline librdkafka hands back what it held (purged); bounded all
            // the same, so that shutdown ends.
            () = async {
                shared.deadline.cancelled().await;
                tokio::time::sleep(RETURNS_AFTER_DEADLINE).await;
            }, if returns.is_some() => {
                let lost = returns.as_ref().map_or(0, Returns::outstanding);
                tracing::error!(messages = lost, "librdkafka did not hand back these messages after the purge at the deadline: not spilled, counted as refused");
                shared
                    .counts
                    .refused
                    .fetch_add(lost as u64, std::sync::atomic::Ordering::Relaxed);
                returns = None;
                continue;
            }
            items = rx.recv(), if items_open => items,
            else => break,
        };
        let Some(mut items) = received else {
            items_open = false;
            continue;
        };
        let mut batch = SettleBatch::default();
        for item in items.drain(..) {
            answer.clear();
            match item {
                Item::Message(submitted, txnr) => {
                    let settled = match shared.settle_now(submitted, reports.as_mut(), &mut batch) {
                        Ok(settled) => settled,
                        Err(submitted) => {
                            shared
                                .settle(submitted, reports.as_mut(), deadline.as_mut(), &mut batch)
                                .await
                        }
                    };
                    if let Some(txnr) = txnr
                        && settled.acknowledged()
                    {
                        relp::response(txnr, relp::OK, &mut answer);
                    }
                }
                Item::Reply(bytes) => answer.extend_from_slice(&bytes),
            }
            if let Some(w) = writer.as_mut()
                && !broken
                && !answer.is_empty()
                && let Err(e) = w.write_all(&answer).await
            {
                tracing::debug!(error = %e, "RELP client gone; its unanswered transactions will be sent again");
                broken = true;
            }
        }
        // Back to the reader to be filled again (dropped when the reader is gone).
        let _ = spare.try_send(items);
        shared.release(batch.released);
        // Answers go out in batches: flush when nothing else is ready.
        if let Some(w) = writer.as_mut()
            && !broken
            && rx.is_empty()
            && let Err(e) = w.flush().await
        {
            tracing::debug!(error = %e, "RELP client gone; its unanswered transactions will be sent again");
            broken = true;
        }
    }
    if let Some(mut w) = writer
        && !broken
    {
        let _ = w.flush().await;
        let _ = w.shutdown().await;
    }
}

/// Reads into `buf`; `Ok(0)` at end of stream or when reading must stop.
async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    stop: &CancellationToken,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    tokio::select! {
        biased;
        () = stop.cancelled() => Ok(0),
        r = reader.read_buf(buf) => r,
    }
}

/// A syslog stream (TCP or TLS): frames until the peer closes or reading must stop.
pub async fn serve_stream<R, W>(cfg: ConnConfig, mut reader: R, writer: W, peer: SocketAddr)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // Held, not dropped: dropping a TCP write half sends FIN, which clients (rsyslog's
    // omfwd) read as the server closing the connection. Shut down once reading ended (TLS:
    // close_notify).
    let mut writer = writer;
    let (batch, batches) = Batcher::new();
    // Nobody is answered per message: a detached lane (a lane with reports if none).
    let (detached, returns) = match cfg.shared.open_detached() {
        Some((s, r)) => (Some(s), Some(r)),
        None => (None, None),
    };
    let (lane, reports) = if detached.is_some() {
        (None, None)
    } else {
        cfg.shared.open_lane()
    };
    let settler = tokio::spawn(settle_all::<W>(
        cfg.shared.clone(),
        batches,
        reports,
        returns,
        None,
    ));
    let mut r = Reader::new(batch, lane, peer);
    r.detached = detached;
    let mut decoder = Decoder::new(cfg.framing, cfg.max_frame);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut eof = false;
    let mut clock = Clock::now();
    loop {
        while let Some(frame) = decoder.decode(&mut buf, eof) {
            let Some(s) = submit_frame(&cfg, &mut r, frame, clock).await else {
                continue;
            };
            if r.batch.add(Item::Message(s, None)) && !r.batch.flush().await {
                return;
            }
        }
        if !r.batch.flush().await {
            return;
        }
        if eof {
            break;
        }
        let read = read_some(&mut reader, &mut buf, &cfg.stop_reading).await;
        clock = Clock::now();
        match read {
            Ok(0) => eof = true,
            Ok(n) => cfg.metrics.bytes.increment(n as u64),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "read failed; closing");
                eof = true;
            }
        }
    }
    drop(r);
    let _ = settler.await;
    let _ = writer.shutdown().await;
}

/// A RELP session: answers `open`, produces each `syslog` message and answers it after
/// Kafka acknowledged it, answers `close`; sends `serverclose` when the service stops.
pub async fn serve_relp<R, W>(cfg: ConnConfig, mut reader: R, writer: W, peer: SocketAddr)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (batch, batches) = Batcher::new();
    let (lane, reports) = cfg.shared.open_lane();
    let settler = tokio::spawn(settle_all(
        cfg.shared.clone(),
        batches,
        reports,
        None,
        Some(writer),
    ));
    let mut r = Reader::new(batch, lane, peer);
    let mut decoder = relp::Decoder::new(cfg.max_frame);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut answer = Vec::new();
    let mut clock = Clock::now();
    'session: loop {
        loop {
            let f = match decoder.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "RELP protocol error; closing the session");
                    cfg.metrics.framing_errors.increment(1);
                    break 'session;
                }
            };
            answer.clear();
            match f.command {
                relp::Command::Open => relp::response(f.txnr, relp::OPEN_OK, &mut answer),
                relp::Command::Syslog => {
                    let frame = match f.truncated {
                        Some(len) => Frame::Oversize {
                            head: trim(f.data),
                            len: Some(len),
                        },
                        None => Frame::Message(trim(f.data)),
                    };
                    // Always a message to settle: a session has no detached lane.
                    let Some(s) = submit_frame(&cfg, &mut r, frame, clock).await else {
                        continue;
                    };
                    if r.batch.add(Item::Message(s, Some(f.txnr))) && !r.batch.flush().await {
                        break 'session;
                    }
                    continue;
                }
                relp::Command::Close => {
                    relp::response(f.txnr, relp::OK, &mut answer);
                    let _ = r.batch.push(Item::Reply(answer.clone())).await;
                    break 'session;
                }
                relp::Command::Other(cmd) => {
                    tracing::warn!(%peer, command = %cmd, "RELP command not supported");
                    relp::response(f.txnr, "500 command not supported", &mut answer);
                }
            }
            if !r.batch.push(Item::Reply(answer.clone())).await {
                break 'session;
            }
        }
        if !r.batch.flush().await {
            break 'session;
        }
        // RELP clients keep what is not answered: on SIGTERM stop taking transactions at
        // once, answer what was taken, and tell the client.
        let read = read_some(&mut reader, &mut buf, &cfg.stop).await;
        clock = Clock::now();
        match read {
            Ok(0) => {
                if cfg.stop.is_cancelled() {
                    let _ = r.batch.push(Item::Reply(relp::SERVER_CLOSE.to_vec())).await;
                }
                break;
            }
            Ok(n) => cfg.metrics.bytes.increment(n as u64),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "RELP read failed; closing");
                break;
            }
        }
    }
    let _ = r.batch.flush().await;
    drop(r);
    let _ = settler.await;
}

/// The UDP listener: one message per datagram; when the in-flight budget is full the
/// datagram is dropped and counted (UDP has no way to push back).
pub async fn serve_udp(cfg: ConnConfig, socket: tokio::net::UdpSocket) {
    let dropped = metrics::counter!("syslogger_udp_dropped_total");
    let (batch, batches) = Batcher::new();
    let (lane, reports) = cfg.shared.open_lane();
    let settler = tokio::spawn(settle_all::<tokio::io::Sink>(
        cfg.shared.clone(),
        batches,
        reports,
        None,
        None,
    ));
    let mut r = Reader::new(batch, lane, SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut buf = BytesMut::with_capacity(READ_CHUNK * 2);
    loop {
        buf.reserve(READ_CHUNK);
        let received = tokio::select! {
            biased;
            () = cfg.stop.cancelled() => break,
            got = socket.recv_buf_from(&mut buf) => got,
        };
        let (n, peer) = match received {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "UDP receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        cfg.metrics.bytes.increment(n as u64);
        let data = trim(buf.split().freeze());
        if data.is_empty() {
            continue;
        }
        let frame = if data.len() > cfg.max_frame {
            Frame::Oversize {
                head: data.slice(..cfg.max_frame),
                len: Some(n as u64),
            }
        } else {
            Frame::Message(data)
        };
        let shared = &cfg.shared;
        let clock = Clock::now();
        if frame_is_oversize_dead_letter(&cfg, &frame) {
            r.peer = peer;
            let Some(s) = submit_frame(&cfg, &mut r, frame, clock).await else {
                continue;
            };
            if !r.batch.push(Item::Message(s, None)).await || !r.batch.flush().await {
                break;
            }
            continue;
        }
        shared.counts.received.fetch_add(1, Ordering::Relaxed);
        cfg.metrics.frames.increment(1);
        if matches!(frame, Frame::Oversize { .. }) {
            cfg.metrics.oversize.increment(1);
        }
        let (out, parsed) =
            shared
                .pipeline
                .build(frame.into_bytes(), clock.utc, clock.at, &mut r.scratch);
        if !parsed {
            cfg.metrics.parse_failures.increment(1);
        }
        let Some(held) = shared.try_hold(&out) else {
            shared.counts.udp_dropped.fetch_add(1, Ordering::Relaxed);
            shared.counts.received.fetch_sub(1, Ordering::Relaxed);
            dropped.increment(1);
            continue;
        };
        if r.lane.as_ref().is_some_and(|l| !l.has_room()) && !r.batch.flush().await {
            break;
        }
        let s = shared.submit_held(out, held, r.lane.as_mut()).await;
        // One datagram per receive: hand it over now (no later read completes a batch).
        if !r.batch.push(Item::Message(s, None)).await || !r.batch.flush().await {
            break;
        }
    }
    drop(r);
    let _ = settler.await;
}

fn frame_is_oversize_dead_letter(cfg: &ConnConfig, f: &Frame) -> bool {
    cfg.oversize == Oversize::DeadLetter && matches!(f, Frame::Oversize { .. })
}
