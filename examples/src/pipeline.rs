//! `pipeline`: the end-to-end job on embedded defaults.
//!
//! Until the services exist it shows the storage format working end to end: it generates
//! syslog-like JSON events, writes them as a gzip-compressed Baldr file (as `bifrost` will),
//! reads the file back with compression detected, checks every record, and prints a summary.
//! The last line is `records=N bytes=N compressed=N elapsed=SECONDS verified=true`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, ensure};
use baldr::Compression;

/// Flags of the `pipeline` program.
#[derive(Debug, clap::Parser)]
#[command(
    name = "pipeline",
    about = "Run the end-to-end job on embedded defaults"
)]
pub struct Args {
    /// How many events to generate.
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Where to write the Baldr file (kept); a temporary directory when omitted.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records written and read back.
    pub records: u64,
    /// Uncompressed size of the record stream.
    pub bytes: u64,
    /// Size of the file on disk.
    pub compressed: u64,
}

/// The `i`-th generated event, written into `buf` (reused across events).
fn event(i: u64, buf: &mut String) {
    buf.clear();
    let host = ["web-1", "web-2", "db-1"][(i % 3) as usize];
    let _ = write!(
        buf,
        r#"{{"seq":{i},"host":"{host}","facility":"daemon","severity":"info","message":"request {i} served in {} ms"}}"#,
        i % 97
    );
}

/// Runs the job; returns what it did after checking every record.
pub fn run(args: &Args) -> anyhow::Result<Summary> {
    let tmp;
    let path = match &args.out {
        Some(p) => p.clone(),
        None => {
            tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
            tmp.path().join("events.baldr.gz")
        }
    };
    let started = Instant::now();

    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = baldr::compressed_writer(BufWriter::new(file), Compression::Gzip)?;
    let mut buf = String::new();
    for i in 0..args.records {
        event(i, &mut buf);
        writer.write_record(buf.as_bytes())?;
    }
    let bytes = writer.bytes_written();
    writer
        .finish()?
        .finish()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    let compressed = std::fs::metadata(&path)?.len();

    let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut n = 0u64;
    for record in baldr::open_reader(BufReader::new(file))? {
        let record = record.with_context(|| format!("{}", path.display()))?;
        event(n, &mut buf);
        ensure!(
            record == buf.as_bytes(),
            "{}: record {n} differs from what was written",
            path.display()
        );
        n += 1;
    }
    ensure!(
        n == args.records,
        "{}: read {n} records, wrote {}",
        path.display(),
        args.records
    );

    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "wrote and verified {}{} ({:.1}x smaller than the raw stream)",
        path.display(),
        if args.out.is_none() {
            " (temporary)"
        } else {
            ""
        },
        bytes as f64 / compressed.max(1) as f64
    );
    println!(
        "records={n} bytes={bytes} compressed={compressed} elapsed={elapsed:.3} verified=true"
    );
    Ok(Summary {
        records: n,
        bytes,
        compressed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_writes_a_readable_gzip_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("e.baldr.gz");
        let summary = run(&Args {
            records: 1000,
            out: Some(out.clone()),
        })
        .unwrap();
        assert_eq!(summary.records, 1000);
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
        assert_eq!(summary.compressed, bytes.len() as u64);
        assert!(summary.compressed < summary.bytes);
        let records: Vec<_> = baldr::open_reader(&bytes[..])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(records.len(), 1000);
        assert!(records[999].starts_with(br#"{"seq":999,"#));
    }
}
