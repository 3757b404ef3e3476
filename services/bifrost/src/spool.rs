//! Local spool files: one per open partition file, written by one dedicated thread.
//!
//! The consuming task formats records into batches (each value copied once, from
//! librdkafka's fetch buffer into the batch) and hands them over through a bounded channel;
//! the writer thread appends them to their spool files and, when a file is finished, closes it and hands it to its
//! partition's uploader. A spool record is a Baldr record whose payload is the message's
//! offset (8 bytes, big-endian), a flag (1: a skipped tombstone, no value) and the value.
//! Compression happens only when a file is uploaded, a few at a time, so memory does not
//! grow with the number of partitions (no compressor state per partition).
//!
//! An uploaded file is kept for reuse (up to [`FREE_FILES`] files and [`FREE_BYTES`]) and
//! the next spool file written over it from its start, instead of being deleted and a new
//! one allocated: the file system's page and block allocation and freeing cost more than
//! the copying itself (profiled on tmpfs: allocating a spool file's pages and freeing them
//! at its deletion were ~10% of bifrost's CPU). A reused file may be longer than what it
//! holds; its reader stops at the length its writer recorded.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

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
/// Uploaded spool files kept for reuse, at most.
pub const FREE_FILES: usize = 64;
/// Bytes on disk of the uploaded spool files kept for reuse, at most.
pub const FREE_BYTES: u64 = 256 << 20;

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
    /// The file is complete: close it and give `job` to the uploader (with its length as
    /// written).
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
    /// Its files' accounting and the files kept for reuse.
    pub files: Arc<SpoolFiles>,
}

/// What the writer and the uploaders share: the bytes spooled and the uploaded files kept
/// for reuse.
#[derive(Debug, Default)]
pub struct SpoolFiles {
    /// Bytes of messages in spool files now (for the `bifrost_spool_bytes` gauge; the
    /// files kept for reuse are not counted).
    pub bytes: AtomicI64,
    free: Mutex<Free>,
}

#[derive(Debug, Default)]
struct Free {
    /// Files and their sizes on disk.
    files: Vec<(PathBuf, u64)>,
    bytes: u64,
}

impl SpoolFiles {
    /// A spool file is done with (uploaded or abandoned): `len` bytes of messages leave the
    /// count, and the file (`disk` bytes on disk) is kept for reuse when there is room.
    /// `false` when it is not: the caller deletes it (a blocking call).
    pub fn release(&self, path: &Path, len: u64, disk: u64) -> bool {
        self.bytes.fetch_sub(len as i64, Ordering::Relaxed);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.files.len() < FREE_FILES && free.bytes + disk <= FREE_BYTES {
            free.bytes += disk;
            free.files.push((path.to_path_buf(), disk));
            true
        } else {
            false
        }
    }

    /// A file kept for reuse, renamed to `path`, opened for writing from its start (its
    /// old bytes stay until overwritten), with its size; `None` when none is kept.
    fn reuse(&self, path: &Path) -> Option<(File, u64)> {
        loop {
            let (old, size) = {
                let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
                let (old, size) = free.files.pop()?;
                free.bytes -= size;
                (old, size)
            };
            let opened = std::fs::rename(&old, path)
                .and_then(|()| std::fs::OpenOptions::new().write(true).open(path));
            match opened {
                Ok(f) => return Some((f, size)),
                Err(e) => {
                    tracing::debug!(file = %old.display(), size, error = %e, "a spool file kept for reuse is gone");
                    let _ = std::fs::remove_file(&old);
                }
            }
        }
    }
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
            files: Arc::new(SpoolFiles::default()),
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
    files: Arc<SpoolFiles>,
    mut commands: mpsc::Receiver<Command>,
    recycle: mpsc::Sender<Batch>,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    std::thread::Builder::new()
        .name("bifrost-spool".into())
        .spawn(move || {
            let mut w = Writer {
                dir,
                files,
                open: HashMap::new(),
                written: HashMap::new(),
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
                    Command::Finish { spool, mut job, to } => {
                        w.open.remove(&spool);
                        let written = w.written.remove(&spool).unwrap_or_default();
                        if let UploadJob::Spool(s) = &mut job {
                            debug_assert!(w.failed.is_some() || s.bytes == written.len);
                            s.bytes = written.len;
                            s.disk = written.disk;
                        }
                        if w.failed.is_none() {
                            // The uploader's queue has room: the consumer counts what it sent.
                            let _ = to.blocking_send(job);
                        }
                    }
                    Command::Discard { spool } => {
                        w.open.remove(&spool);
                        // (Nothing written, no file.)
                        if let Some(written) = w.written.remove(&spool) {
                            let path = file_of(&w.dir, spool);
                            if !w.files.release(&path, written.len, written.disk) {
                                let _ = std::fs::remove_file(&path);
                            }
                        }
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

struct Writer {
    dir: PathBuf,
    files: Arc<SpoolFiles>,
    open: HashMap<u64, File>,
    /// What each unfinished spool file holds.
    written: HashMap<u64, Written>,
    failed: Option<Error>,
}

/// A spool file's bytes written, and its size on disk (more when a longer file was reused).
#[derive(Debug, Default, Clone, Copy)]
struct Written {
    len: u64,
    disk: u64,
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
            let w = self.written.entry(id).or_default();
            w.len += records.len() as u64;
            w.disk = w.disk.max(w.len);
            self.files
                .bytes
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
                let f = match self.written.get(&id) {
                    // Reopened (it was closed with the others past `MAX_OPEN`).
                    Some(w) => std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|mut f| f.seek(SeekFrom::Start(w.len)).map(|_| f)),
                    None => match self.files.reuse(&path) {
                        Some((f, disk)) => {
                            self.written.insert(id, Written { len: 0, disk });
                            Ok(f)
                        }
                        None => File::create(&path),
                    },
                }
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
    input: BufReader<std::io::Take<File>>,
    path: PathBuf,
    value: Vec<u8>,
    /// Bytes of the buffer handed out by the last entry, consumed at the next call.
    handed: usize,
    /// Where the next record starts in the file (named in errors).
    at: u64,
    /// The length written: no record is longer (a corrupt length allocates nothing).
    size: u64,
}

impl SpoolReader {
    /// Opens a finished spool file holding `len` bytes of records (a reused file can be
    /// longer: what follows is not read).
    ///
    /// # Errors
    /// [`Error::Spool`] when it cannot be opened.
    pub fn open(path: &Path, len: u64) -> Result<SpoolReader> {
        let io = |source| Error::Spool {
            path: path.to_path_buf(),
            source,
        };
        let f = File::open(path).map_err(io)?;
        Ok(SpoolReader {
            input: BufReader::with_capacity(256 * 1024, f.take(len)),
            path: path.to_path_buf(),
            value: Vec::new(),
            handed: 0,
            at: 0,
            size: len,
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
            start_writer(spool.path().to_path_buf(), spool.files.clone(), rx, rtx).unwrap();
        let big = vec![7u8; 300 * 1024];
        let mut entries = Batch::default();
        entries.push(1, 10, VALUE, b"a");
        entries.push(2, 3, VALUE, &[9u8; 5000]);
        entries.push(1, 11, SKIPPED, b"");
        entries.push(1, 12, VALUE, &big);
        assert_eq!(entries.runs.len(), 3);
        tx.send(Command::Write(entries)).await.unwrap();
        let recycled = rrx.recv().await.unwrap();
        assert!(recycled.is_empty() && recycled.data.capacity() >= big.len());
        // Spool 2 abandoned: kept for reuse, and spool 3 is written over it.
        tx.send(Command::Discard { spool: 2 }).await.unwrap();
        let mut entries = recycled;
        entries.push(3, 4, VALUE, b"y");
        tx.send(Command::Write(entries)).await.unwrap();
        drop(tx);
        tokio::task::spawn_blocking(move || writer.join().unwrap().unwrap())
            .await
            .unwrap();
        assert!(!spool.file(2).exists(), "spool 2's file was reused");
        let len1 = 3 * OVERHEAD + 1 + big.len() as u64;
        let len3 = OVERHEAD + 1;
        assert!(std::fs::metadata(spool.file(3)).unwrap().len() > len3);
        let mut r = SpoolReader::open(&spool.file(1), len1).unwrap();
        let mut got = Vec::new();
        while let Some((o, f, v)) = r.next_entry().unwrap() {
            got.push((o, f, v.to_vec()));
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (10, VALUE, b"a".to_vec()));
        assert_eq!(got[1], (11, SKIPPED, vec![]));
        assert_eq!((got[2].0, got[2].2.len()), (12, big.len()));
        // The reused file's old bytes past what spool 3 holds are not read.
        let mut r = SpoolReader::open(&spool.file(3), len3).unwrap();
        assert_eq!(r.next_entry().unwrap(), Some((4, VALUE, &b"y"[..])));
        assert_eq!(r.next_entry().unwrap(), None);
        assert_eq!(
            spool.files.bytes.load(Ordering::Relaxed) as u64,
            len1 + len3
        );
        // Released: counted off; kept while there is room (in files and bytes).
        assert!(spool.files.release(&spool.file(3), len3, 5000 + OVERHEAD));
        assert_eq!(spool.files.bytes.load(Ordering::Relaxed) as u64, len1);
        let files = SpoolFiles::default();
        for i in 0..FREE_FILES + 2 {
            let path = spool.path().join(format!("x{i}"));
            assert_eq!(files.release(&path, 1, 1), i < FREE_FILES, "file {i}");
        }
        let files = SpoolFiles::default();
        assert!(files.release(Path::new("a"), 1, FREE_BYTES - 10));
        assert!(!files.release(Path::new("b"), 1, 11));
        assert!(files.release(Path::new("c"), 1, 10));
    }

    #[test]
    fn records_across_read_buffer_boundaries_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer {
            dir: dir.path().to_path_buf(),
            files: Arc::new(SpoolFiles::default()),
            open: HashMap::new(),
            written: HashMap::new(),
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
        // In two writes, the file closed between them (as past `MAX_OPEN`): the second
        // goes on where the first ended.
        let half = batch.runs[0].1 / 2;
        let whole = std::mem::take(&mut batch.data);
        batch.data.extend_from_slice(&whole[..half]);
        batch.runs[0].1 = half;
        w.write(&batch).unwrap();
        w.open.clear();
        batch.data.clear();
        batch.data.extend_from_slice(&whole[half..]);
        batch.runs[0].1 = whole.len() - half;
        w.write(&batch).unwrap();
        let len = w.written[&1].len;
        assert_eq!(len, whole.len() as u64);
        drop(w);
        let mut r = SpoolReader::open(&file_of(dir.path(), 1), len).unwrap();
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
        let mut r = SpoolReader::open(&path, len).unwrap();
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
