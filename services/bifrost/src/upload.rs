//! Per-partition uploaders: finished spool files are compressed, put create-only under their
//! key, and acknowledged (which lets the partition's commit move past them), one at a time
//! and in order; a key that exists already is resolved by reading its range.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use kafka_seq::Ack;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::args::Codec;
use crate::error::{Error, Result};
use crate::layout;
use crate::meta::{HEADER_READ, ObjectRange};
use crate::metrics::PartitionMetrics;
use crate::spool::{SKIPPED, SpoolFiles, SpoolReader, VALUE};
use crate::token::{self, Token};

/// Memory counted per upload besides the spool's bytes (compressor state, buffers).
const UPLOAD_OVERHEAD: u64 = 4 << 20;

/// A finished spool file waiting for its upload.
#[derive(Debug)]
pub struct FinishedSpool {
    /// The file.
    pub path: PathBuf,
    /// Offset of its first message.
    pub first: i64,
    /// Offset of its last message.
    pub last: i64,
    /// The bytes of records it holds (set by the spool writer).
    pub bytes: u64,
    /// Its size on disk: more than `bytes` when a longer file was reused (set by the spool
    /// writer).
    pub disk: u64,
    /// The acknowledgement of its first message, held until it is archived: the partition's
    /// commit cannot pass it before.
    pub held: Ack,
    /// When its first message arrived.
    pub opened: Instant,
}

/// Archive again from a position (a deleted token or `bifrost replay`): objects starting at
/// these offsets are replaced (the pieces are cut at them, so they are replaced exactly),
/// and messages up to `skip_through` are already in an object that cannot be rebuilt.
#[derive(Debug, Clone, Default)]
pub struct ReplayPlan {
    /// First offsets of the existing objects from the replay's start on.
    pub replace: BTreeSet<i64>,
    /// Messages up to this offset are left as archived.
    pub skip_through: Option<i64>,
}

/// What a partition's uploader is given, in order.
#[derive(Debug)]
pub enum UploadJob {
    /// A finished file.
    Spool(FinishedSpool),
    /// The partition replays from here on.
    Replay(ReplayPlan),
}

/// What every uploader shares.
#[derive(Debug)]
pub struct Uploads {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Its URL, for errors.
    pub url: String,
    /// The store's kind: where it keeps object metadata (S3, Azure), the range goes there
    /// too.
    pub kind: lifecycle::store::StoreKind,
    /// Compression.
    pub codec: Codec,
    /// Compression level.
    pub level: i32,
    /// Bytes (in KiB) of memory for uploads in flight.
    pub memory: Arc<Semaphore>,
    /// The memory's size in KiB.
    pub memory_kib: u32,
    /// Compressions at a time.
    pub cpu: Arc<Semaphore>,
    /// Whether to keep tokens.
    pub tokens: bool,
    /// Fired at the end of the shutdown's upload time: uploads still retrying give up.
    pub abandon: CancellationToken,
    /// Where an uploader reports an error the service cannot go on with.
    pub fatal: mpsc::Sender<Error>,
    /// The spool's files (done with after their upload).
    pub spool: Arc<SpoolFiles>,
}

/// A partition uploader's progress, shared with the consumer.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Finished files sent and not done with yet (the consumer pauses past a limit).
    pub backlog: Arc<AtomicUsize>,
    /// Offset after the last one archived (for the commit-lag gauge); -1 before.
    pub archived_next: Arc<AtomicI64>,
    /// When the first message of the file being uploaded arrived (the oldest unuploaded).
    pub uploading_since: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress {
            backlog: Arc::new(AtomicUsize::new(0)),
            archived_next: Arc::new(AtomicI64::new(-1)),
            uploading_since: Arc::new(std::sync::Mutex::new(None)),
        }
    }
}

/// One partition's uploader (a task).
pub struct Uploader {
    /// The shared parts.
    pub uploads: Arc<Uploads>,
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The partition's directory key.
    pub dir: String,
    /// What the consumer reads of the uploader's progress.
    pub progress: Progress,
    /// The partition's metrics.
    pub metrics: PartitionMetrics,
    /// Objects are known to exist through this offset.
    watermark: Option<i64>,
    replay: Option<ReplayPlan>,
    /// The assignment whose objects were surveyed ([`Uploader::survey`]).
    surveyed: Option<u64>,
    /// First offsets of the objects found from the survey's first file on: this file's
    /// objects are cut before them, so none overlaps one.
    existing: BTreeSet<i64>,
}

/// What one built object is.
struct Built {
    object: Bytes,
    range: ObjectRange,
}

impl Uploader {
    /// An uploader for one partition.
    pub fn new(
        uploads: Arc<Uploads>,
        topic: Arc<str>,
        partition: i32,
        dir: String,
        progress: Progress,
        metrics: PartitionMetrics,
    ) -> Uploader {
        Uploader {
            uploads,
            topic,
            partition,
            dir,
            progress,
            metrics,
            watermark: None,
            replay: None,
            surveyed: None,
            existing: BTreeSet::new(),
        }
    }

    /// Runs until its queue closes.
    pub async fn run(mut self, mut jobs: mpsc::Receiver<UploadJob>) {
        while let Some(job) = jobs.recv().await {
            match job {
                UploadJob::Replay(plan) => {
                    tracing::warn!(topic = %self.topic, partition = self.partition, objects = plan.replace.len(), skip_through = ?plan.skip_through, "replay: existing objects of this partition will be REPLACED");
                    self.watermark = plan.skip_through;
                    self.replay = Some(plan);
                }
                UploadJob::Spool(s) => {
                    let (path, len, disk) = (s.path.clone(), s.bytes, s.disk);
                    self.set_uploading(Some(s.opened));
                    let result = self.upload(s).await;
                    self.set_uploading(None);
                    if let Err(e) = result {
                        tracing::error!(topic = %self.topic, partition = self.partition, error = %e, "archiving stopped");
                        let _ = self.uploads.fatal.try_send(e);
                    }
                    if !self.uploads.spool.release(&path, len, disk) {
                        // Deleting a file can take a while (freeing its blocks).
                        tokio::task::spawn_blocking(move || std::fs::remove_file(path));
                    }
                    self.progress.backlog.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn set_uploading(&self, since: Option<Instant>) {
        *self
            .progress
            .uploading_since
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = since;
    }

    fn key(&self, first: i64) -> Path {
        Path::from(format!(
            "{}/{}",
            self.dir,
            layout::object_name(first, self.uploads.codec)
        ))
    }

    /// Archives one finished file (possibly as several objects, or none when others already
    /// did); acknowledges it when done. Gives up quietly (not acknowledged: read again
    /// later) when the partition was revoked or at the end of the shutdown's upload time.
    async fn upload(&mut self, s: FinishedSpool) -> Result<()> {
        let started = Instant::now();
        if !s.held.is_current() {
            tracing::info!(topic = %self.topic, partition = self.partition, first = s.first, last = s.last, "partition revoked: its file is dropped (its new owner reads it)");
            return Ok(());
        }
        let assignment = s.held.assignment();
        if self.replay.is_none() && self.surveyed != Some(assignment) {
            if !self.survey(s.first).await? {
                return Ok(());
            }
            self.surveyed = Some(assignment);
        }
        let mut from = s.first;
        if let Some(w) = self.watermark {
            from = from.max(w + 1);
        }
        let cost =
            ((s.bytes + UPLOAD_OVERHEAD) / 1024).min(u64::from(self.uploads.memory_kib)) as u32;
        let Some(_memory) = self.acquire(cost).await else {
            return Ok(());
        };
        while from <= s.last {
            let (until, split_start) = match &self.replay {
                Some(plan) => {
                    // (`range` panics on an empty inclusive range: from == s.last is one.)
                    let next = if from < s.last {
                        plan.replace.range(from + 1..=s.last).next().copied()
                    } else {
                        None
                    };
                    (
                        next.map_or(s.last, |n| n - 1),
                        plan.replace.contains(&from).then_some(from),
                    )
                }
                // Cut before an object that exists already: its put finds the key taken
                // and goes on after it.
                None if from < s.last => (
                    self.existing
                        .range(from + 1..=s.last)
                        .next()
                        .map_or(s.last, |n| n - 1),
                    None,
                ),
                None => (s.last, None),
            };
            let Some(built) = self.build(&s, from, until, split_start).await? else {
                from = until + 1;
                continue;
            };
            let replace = self
                .replay
                .as_ref()
                .is_some_and(|p| p.replace.contains(&built.range.first));
            match self.put(&built, replace).await? {
                Put::Done => {
                    self.watermark = Some(built.range.last);
                    self.metrics.objects.increment(1);
                    self.metrics.records.increment(built.range.records);
                    self.metrics.bytes.increment(built.range.bytes);
                    if replace {
                        self.metrics.replaced.increment(1);
                    }
                    tracing::debug!(topic = %self.topic, partition = self.partition, range = %built.range, "archived");
                    from = built.range.last + 1;
                }
                Put::Exists(theirs) => {
                    self.metrics.conflicts.increment(1);
                    tracing::info!(topic = %self.topic, partition = self.partition, ours = %built.range, theirs = %theirs, "first writer wins: the key exists; continuing after its range");
                    self.watermark =
                        Some(self.watermark.map_or(theirs.last, |w| w.max(theirs.last)));
                    from = from.max(theirs.last + 1);
                }
                Put::GaveUp => return Ok(()),
            }
            if let Some(plan) = &self.replay
                && plan.replace.last().is_none_or(|l| from > *l)
            {
                tracing::info!(topic = %self.topic, partition = self.partition, "replay: past the last replaced object");
                self.replay = None;
            }
        }
        let next = s.last + 1;
        s.held.ack();
        self.progress.archived_next.store(next, Ordering::Relaxed);
        self.metrics
            .upload_seconds
            .record(started.elapsed().as_secs_f64());
        if self.uploads.tokens {
            let token = Token {
                topic: self.topic.to_string(),
                partition: self.partition,
                next,
                replay: false,
            };
            let key = Path::from(format!("{}/{}", self.dir, layout::TOKEN_NAME));
            let u = &self.uploads;
            let _ = self
                .retry("token", || token::write(&*u.store, &u.url, &key, &token))
                .await;
        }
        Ok(())
    }

    /// At the first file of an assignment: the partition's objects as they are, so that a
    /// file starting inside one or reaching over one (its offsets were committed before its
    /// upload and lost, the group's offsets expired, a reset) is archived around them, not
    /// over them. The object before the file's start moves the watermark past its range;
    /// the objects after it are cut before. One listing of the partition per assignment.
    /// `false` when abandoned first (shutdown).
    async fn survey(&mut self, first: i64) -> Result<bool> {
        let u = self.uploads.clone();
        let dir = Path::from(self.dir.clone());
        let listed = self.retry("list", || list_objects(&u, &dir)).await;
        let Some(listed) = listed else {
            return Ok(false);
        };
        if let Some((_, key)) = listed.range(..first).next_back() {
            match self.existing_range(key).await? {
                Some(r) => {
                    self.watermark = Some(self.watermark.map_or(r.last, |w| w.max(r.last)));
                }
                None => return Ok(false),
            }
        }
        self.existing = listed.range(first..).map(|(f, _)| *f).collect();
        if !listed.is_empty() {
            tracing::debug!(topic = %self.topic, partition = self.partition, objects = listed.len(), watermark = ?self.watermark, "surveyed the partition's objects");
        }
        Ok(true)
    }

    async fn acquire(&self, kib: u32) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let memory = self.uploads.memory.clone();
        tokio::select! {
            p = memory.acquire_many_owned(kib.max(1)) => p.ok(),
            () = self.uploads.abandon.cancelled() => None,
        }
    }

    /// Compresses the file's messages with offsets in `from..=until` into one object (on
    /// the blocking pool); `None` when there are none.
    async fn build(
        &self,
        s: &FinishedSpool,
        from: i64,
        until: i64,
        split_start: Option<i64>,
    ) -> Result<Option<Built>> {
        let _cpu = self.uploads.cpu.acquire().await.ok();
        let (path, len) = (s.path.clone(), s.bytes);
        let codec = self.uploads.codec;
        let level = self.uploads.level;
        tokio::task::spawn_blocking(move || {
            build_object(&path, len, from, until, split_start, codec, level)
        })
        .await
        .map_err(|e| Error::Internal(format!("compression task: {e}")))?
    }

    /// Puts an object create-only (or replacing, in a replay), retrying transient errors
    /// with backoff until it is done or the shutdown's upload time ends.
    async fn put(&self, built: &Built, replace: bool) -> Result<Put> {
        let key = self.key(built.range.first);
        let payload = PutPayload::from(built.object.clone());
        let u = &self.uploads;
        let mut backoff = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(30))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let opts = PutOptions {
                mode: if replace {
                    PutMode::Overwrite
                } else {
                    PutMode::Create
                },
                attributes: if u.kind.keeps_metadata() {
                    built.range.attributes(u.kind)
                } else {
                    Default::default()
                },
                ..Default::default()
            };
            let started = Instant::now();
            match u.store.put_opts(&key, payload.clone(), opts).await {
                Ok(_) => {
                    self.metrics
                        .put_seconds
                        .record(started.elapsed().as_secs_f64());
                    if replace {
                        tracing::warn!(key = %key, range = %built.range, "replay: object replaced");
                    }
                    return Ok(Put::Done);
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    return match self.existing_range(&key).await? {
                        Some(r) => Ok(Put::Exists(r)),
                        None => Ok(Put::GaveUp),
                    };
                }
                Err(e @ object_store::Error::NotImplemented { .. }) => {
                    return Err(Error::CreateOnlyUnsupported {
                        url: u.url.clone(),
                        source: Box::new(e),
                    });
                }
                Err(e) => {
                    self.metrics.upload_errors.increment(1);
                    let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(key = %key, error = %e, retry_in = ?wait, "upload failed; retrying (the commit waits)");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = u.abandon.cancelled() => return Ok(Put::GaveUp),
                    }
                }
            }
        }
    }

    /// The range of an existing object, from its header (or, for an object without one,
    /// such as the original's, from its record count, assuming consecutive offsets).
    async fn existing_range(&self, key: &Path) -> Result<Option<ObjectRange>> {
        let u = self.uploads.clone();
        let k = key.clone();
        let head = self
            .retry("read range", || {
                let (u, k) = (u.clone(), k.clone());
                async move {
                    let opts = GetOptions {
                        range: Some(GetRange::Bounded(0..HEADER_READ)),
                        ..Default::default()
                    };
                    let err = |source| Error::Object {
                        url: u.url.clone(),
                        op: "get",
                        key: k.to_string(),
                        source: Box::new(source),
                    };
                    u.store
                        .get_opts(&k, opts)
                        .await
                        .map_err(err)?
                        .bytes()
                        .await
                        .map_err(err)
                }
            })
            .await;
        let Some(head) = head else { return Ok(None) };
        match ObjectRange::parse(&head) {
            Ok(r) => Ok(Some(r)),
            Err(why) => {
                let first = layout::parse_key(key.as_ref()).map_or(0, |k| k.first);
                let records = self.retry("count records", || read_records(&u, &k)).await;
                let Some((records, bytes)) = records else {
                    return Ok(None);
                };
                tracing::warn!(key = %key, reason = %why, records, "an object without a bifrost range: assuming consecutive offsets from its key");
                Ok(Some(ObjectRange {
                    first,
                    last: first + records.max(1) as i64 - 1,
                    records,
                    bytes,
                }))
            }
        }
    }

    /// Runs `op` until it succeeds, with backoff; `None` when abandoned first.
    async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut backoff = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(30))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            match op().await {
                Ok(v) => return Some(v),
                Err(e) => {
                    self.metrics.upload_errors.increment(1);
                    let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, retry_in = ?wait, "{what} failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.uploads.abandon.cancelled() => return None,
                    }
                }
            }
        }
    }
}

enum Put {
    Done,
    Exists(ObjectRange),
    GaveUp,
}

/// The partition directory's objects by first offset.
async fn list_objects(u: &Uploads, dir: &Path) -> Result<BTreeMap<i64, Path>> {
    let mut list = u.store.list(Some(dir));
    let mut out = BTreeMap::new();
    while let Some(meta) = futures::StreamExt::next(&mut list).await {
        let meta = meta.map_err(|source| Error::Object {
            url: u.url.clone(),
            op: "list",
            key: dir.to_string(),
            source: Box::new(source),
        })?;
        if let Some(k) = layout::parse_key(meta.location.as_ref()) {
            out.insert(k.first, meta.location);
        }
    }
    Ok(out)
}

/// Counts the records (and their bytes) of an object.
async fn read_records(u: &Uploads, key: &Path) -> Result<(u64, u64)> {
    let err = |source| Error::Object {
        url: u.url.clone(),
        op: "get",
        key: key.to_string(),
        source: Box::new(source),
    };
    let data = u
        .store
        .get(key)
        .await
        .map_err(err)?
        .bytes()
        .await
        .map_err(err)?;
    let k = key.to_string();
    tokio::task::spawn_blocking(move || count_records(&k, &data))
        .await
        .map_err(|e| Error::Internal(format!("decoding task: {e}")))?
}

/// Counts the records (and their bytes, headers included) of an object's data.
pub fn count_records(key: &str, data: &[u8]) -> Result<(u64, u64)> {
    let reader = baldr::open_reader(data).map_err(|e| Error::BadObject {
        key: key.to_string(),
        message: e.to_string(),
    })?;
    let (mut n, mut bytes) = (0u64, 0u64);
    for r in reader {
        let r = r.map_err(|e| Error::BadObject {
            key: key.to_string(),
            message: e.to_string(),
        })?;
        n += 1;
        bytes += 8 + r.len() as u64;
    }
    Ok((n, bytes))
}

/// An object's compressing writer, whose start holds a range placeholder.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Stored(StoredGzip),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Stored(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(w) => w.write_all(buf),
            Encoder::Stored(w) => w.write_all(buf),
            Encoder::Zstd(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(w) => w.flush(),
            Encoder::Stored(_) => Ok(()),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

/// Most bytes a stored deflate block holds.
const STORED_BLOCK: usize = 65_535;

/// Gzip level 0 written straight into the object: a gzip member of stored deflate blocks
/// (RFC 1951 3.2.4), each byte copied once and checksummed, without zlib's window and
/// flate2's intermediate buffer. Its header is flate2's for level 0 with the same extra
/// field (zlib cuts its stored blocks at other places; both decode alike).
struct StoredGzip {
    out: Vec<u8>,
    crc: flate2::Crc,
    /// Where the open block's 5-byte header is in `out`.
    block: usize,
}

impl StoredGzip {
    fn new(mut out: Vec<u8>, extra: &[u8]) -> StoredGzip {
        // Magic, deflate, FEXTRA, no mtime, XFL 4 (fastest; what flate2 writes for levels
        // 0 and 1), OS 255 (unknown), then the extra field.
        out.extend_from_slice(&[0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 4, 255]);
        let xlen = u16::try_from(extra.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&xlen.to_le_bytes());
        out.extend_from_slice(&extra[..usize::from(xlen)]);
        let block = out.len();
        out.extend_from_slice(&[0; 5]);
        StoredGzip {
            out,
            crc: flate2::Crc::new(),
            block,
        }
    }

    fn close_block(&mut self, last: bool) {
        let len = u16::try_from(self.out.len() - self.block - 5).unwrap_or(u16::MAX);
        let mut head = [u8::from(last), 0, 0, 0, 0];
        head[1..3].copy_from_slice(&len.to_le_bytes());
        head[3..5].copy_from_slice(&(!len).to_le_bytes());
        self.out[self.block..self.block + 5].copy_from_slice(&head);
    }

    fn finish(mut self) -> Vec<u8> {
        self.close_block(true);
        self.out.extend_from_slice(&self.crc.sum().to_le_bytes());
        self.out.extend_from_slice(&self.crc.amount().to_le_bytes());
        self.out
    }
}

impl Write for StoredGzip {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.crc.update(buf);
        let mut rest = buf;
        while !rest.is_empty() {
            let room = STORED_BLOCK - (self.out.len() - self.block - 5);
            if room == 0 {
                self.close_block(false);
                self.block = self.out.len();
                self.out.extend_from_slice(&[0; 5]);
                continue;
            }
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.out.extend_from_slice(now);
            rest = later;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Builds one object from the messages with offsets in `from..=until` of the spool file
/// holding `size` bytes of records:
/// `None` when there are none. Its range starts at its first message, or at `split_start`
/// when a replay cuts there (so that the object it replaces keeps its key).
fn build_object(
    path: &std::path::Path,
    size: u64,
    from: i64,
    until: i64,
    split_start: Option<i64>,
    codec: Codec,
    level: i32,
) -> Result<Option<Built>> {
    let spool_err = |source| Error::Spool {
        path: path.to_path_buf(),
        source,
    };
    let mut input = SpoolReader::open(path, size)?;
    // A guess at the compressed size, to allocate once in most cases.
    let capacity = (size / 4).clamp(4096, 64 << 20) as usize;
    let encoder = match codec {
        Codec::Gzip if level <= 0 => {
            // Stored: about the size of the input.
            let out = Vec::with_capacity((size + size / STORED_BLOCK as u64 * 5 + 1024) as usize);
            Encoder::Stored(StoredGzip::new(out, &ObjectRange::gzip_extra()))
        }
        Codec::Gzip => Encoder::Gzip(
            flate2::GzBuilder::new()
                .extra(ObjectRange::gzip_extra())
                .write(
                    Vec::with_capacity(capacity),
                    flate2::Compression::new(level.clamp(0, 9).unsigned_abs()),
                ),
        ),
        Codec::Zstd => {
            let mut out = Vec::with_capacity(capacity);
            out.extend_from_slice(&ObjectRange::zstd_frame());
            Encoder::Zstd(zstd::stream::write::Encoder::new(out, level).map_err(spool_err)?)
        }
    };
    let mut writer = baldr::Writer::new(encoder);
    let mut range: Option<ObjectRange> = None;
    while let Some((offset, flag, value)) = input.next_entry()? {
        if offset < from {
            continue;
        }
        if offset > until {
            break;
        }
        let r = range.get_or_insert(ObjectRange {
            first: split_start.unwrap_or(offset),
            last: offset,
            records: 0,
            bytes: 0,
        });
        r.last = offset;
        if flag == VALUE {
            writer.write_record(value).map_err(|e| Error::Spool {
                path: path.to_path_buf(),
                source: std::io::Error::other(e),
            })?;
        } else {
            debug_assert_eq!(flag, SKIPPED);
        }
    }
    let Some(mut range) = range else {
        return Ok(None);
    };
    range.records = writer.records();
    range.bytes = writer.bytes_written();
    let encoder = writer.finish().map_err(|e| Error::Spool {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let (mut object, zstd) = match encoder {
        Encoder::Gzip(w) => (w.finish().map_err(spool_err)?, false),
        Encoder::Stored(w) => (w.finish(), false),
        Encoder::Zstd(w) => (w.finish().map_err(spool_err)?, true),
    };
    range.fill(&mut object, zstd);
    Ok(Some(Built {
        object: Bytes::from(object),
        range,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_gzip_is_byte_for_byte_flate2s_level_0() {
        let extra = ObjectRange::gzip_extra();
        // Sizes around the stored block's limit, written in uneven pieces.
        for size in [0, 1, 65_534, 65_535, 65_536, 200_000, 3 * 65_535] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 253) as u8).collect();
            let mut ours = StoredGzip::new(Vec::new(), &extra);
            let mut theirs = flate2::GzBuilder::new()
                .extra(extra.clone())
                .write(Vec::new(), flate2::Compression::new(0));
            for piece in data.chunks(40_000) {
                for part in piece.chunks(17_001) {
                    ours.write_all(part).unwrap();
                }
                theirs.write_all(piece).unwrap();
            }
            let ours = ours.finish();
            let theirs = theirs.finish().unwrap();
            let mut back = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::MultiGzDecoder::new(&ours[..]),
                &mut back,
            )
            .unwrap();
            assert!(back == data, "{size} bytes decode back");
            // flate2's header (zlib cuts its stored blocks elsewhere): the range slot is
            // where readers look for it.
            let head = 12 + extra.len();
            assert!(
                ours[..head] == theirs[..head],
                "{size} bytes: flate2's header"
            );
            assert_eq!(
                ours.len(),
                head + size + 5 * size.div_ceil(STORED_BLOCK).max(1) + 8
            );
            let mut range = ObjectRange {
                first: 7,
                last: 9,
                records: 3,
                bytes: 42,
            };
            let mut ours = ours;
            range.fill(&mut ours, false);
            range.records = ObjectRange::parse(&ours).unwrap().records;
            assert_eq!(range.records, 3);
        }
    }

    #[test]
    fn an_idle_partition_costs_little() {
        let (fatal, _) = mpsc::channel(1);
        let uploads = Arc::new(Uploads {
            store: Arc::new(object_store::memory::InMemory::new()),
            url: "memory:///".into(),
            kind: lifecycle::store::StoreKind::Memory,
            codec: Codec::Gzip,
            level: 4,
            memory: Arc::new(Semaphore::new(1)),
            memory_kib: 1,
            cpu: Arc::new(Semaphore::new(1)),
            tokens: false,
            abandon: CancellationToken::new(),
            fatal,
            spool: Arc::new(SpoolFiles::default()),
        });
        let u = Uploader::new(
            uploads,
            "t".into(),
            0,
            "g/t/partition=0".into(),
            Progress::default(),
            PartitionMetrics::new("t", 0),
        );
        let (_tx, rx) = mpsc::channel::<UploadJob>(12);
        let task = u.run(rx);
        let size = std::mem::size_of_val(&task);
        eprintln!("uploader task: {size} bytes");
        assert!(size < 16 * 1024, "the uploader's task is {size} bytes");
    }
}
