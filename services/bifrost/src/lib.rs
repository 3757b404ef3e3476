//! `bifrost`: archive Kafka topics to object storage as Baldr files, exactly once per
//! record, committing offsets only after upload.
//!
//! - **Subscription**: a consumer group over the topics whose whole name matches
//!   `--topics`, narrowed by `--allow-topic`/`--deny-topic`; topics created later are picked
//!   up; partitions follow rebalances, so instances in one group share the work.
//! - **Files**: per assigned partition, message values go to a local spool file (on disk,
//!   written by one thread); a file rotates when its message count, its bytes or its age
//!   reaches `--rotate-records`, `--rotate-bytes` or `--rotate-interval` (the age on a
//!   timer, even when no message arrives). Rotated files are compressed (gzip by default,
//!   zstd with `--compression zstd`) a few at a time and uploaded to
//!   `[<prefix>/]<group>/<topic>/partition=<p>/<first-offset %010d>.baldr.gz`.
//! - **First writer wins**: objects are created with a create-only put. When the key exists
//!   (a restart read the range again, or a zombie instance still holds a revoked
//!   partition) the object is kept, its range is read from its header, and archiving goes
//!   on after its last offset: no record is ever in two objects, none is lost. Every
//!   object carries its first and last offset, record and byte count in its own first
//!   bytes (a gzip header extra field, or a zstd skippable frame; see [`ObjectRange`]), and
//!   in S3 metadata.
//! - **Commit after upload**: a file's first message's acknowledgement is held until the
//!   file is archived (the rest are acknowledged at once), so kafka-seq's commit, the
//!   contiguous acknowledged prefix, never passes an unarchived message; per partition,
//!   files are archived in order.
//! - **Tokens** (`--tokens`): each partition's next offset is also kept in
//!   `_bifrost_token` beside its objects and read at assignment; a deleted token replays the
//!   partition from the beginning, and [`replay`] (`bifrost replay`) from an offset: the one
//!   case where objects are replaced (cut at the existing objects' starts, so each is
//!   replaced exactly), logged as such.
//! - **Memory** that grows with data is bounded by `--memory-budget` whatever the number of
//!   partitions: no compressor per partition, bounded batches and uploads; a partition whose
//!   uploads lag is paused.
//! - [`verify`] reports, per partition, the offsets covered, gaps and overlaps.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use futures::SinkExt;
//!
//! // A Kafka cluster (here librdkafka's in-process mock) with three messages.
//! let kafka = test_services::kafka::KafkaCluster::start(1);
//! kafka.create_topic("events", 1);
//! let producer = kafka_seq::ProducerConfig::new(kafka.bootstrap_servers()).create()?;
//! let mut sink = producer.sink("events");
//! for v in ["a", "b", "c"] {
//!     sink.feed(kafka_seq::Record::new(v)).await?;
//! }
//! sink.close().await?;
//!
//! // Archive them into a directory; files rotate after three messages.
//! let dir = tempfile::tempdir()?;
//! let store = format!("file://{}", dir.path().display());
//! let mut args = bifrost::Args::new(kafka.bootstrap_servers(), "archiver", "events", &store);
//! args.rotate_records = 3;
//! args.spool_dir = Some(dir.path().join("spool"));
//! let stop = lifecycle::CancellationToken::new();
//! let service = tokio::spawn(bifrost::run(args, stop.clone()));
//! let object = dir.path().join("archiver/events/partition=0/0000000000.baldr.gz");
//! for _ in 0..600 {
//!     if object.exists() { break }
//!     tokio::time::sleep(Duration::from_millis(50)).await;
//! }
//! stop.cancel(); // as SIGTERM does: upload what is open, commit, leave the group
//! let outcome = service.await??;
//! assert_eq!(outcome.messages, 3);
//!
//! let records: Vec<_> = baldr::open_reader(std::fs::File::open(&object)?)?.collect::<Result<_, _>>()?;
//! assert_eq!(records, ["a", "b", "c"]);
//! let report = bifrost::verify(&bifrost::VerifyArgs {
//!     store,
//!     store_options: Default::default(),
//!     prefix: "archiver".into(),
//!     deep: true,
//! })
//! .await?;
//! assert!(report.ok());
//! assert_eq!(report.partitions[0].covered, [(0, 2)]);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod args;
mod error;
mod layout;
mod meta;
mod metrics;
mod service;
mod spool;
mod token;
mod upload;
mod verify;

pub use args::{Args, Codec, ReplayArgs, Tombstones, VerifyArgs, parse_bytes};
pub use error::{Error, Result};
pub use layout::{ParsedKey, TOKEN_NAME, object_name, parse_key, partition_dir};
pub use meta::ObjectRange;
pub use metrics::describe_metrics;
pub use service::{Outcome, run, run_with_store};
pub use token::Token;
pub use verify::{PartitionReport, VerifyReport, replay, verify};
