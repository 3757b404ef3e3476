//! Messages kept on local disk as Baldr files: the spill (what could not be delivered before
//! the shutdown deadline, sent first by the next start) and the dead-letter file (what Kafka
//! refused for good, with the reason).
//!
//! Each Baldr record is one message: a JSON line `{"topic":..,"key":..,"headers":{..},
//! "timestamp":..,"reason":..}`, a LF, then the payload's bytes exactly (so `baldr cat` shows it).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A message as it is (or was to be) produced to Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The topic.
    pub topic: String,
    /// The key, if any.
    pub key: Option<Bytes>,
    /// Headers.
    pub headers: Vec<(String, Bytes)>,
    /// The payload.
    pub payload: Bytes,
    /// The Kafka timestamp (ms since the Unix epoch: when syslogger received it), kept so
    /// that a message sent again from a spill file has the time it had the first time.
    pub timestamp: Option<i64>,
    /// Why it is here (dead letters).
    pub reason: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl Envelope {
    /// The Baldr record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let meta = Meta {
            topic: self.topic.clone(),
            key: self
                .key
                .as_ref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
            timestamp: self.timestamp,
            reason: self.reason.clone(),
        };
        let mut out = serde_json::to_vec(&meta).unwrap_or_default();
        out.push(b'\n');
        out.extend_from_slice(&self.payload);
        out
    }

    /// Reads a record written by [`encode`](Self::encode).
    pub fn decode(record: &Bytes) -> Option<Envelope> {
        let nl = memchr::memchr(b'\n', record)?;
        let meta: Meta = serde_json::from_slice(&record[..nl]).ok()?;
        Some(Envelope {
            topic: meta.topic,
            key: meta.key.map(Bytes::from),
            headers: meta
                .headers
                .into_iter()
                .map(|(k, v)| (k, Bytes::from(v)))
                .collect(),
            payload: record.slice(nl + 1..),
            timestamp: meta.timestamp,
            reason: meta.reason,
        })
    }
}

/// An append-only Baldr file of envelopes (the dead-letter file): every record is flushed
/// to the OS before `append` returns.
pub struct EnvelopeFile {
    path: PathBuf,
    writer: baldr::Writer<BufWriter<File>>,
}

impl EnvelopeFile {
    /// Opens `path` for appending, creating it (and its directory) if missing.
    ///
    /// # Errors
    /// [`Error::File`].
    pub fn open(path: &Path) -> Result<Self, Error> {
        let err = |source| Error::File {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: baldr::Writer::new(BufWriter::new(f)),
        })
    }

    /// Appends one envelope and flushes.
    ///
    /// # Errors
    /// [`Error::File`].
    pub fn append(&mut self, e: &Envelope) -> Result<(), Error> {
        let err = |e: baldr::Error| Error::File {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        };
        self.writer.write_record(&e.encode()).map_err(err)?;
        self.writer.flush().map_err(err)
    }
}

/// Writes `envelopes` as a new spill file in `dir` (`spill-<unix ms>-<pid>.baldr`, written
/// under a temporary name, synced, then renamed) and returns its path.
///
/// # Errors
/// [`Error::File`].
pub fn write_spill(dir: &Path, envelopes: &[Envelope]) -> Result<PathBuf, Error> {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let name = format!("spill-{millis:013}-{}.baldr", std::process::id());
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::File { path: p, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let f = File::create(&tmp).map_err(err(&tmp))?;
    let mut w = baldr::Writer::new(BufWriter::new(f));
    for e in envelopes {
        w.write_record(&e.encode()).map_err(|e| Error::File {
            path: tmp.clone(),
            source: std::io::Error::other(e),
        })?;
    }
    let buf = w.finish().map_err(|e| Error::File {
        path: tmp.clone(),
        source: std::io::Error::other(e),
    })?;
    let f = buf.into_inner().map_err(|e| Error::File {
        path: tmp.clone(),
        source: e.into_error(),
    })?;
    f.sync_all().map_err(err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(err(&path))?;
    Ok(path)
}

/// The spill files in `dir`, oldest first (none when `dir` does not exist).
///
/// # Errors
/// [`Error::File`] when `dir` exists but cannot be listed.
pub fn spill_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::File {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("spill-") && n.ends_with(".baldr"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads every envelope of a spill (or dead-letter) file.
///
/// # Errors
/// [`Error::File`] when the file cannot be read, [`Error::Spill`] when a record is damaged.
pub fn read_envelopes(path: &Path) -> Result<Vec<Envelope>, Error> {
    let data = std::fs::read(path).map_err(|source| Error::File {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for r in baldr::Records::new(Bytes::from(data)) {
        let r = r.map_err(|e| Error::Spill {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        out.push(Envelope::decode(&r).ok_or_else(|| Error::Spill {
            path: path.to_path_buf(),
            message: "a record is not a syslogger envelope".into(),
        })?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_through_spill_files() {
        let dir = tempfile::tempdir().unwrap();
        let e = Envelope {
            topic: "t".into(),
            key: Some(Bytes::from_static(b"k")),
            headers: vec![("syslog.host".into(), Bytes::from_static(b"h"))],
            payload: Bytes::from_static(b"\xff\x00binary\npayload"),
            timestamp: Some(1_764_540_000_123),
            reason: None,
        };
        let d = Envelope {
            reason: Some("too large".into()),
            key: None,
            timestamp: None,
            headers: vec![],
            ..e.clone()
        };
        let p = write_spill(dir.path(), &[e.clone(), d.clone()]).unwrap();
        assert_eq!(spill_files(dir.path()).unwrap(), vec![p.clone()]);
        assert_eq!(read_envelopes(&p).unwrap(), vec![e.clone(), d]);
        let dl = dir.path().join("dl/dead.baldr");
        let mut f = EnvelopeFile::open(&dl).unwrap();
        f.append(&e).unwrap();
        f.append(&e).unwrap();
        assert_eq!(read_envelopes(&dl).unwrap().len(), 2);
        assert!(spill_files(&dir.path().join("none")).unwrap().is_empty());
    }
}
