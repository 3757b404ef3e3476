//! The optional journal: an append-only Baldr file of `(unit id, state)` records.
//!
//! Each record is one JSON object, written after every transition (and when a unit is
//! admitted): `{"kind":"state","id":..,"state":..}`, `{"kind":"completed","id":..}` or
//! `{"kind":"dead","id":..,"state":..,"error":..,"attempts":..}`. The latest record of an id
//! is that unit's state. Records are handed to the OS (`write`) as soon as the writer gets
//! them, so a killed process (`kill -9`) loses none that were written; with
//! [`Journal::sync_each_write`] they are also `fsync`ed (power loss).
//!
//! A crash can tear the last record; [`Journal::open`] detects it, ignores it and truncates
//! the file back to the last complete record before appending.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::mpsc;

use crate::{DeadLetter, Error, StepError, Unit};

/// Records in flight between the executor and the journal's writer thread.
const CHANNEL_CAPACITY: usize = 1024;

/// An open journal file, ready to be given to [`Executor::journal`](crate::Executor::journal).
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    sync: bool,
}

/// What a journal said when it was opened: the latest state of every unit it knows.
#[derive(Debug, Clone)]
pub struct Recovery<S> {
    /// Units neither completed nor dead, in their latest state, in first-seen order.
    pub unfinished: Vec<Unit<S>>,
    /// Ids of completed units.
    pub completed: Vec<String>,
    /// Units that ended as dead letters.
    pub dead: Vec<DeadLetter<S>>,
    /// Complete records read.
    pub records: u64,
    /// The torn last record that was ignored (and cut off): its byte offset and what was wrong.
    pub torn: Option<(u64, String)>,
    known: HashSet<String>,
}

impl<S> Recovery<S> {
    /// Whether the journal knows unit `id` (in any state, finished or not).
    pub fn contains(&self, id: &str) -> bool {
        self.known.contains(id)
    }

    /// How many units the journal knows.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether the journal knows no unit.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum RecordOut<'a, S> {
    State {
        id: &'a str,
        state: &'a S,
    },
    Completed {
        id: &'a str,
    },
    Dead {
        id: &'a str,
        state: &'a S,
        error: &'a StepError,
        attempts: u32,
    },
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[serde(bound(deserialize = "S: DeserializeOwned"))]
enum RecordIn<S> {
    State {
        id: String,
        state: S,
    },
    Completed {
        id: String,
    },
    Dead {
        id: String,
        state: S,
        error: StepError,
        attempts: u32,
    },
}

enum Latest<S> {
    State(S),
    Completed,
    Dead(S, StepError, u32),
}

impl Journal {
    /// Creates (or empties) the journal file at `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Journal, Error> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|source| Error::JournalIo {
            path: path.clone(),
            action: "create",
            source,
        })?;
        Ok(Journal {
            path,
            file,
            sync: false,
        })
    }

    /// Opens the journal at `path` for appending (creating it when missing) and reads what it
    /// holds. A torn last record is reported in [`Recovery::torn`] and cut off; any other
    /// damage is an error naming the byte offset.
    pub fn open<S: DeserializeOwned>(
        path: impl AsRef<Path>,
    ) -> Result<(Journal, Recovery<S>), Error> {
        let path = path.as_ref().to_path_buf();
        let io = |action: &'static str| {
            let path = path.clone();
            move |source| Error::JournalIo {
                path,
                action,
                source,
            }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io("open"))?;
        let (recovery, valid_len) = read_records(&path, &mut file)?;
        let len = file.metadata().map_err(io("stat"))?.len();
        if len != valid_len {
            file.set_len(valid_len)
                .map_err(io("truncate the torn record"))?;
            file.sync_data().map_err(io("sync"))?;
        }
        file.seek(SeekFrom::End(0)).map_err(io("seek"))?;
        Ok((
            Journal {
                path,
                file,
                sync: false,
            },
            recovery,
        ))
    }

    /// Reads the journal at `path` without changing it.
    pub fn recover<S: DeserializeOwned>(path: impl AsRef<Path>) -> Result<Recovery<S>, Error> {
        let path = path.as_ref().to_path_buf();
        let mut file = File::open(&path).map_err(|source| Error::JournalIo {
            path: path.clone(),
            action: "open",
            source,
        })?;
        Ok(read_records(&path, &mut file)?.0)
    }

    /// `fsync` after every batch of records (survives power loss, not only a killed process).
    pub fn sync_each_write(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// The journal file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every record; returns the recovery and the length of the intact prefix.
fn read_records<S: DeserializeOwned>(
    path: &Path,
    file: &mut File,
) -> Result<(Recovery<S>, u64), Error> {
    file.seek(SeekFrom::Start(0))
        .map_err(|source| Error::JournalIo {
            path: path.to_path_buf(),
            action: "seek",
            source,
        })?;
    let mut reader = baldr::Reader::new(BufReader::new(&mut *file));
    let mut order: Vec<String> = Vec::new();
    let mut latest: HashMap<String, Latest<S>> = HashMap::new();
    let mut records = 0u64;
    let mut torn = None;
    loop {
        let offset = reader.offset();
        let payload = match reader.next() {
            None => break,
            Some(Ok(payload)) => payload,
            Some(Err(e)) if e.is_truncation() => {
                torn = Some((e.offset().unwrap_or(offset), e.to_string()));
                break;
            }
            Some(Err(source)) => {
                return Err(Error::JournalRecord {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        records += 1;
        let record: RecordIn<S> =
            serde_json::from_slice(&payload).map_err(|source| Error::JournalDecode {
                path: path.to_path_buf(),
                offset,
                source,
            })?;
        let (id, value) = match record {
            RecordIn::State { id, state } => (id, Latest::State(state)),
            RecordIn::Completed { id } => (id, Latest::Completed),
            RecordIn::Dead {
                id,
                state,
                error,
                attempts,
            } => (id, Latest::Dead(state, error, attempts)),
        };
        match latest.get_mut(&id) {
            Some(slot) => *slot = value,
            None => {
                order.push(id.clone());
                latest.insert(id, value);
            }
        }
    }
    let valid_len = match &torn {
        Some((offset, _)) => *offset,
        None => reader.offset(),
    };
    let mut recovery = Recovery {
        unfinished: Vec::new(),
        completed: Vec::new(),
        dead: Vec::new(),
        records,
        torn,
        known: HashSet::with_capacity(order.len()),
    };
    for id in order {
        let Some(value) = latest.remove(&id) else {
            continue;
        };
        recovery.known.insert(id.clone());
        match value {
            Latest::State(state) => recovery.unfinished.push(Unit { id, state }),
            Latest::Completed => recovery.completed.push(id),
            Latest::Dead(state, error, attempts) => recovery.dead.push(DeadLetter {
                id,
                state,
                error,
                attempts,
            }),
        }
    }
    Ok((recovery, valid_len))
}

/// The executor's side of a running journal: encodes records into recycled buffers and sends
/// them to a blocking writer thread through a bounded channel.
pub(crate) struct JournalTx {
    path: PathBuf,
    tx: Option<mpsc::Sender<Vec<u8>>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    writer: Option<tokio::task::JoinHandle<Result<(), Error>>>,
}

impl JournalTx {
    /// Starts the writer thread (needs a tokio runtime).
    pub(crate) fn start(journal: Journal) -> JournalTx {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CHANNEL_CAPACITY);
        let (spare_tx, spare) = std::sync::mpsc::sync_channel::<Vec<u8>>(CHANNEL_CAPACITY);
        let Journal { path, file, sync } = journal;
        let writer_path = path.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let path = writer_path;
            let record_err = |source| Error::JournalRecord {
                path: path.clone(),
                source,
            };
            let mut writer = baldr::Writer::new(file);
            while let Some(mut buf) = rx.blocking_recv() {
                // Group commit: write what is queued, then one flush (and sync) for all.
                loop {
                    writer.write_record(&buf).map_err(record_err)?;
                    buf.clear();
                    let _ = spare_tx.try_send(buf);
                    match rx.try_recv() {
                        Ok(next) => buf = next,
                        Err(_) => break,
                    }
                }
                writer.flush().map_err(record_err)?;
                if sync {
                    writer
                        .get_ref()
                        .sync_data()
                        .map_err(|source| Error::JournalIo {
                            path: path.clone(),
                            action: "sync",
                            source,
                        })?;
                }
            }
            let file = writer.finish().map_err(record_err)?;
            file.sync_data().map_err(|source| Error::JournalIo {
                path: path.clone(),
                action: "sync",
                source,
            })
        });
        JournalTx {
            path,
            tx: Some(tx),
            spare,
            writer: Some(writer),
        }
    }

    /// Appends one record. An error means the journal is broken: stop the run.
    pub(crate) async fn append<S: Serialize>(
        &mut self,
        record: &RecordOut<'_, S>,
    ) -> Result<(), Error> {
        let mut buf = self.spare.try_recv().unwrap_or_default();
        if let Err(source) = serde_json::to_writer(&mut buf, record) {
            let id = match record {
                RecordOut::State { id, .. }
                | RecordOut::Completed { id }
                | RecordOut::Dead { id, .. } => (*id).to_string(),
            };
            return Err(Error::JournalEncode {
                path: self.path.clone(),
                id,
                source,
            });
        }
        let sent = match &self.tx {
            Some(tx) => tx.send(buf).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The writer stopped: its own error says why.
            self.tx = None;
            Err(self.stop().await.err().unwrap_or(Error::JournalWriterGone {
                path: self.path.clone(),
            }))
        }
    }

    /// Closes the channel and waits for the writer to write out and sync everything.
    /// After the first call (which reports the writer's error, if any) it does nothing.
    pub(crate) async fn stop(&mut self) -> Result<(), Error> {
        self.tx = None;
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        match writer.await {
            Ok(result) => result,
            Err(_) => Err(Error::JournalWriterGone {
                path: self.path.clone(),
            }),
        }
    }
}
