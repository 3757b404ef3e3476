//! Local spool files: one per open partition file, written by one dedicated thread.
//!
//! The consuming task formats records into batches (each value copied once, from
//! librdkafka's fetch buffer into the batch) and hands them over through a bounded channel;
//! the writer thread appends them to their spool files and, when a file is finished, closes it and hands it to its
//! partition's uploader. A spool record is a Baldr record whose payload is the message's
//! offset (8 bytes, big-endian), a flag (1: a skipped tombstone, no value) and the value.
//! Compression happens only when a file is uploaded, a few at a time, so memory does not
//! grow with the number of partitions (no compressor state per partition).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::upload::UploadJob;

/// Flag of a spool record holding a message's value.
pub const VALUE: u8 = 0;
/// Flag of a spool record standing for a skipped tombstone (offset only).
pub const SKIPPED: u8 = 1;
/// Bytes a spool record adds to the value: Baldr length, offset, flag.
pub const OVERHEAD: u64 = 8 + 8 + 1;
/// Open spool files kept at once; past it the writer closes them all and reopens on demand.
const MAX_OPEN: usize = 512;

/// Messages for spool files, already in the spool's record format, back to back: one
/// copy of each value (from librdkafka's buffer into this one), written by the writer
/// thread with one `write` per run of records of the same file. Reused (the writer sends
/// it back emptied).
#[derive(Debug, Default)]
pub struct Batch {
    data: Vec<u8>,
    /// Consecutive records of one spool file: its id and where they end in `data`.
    runs: Vec<(u64, usize)>,
}

impl Batch {
    /// Appends a message for spool file `spool`.
    pub fn push(&mut self, spool: u64, offset: i64, flag: u8, value: &[u8]) {
        let len = 9 + value.len() as u64;
        self.data.extend_from_slice(&len.to_be_bytes());
        self.data.extend_from_slice(&offset.to_be_bytes());
        self.data.push(flag);
        self.data.extend_from_slice(value);
        match self.runs.last_mut() {
            Some((id, end)) if *id == spool => *end = self.data.len(),
            _ => self.runs.push((spool, self.data.len())),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Empties it (keeping its allocation).
    pub fn clear(&mut self) {
        self.data.clear();
        self.runs.clear();
    }
}

/// What the writer thread does, in order.
#[derive(Debug)]
pub enum Command {
    /// Append these records.
    Write(Batch),
    /// The file is complete: close it and give `job` to the uploader.
    Finish {
        /// The spool file's id.
        spool: u64,
        /// The finished file, for its uploader.
        job: UploadJob,
        /// The partition's uploader.
        to: mpsc::Sender<UploadJob>,
    },
    /// The file is abandoned: delete it.
    Discard {
        /// The spool file's id.
        spool: u64,
    },
}

/// The spool directory of this process: created at start (removing those of dead
/// processes), removed when dropped.
#[derive(Debug)]
pub struct SpoolDir {
    dir: tempfile::TempDir,
    _lock: File,
    /// Bytes in spool files now (for the `bifrost_spool_bytes` gauge).
    pub bytes: Arc<AtomicI64>,
}

impl SpoolDir {
    /// Creates `<parent>/bifrost-XXXX` (locked while this process lives) after removing
    /// unlocked ones left by dead processes.
    ///
    /// # Errors
    /// [`Error::Spool`] when the directory cannot be created or locked.
    pub fn create(parent: &Path) -> Result<SpoolDir> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Spool { path, source }
        };
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        if let Ok(entries) = std::fs::read_dir(parent) {
            for e in entries.flatten() {
                let p = e.path();
                let stale = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("bifrost-"))
                    && File::open(p.join("lock")).is_ok_and(|f| f.try_lock().is_ok());
                if stale {
                    tracing::info!(dir = %p.display(), "removing the spool of a dead process");
                    let _ = std::fs::remove_dir_all(&p);
                }
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("bifrost-")
            .tempdir_in(parent)
            .map_err(io(parent))?;
        let lock_path = dir.path().join("lock");
        let lock = File::create(&lock_path).map_err(io(&lock_path))?;
        lock.try_lock().map_err(|e| Error::Spool {
            path: lock_path,
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(SpoolDir {
            dir,
            _lock: lock,
            bytes: Arc::new(AtomicI64::new(0)),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The file of spool `id`.
    pub fn file(&self, id: u64) -> PathBuf {
        file_of(self.dir.path(), id)
    }
}

fn file_of(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id}.spool"))
}

/// Starts the writer thread; it ends when every sender of `commands` is dropped, returning
/// the first write error (after which it discards what it is sent).
///
/// # Errors
/// The thread cannot be started.
pub fn start_writer(
    dir: PathBuf,
    bytes: Arc<AtomicI64>,
    mut commands: mpsc::Receiver<Command>,
    recycle: mpsc::Sender<Batch>,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    std::thread::Builder::new()
        .name("bifrost-spool".into())
        .spawn(move || {
            let mut w = Writer {
                dir,
                bytes,
                open: HashMap::new(),
                failed: None,
            };
            while let Some(cmd) = commands.blocking_recv() {
                match cmd {
                    Command::Write(mut batch) => {
                        if w.failed.is_none()
                            && let Err(e) = w.write(&batch)
                        {
                            tracing::error!(error = %e, "spool write failed");
                            w.failed = Some(e);
                        }
                        batch.clear();
                        let _ = recycle.try_send(batch);
                    }
                    Command::Finish { spool, job, to } => {
                        w.open.remove(&spool);
                        if w.failed.is_none() {
                            // The uploader's queue has room: the consumer counts what it sent.
                            let _ = to.blocking_send(job);
                        }
                    }
                    Command::Discard { spool } => {
                        w.open.remove(&spool);
                        let path = file_of(&w.dir, spool);
                        remove_counted(&path, &w.bytes);
                    }
                }
            }
            w.failed.map_or(Ok(()), Err)
        })
        .map_err(|source| Error::Spool {
            path: PathBuf::from("<spool writer thread>"),
            source,
        })
}

/// Removes a spool file and takes its size off the gauge.
pub fn remove_counted(path: &Path, bytes: &AtomicI64) {
    if let Ok(m) = std::fs::metadata(path) {
        bytes.fetch_sub(m.len() as i64, Ordering::Relaxed);
    }
    let _ = std::fs::remove_file(path);
}

struct Writer {
    dir: PathBuf,
    bytes: Arc<AtomicI64>,
    open: HashMap<u64, File>,
    failed: Option<Error>,
}

impl Writer {
    fn write(&mut self, batch: &Batch) -> Result<()> {
        let mut start = 0;
        for &(id, end) in &batch.runs {
            let records = &batch.data[start..end];
            start = end;
            self.file(id)?
                .write_all(records)
                .map_err(|source| Error::Spool {
                    path: file_of(&self.dir, id),
                    source,
                })?;
            self.bytes
                .fetch_add(records.len() as i64, Ordering::Relaxed);
        }
        Ok(())
    }

    fn file(&mut self, id: u64) -> Result<&mut File> {
        if !self.open.contains_key(&id) && self.open.len() >= MAX_OPEN {
            self.open.clear();
        }
        let path = file_of(&self.dir, id);
        match self.open.entry(id) {
            std::collections::hash_map::Entry::Occupied(o) => Ok(o.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|source| Error::Spool { path, source })?;
                Ok(v.insert(f))
            }
        }
    }
}

/// Reads a spool file's entries in order: `(offset, flag, value)`. A value that lies
/// whole in the read buffer is handed out from it (no copy); one that straddles the
/// buffer's end is copied.
pub struct SpoolReader {
    input: BufReader<File>,
    path: PathBuf,
    value: Vec<u8>,
    /// Bytes of the buffer handed out by the last entry, consumed at the next call.
    handed: usize,
    /// Where the next record starts in the file (named in errors).
    at: u64,
    /// The file's size: no record is longer (a corrupt length allocates nothing).
    size: u64,
}

impl SpoolReader {
    /// Opens a finished spool file.
    ///
    /// # Errors
    /// [`Error::Spool`] when it cannot be opened.
    pub fn open(path: &Path) -> Result<SpoolReader> {
        let io = |source| Error::Spool {
            path: path.to_path_buf(),
            source,
        };
        let f = File::open(path).map_err(io)?;
        let size = f.metadata().map_err(io)?.len();
        Ok(SpoolReader {
            input: BufReader::with_capacity(256 * 1024, f),
            path: path.to_path_buf(),
            value: Vec::new(),
            handed: 0,
            at: 0,
            size,
        })
    }

    /// The next entry; `None` at the end.
    ///
    /// # Errors
    /// [`Error::Spool`] on an I/O error or a damaged file, naming the byte where the
    /// record starts.
    pub fn next_entry(&mut self) -> Result<Option<(i64, u8, &[u8])>> {
        self.input.consume(std::mem::take(&mut self.handed));
        let at = self.at;
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |e: std::io::Error| Error::Spool {
                path,
                source: std::io::Error::new(e.kind(), format!("record at byte {at}: {e}")),
            }
        };
        let buffered = self.input.fill_buf().map_err(err(&self.path))?;
        if buffered.is_empty() {
            return Ok(None);
        }
        if let Some((offset, flag, len)) = head(buffered)
            && buffered.len() - HEAD >= len
        {
            self.handed = HEAD + len;
            self.at += (HEAD + len) as u64;
            let value = &self.input.buffer()[HEAD..HEAD + len];
            return Ok(Some((offset, flag, value)));
        }
        let mut raw = [0u8; HEAD];
        self.input.read_exact(&mut raw).map_err(err(&self.path))?;
        let (offset, flag, len) = head(&raw).unwrap_or_default();
        if len as u64 > self.size {
            return Err(err(&self.path)(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a value of {len} bytes (message offset {offset}) in a file of {}",
                    self.size
                ),
            )));
        }
        self.value.resize(len, 0);
        self.input
            .read_exact(&mut self.value)
            .map_err(err(&self.path))?;
        self.at += (HEAD + len) as u64;
        Ok(Some((offset, flag, &self.value)))
    }
}

/// Bytes of a spool record before its value: Baldr length, offset, flag.
const HEAD: usize = OVERHEAD as usize;

/// A spool record's head at the start of `b` (when it holds one): offset, flag, value
/// length.
fn head(b: &[u8]) -> Option<(i64, u8, usize)> {
    let raw: &[u8; HEAD] = b.get(..HEAD)?.try_into().ok()?;
    let (len, rest) = raw.split_first_chunk::<8>()?;
    let (offset, flag) = rest.split_first_chunk::<8>()?;
    let len = usize::try_from(u64::from_be_bytes(*len).saturating_sub(9)).ok()?;
    Some((i64::from_be_bytes(*offset), *flag.first()?, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_round_trip_and_stale_spools_are_removed() {
        let parent = tempfile::tempdir().unwrap();
        // A dead process's spool: a directory whose lock nobody holds.
        let dead = parent.path().join("bifrost-dead");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join("lock"), b"").unwrap();
        std::fs::write(dead.join("1.spool"), b"junk").unwrap();
        let spool = SpoolDir::create(parent.path()).unwrap();
        assert!(!dead.exists());
        // A live one (ours) is kept by a second process starting.
        let other = SpoolDir::create(parent.path()).unwrap();
        assert!(spool.path().exists());
        drop(other);

        let (tx, rx) = mpsc::channel(4);
        let (rtx, mut rrx) = mpsc::channel(4);
        let writer =
            start_writer(spool.path().to_path_buf(), spool.bytes.clone(), rx, rtx).unwrap();
        let big = vec![7u8; 300 * 1024];
        let mut entries = Batch::default();
        entries.push(1, 10, VALUE, b"a");
        entries.push(2, 3, VALUE, b"x");
        entries.push(1, 11, SKIPPED, b"");
        entries.push(1, 12, VALUE, &big);
        assert_eq!(entries.runs.len(), 3);
        tx.send(Command::Write(entries)).await.unwrap();
        tx.send(Command::Discard { spool: 2 }).await.unwrap();
        let recycled = rrx.recv().await.unwrap();
        assert!(recycled.is_empty() && recycled.data.capacity() >= big.len());
        drop(tx);
        tokio::task::spawn_blocking(move || writer.join().unwrap().unwrap())
            .await
            .unwrap();
        assert!(!spool.file(2).exists());
        let mut r = SpoolReader::open(&spool.file(1)).unwrap();
        let mut got = Vec::new();
        while let Some((o, f, v)) = r.next_entry().unwrap() {
            got.push((o, f, v.to_vec()));
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (10, VALUE, b"a".to_vec()));
        assert_eq!(got[1], (11, SKIPPED, vec![]));
        assert_eq!((got[2].0, got[2].2.len()), (12, big.len()));
        assert_eq!(
            spool.bytes.load(Ordering::Relaxed) as u64,
            std::fs::metadata(spool.file(1)).unwrap().len()
        );
    }

    #[test]
    fn records_across_read_buffer_boundaries_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = Arc::new(AtomicI64::new(0));
        let mut w = Writer {
            dir: dir.path().to_path_buf(),
            bytes,
            open: HashMap::new(),
            failed: None,
        };
        // Sizes that land records across the 256 KiB buffer's end at many places.
        let values: Vec<Vec<u8>> = (0..6000u32)
            .map(|i| vec![(i % 251) as u8; (i as usize * 7919) % 701])
            .collect();
        let mut batch = Batch::default();
        for (i, v) in values.iter().enumerate() {
            batch.push(1, i as i64, VALUE, v);
        }
        w.write(&batch).unwrap();
        drop(w);
        let mut r = SpoolReader::open(&file_of(dir.path(), 1)).unwrap();
        for (i, v) in values.iter().enumerate() {
            let (o, f, got) = r.next_entry().unwrap().unwrap();
            assert_eq!((o, f, got), (i as i64, VALUE, &v[..]), "record {i}");
        }
        assert!(r.next_entry().unwrap().is_none());
        // Truncated: the last record is cut short, an error naming the file.
        let path = file_of(dir.path(), 1);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        let mut r = SpoolReader::open(&path).unwrap();
        let mut n = 0;
        let err = loop {
            match r.next_entry() {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("a truncated file ends in an error"),
                Err(e) => break e,
            }
        };
        assert_eq!(n, values.len() - 1);
        let last_at = len - (OVERHEAD + values.last().unwrap().len() as u64);
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(text.contains("1.spool"), "{text}");
        assert!(
            text.contains(&format!("record at byte {last_at}")),
            "{text}"
        );
    }
}
