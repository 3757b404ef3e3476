//! Load object-storage files into Redshift, PostgreSQL or SQLite with upserts.
//!
//! Clients drop data files and a manifest (`manifest.edn`, `.toml` or `.json`, compatible with
//! the original Blueshift) into a directory of object storage; a [`Batch`] (one directory's
//! [`Manifest`] and [`DataFile`]s) is loaded by a [`Loader`] in one transaction, then its files
//! are deleted. The `blueshift` service (crate `blueshift`) watches a [`Store`] for such
//! directories.
//!
//! - **Manifests**: [`Manifest::parse`] validates one (keys, identifiers, COPY options from
//!   an allow-list); errors name the file and the key.
//! - **The planner** ([`plan`], [`plan_with`]) is pure: manifest and file list in, a [`Plan`]
//!   out — a [`LoadStrategy`] naming the path the loader tries first (PostgreSQL merges:
//!   [`LoadStrategy::DirectIntoEmpty`], [`LoadStrategy::KeysFirst`]) and the general
//!   [`StagedLoad`] every path falls back to, each made of named phases of [`Step`]s.
//! - **Loaders** ([`Loader::load`]) run plans against PostgreSQL (COPY FROM STDIN), Redshift
//!   (COPY from S3) and SQLite (batched inserts), phase by phase, with a load-history table
//!   for exactly-once loading; [`LoadOptions::fast_paths`] turns fast paths off, and
//!   [`LoadReport::path`] tells which path a load took.
//!
//! ```
//! use redshift_upsert::{DataFile, Dialect, LoadStrategy, Manifest, ManifestFormat, plan};
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
//! // A merge into PostgreSQL first tries to COPY straight into the table, if it is empty...
//! assert!(matches!(p.strategy, LoadStrategy::DirectIntoEmpty(_)));
//! // ...and falls back to staging the rows and replacing the matching ones.
//! assert!(p.statements().iter().any(|s| s.starts_with("DELETE FROM \"testing\" USING")));
//! # Ok::<(), redshift_upsert::Error>(())
//! ```
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod batch;
mod edn;
mod error;
mod history;
mod load;
mod manifest;
mod options;
mod plan;
mod records;
mod store;
mod warehouse;

pub use batch::{Batch, COPY_MANIFEST_NAME};
pub use error::{Error, Result};
pub use load::{DEFAULT_HISTORY_TABLE, LoadOptions, LoadPath, LoadReport, Loader, copy_file};
pub use manifest::{
    Ident, MANIFEST_NAMES, Manifest, ManifestFormat, StagingSelect, Strategy, TableName,
};
pub use options::{CopyOption, DataFormat};
pub use plan::{
    CopyManifest, DataFile, Dialect, DirectIntoEmpty, FastPaths, KeysFirst, LoadStrategy, Plan,
    RedshiftTarget, Savepoint, StagedLoad, Step, TargetFacts, plan, plan_with,
};
/// The database driver, re-exported for users who open their own connections (e.g. for
/// [`copy_file`]) with the same version.
pub use sqlx;
pub use store::Store;
pub use warehouse::{ConnectOptions, WarehouseUrl, redact};
