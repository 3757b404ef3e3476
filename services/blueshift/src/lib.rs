//! `blueshift`: watch object storage for directories holding data files and a manifest, and
//! upsert each directory into Redshift, PostgreSQL or SQLite in one transaction (the
//! `redshift-upsert` library), then delete the loaded files.
//!
//! Each poll lists the store once ([`watcher::scan`]), finds every directory whose key
//! matches `--key-pattern` and that holds a manifest and at least one data file its
//! `data-pattern` matches, and loads up to `--concurrency` directories at once (loads into
//! one table are serialised). A failed directory rolls back, keeps its files and waits out an
//! exponential backoff (starting at `--poll-interval`, up to an hour) while the others go on.
//!
//! Whoever can write to the bucket must not steer the service: a manifest's `:jdbc-url` is
//! refused ([`Error::ManifestWarehouse`], naming the directory and the key, before anything
//! is created or contacted) unless it names `--warehouse` itself or a server allowed with
//! `--allow-manifest-warehouse HOST[:PORT]`; a SQLite path never is.
//!
//! [`run`] is the service: it runs until its cancellation token fires (the `blueshift`
//! binary's SIGTERM) or, with `--once`/`--dry-run`, after one scan.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = dir.path().join("incoming");
//! std::fs::create_dir_all(store.join("2026/11/30"))?;
//! std::fs::write(
//!     store.join("2026/11/30/manifest.edn"),
//!     r#"{:table "events" :pk-columns ["id"] :columns ["id" "v"] :options ["CSV"] :data-pattern ".*csv$"}"#,
//! )?;
//! std::fs::write(store.join("2026/11/30/part-0.csv"), "1,one\n2,two\n")?;
//! let db = dir.path().join("warehouse.db");
//! // The table exists in the warehouse; blueshift loads into it.
//! # {
//! #     use redshift_upsert::sqlx::{self, Connection};
//! #     let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db.display())).await?;
//! #     sqlx::raw_sql("CREATE TABLE events (id INTEGER, v TEXT)").execute(&mut c).await?;
//! # }
//! let args = blueshift::Args {
//!     store: format!("file://{}", store.display()),
//!     warehouse: format!("sqlite://{}", db.display()),
//!     once: true,
//!     ..Default::default()
//! };
//! // `--once`: one scan, then the outcome; without it, until the token is cancelled.
//! let outcome = blueshift::run(args, lifecycle::CancellationToken::new()).await?;
//! assert_eq!((outcome.loaded, outcome.failed), (1, 0));
//! assert!(!store.join("2026/11/30/part-0.csv").exists()); // loaded, then deleted
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod error;
mod service;
pub mod watcher;

pub use error::{Error, Result};
pub use service::{Args, Outcome, PollOutcome, Service, describe_metrics, run};
