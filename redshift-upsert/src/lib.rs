//! Load object-storage files into Redshift, PostgreSQL or SQLite with upserts.
//!
//! Clients drop data files and a manifest (`manifest.edn`, `.toml` or `.json`, compatible with
//! the original Blueshift) into a directory of object storage; a [`batch::Batch`] (one
//! directory's manifest and files) is loaded in one transaction through a staging table,
//! then its files are deleted. The `blueshift` service (crate `blueshift`) watches a store
//! for such directories. The [`plan`] module is pure (manifest + file list in, statements
//! out); the [`load`] module runs plans against PostgreSQL (COPY FROM STDIN), Redshift (COPY
//! from S3) and SQLite (batched inserts), with a load-history table for exactly-once loading.
//!
//! ```
//! use redshift_upsert::manifest::{Manifest, ManifestFormat};
//! use redshift_upsert::plan::{plan, DataFile, Dialect};
//!
//! let m = Manifest::parse(
//!     r#"{:table "testing" :pk-columns ["foo"] :columns ["foo" "bar"]
//!         :options ["DELIMITER '\\t'" "IGNOREHEADER 1" "ESCAPE" "TRIMBLANKS"]
//!         :data-pattern ".*tsv$"}"#,
//!     ManifestFormat::Edn,
//!     "in/manifest.edn",
//! )?;
//! let files = [DataFile { key: "in/a.tsv".into(), etag: None, size: 10 }];
//! let p = plan(&m, &files, Dialect::Postgres, None)?;
//! assert!(p.statements().iter().any(|s| s.starts_with("DELETE FROM \"testing\" USING")));
//! # Ok::<(), redshift_upsert::Error>(())
//! ```
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod batch;
pub mod edn;
mod error;
mod history;
pub mod load;
pub mod manifest;
pub mod options;
pub mod plan;
pub mod records;
pub mod store;
pub mod warehouse;

pub use error::{Error, Result, is_retryable_code};
/// The database driver, re-exported for users of [`warehouse::Pool`].
pub use sqlx;
