//! A batch: one directory's manifest and data files, loaded in one transaction.

use crate::manifest::Manifest;
use crate::plan::DataFile;

/// The name of the Redshift COPY manifest the loader writes into a directory (not a data
/// file: whoever lists a directory's data files leaves it out).
pub const COPY_MANIFEST_NAME: &str = "blueshift-copy-manifest.json";

/// One directory to load: every data file in it that its manifest's `data-pattern` matches.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The directory key (no trailing `/`), as recorded in the load history.
    pub directory: String,
    /// The manifest's key.
    pub manifest_key: String,
    /// The manifest.
    pub manifest: Manifest,
    /// The data files, sorted by key.
    pub files: Vec<DataFile>,
}
