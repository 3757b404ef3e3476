//! Scanning the store for ready directories: leaf directories whose key matches the key
//! pattern, with a manifest and at least one data file matching its `data-pattern`.

use std::collections::BTreeMap;

use regex::Regex;

use redshift_upsert::{
    Batch, COPY_MANIFEST_NAME, DataFile, Error, MANIFEST_NAMES, Manifest, ManifestFormat, Result,
    Store,
};

/// Manifests larger than this are refused.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// The result of one scan.
#[derive(Debug, Default)]
pub struct Scan {
    /// Directories ready to load, sorted by key.
    pub ready: Vec<Batch>,
    /// Directories whose manifest could not be read or is invalid.
    pub invalid: Vec<(String, Error)>,
}

/// Scans the store once.
pub async fn scan(store: &Store, key_pattern: &Regex) -> Result<Scan> {
    let objects = store.list().await?;
    // directory -> (manifests, data candidates)
    let mut dirs: BTreeMap<String, (Vec<String>, Vec<DataFile>)> = BTreeMap::new();
    for o in objects {
        let key = o.location.to_string();
        let (dir, name) = key.rsplit_once('/').unwrap_or(("", key.as_str()));
        let entry = dirs.entry(dir.to_string()).or_default();
        if MANIFEST_NAMES.contains(&name) {
            entry.0.push(name.to_string());
        } else if name != COPY_MANIFEST_NAME {
            entry.1.push(DataFile {
                key: key.clone(),
                etag: o.e_tag.clone(),
                size: o.size,
            });
        }
    }
    let mut out = Scan::default();
    for (dir, (manifests, mut files)) in dirs {
        if manifests.is_empty() || !key_pattern.is_match(&dir) {
            continue;
        }
        let Some(name) = MANIFEST_NAMES
            .iter()
            .find(|n| manifests.iter().any(|m| m == *n))
        else {
            continue;
        };
        if manifests.len() > 1 {
            tracing::warn!(directory = %dir, used = %name, "several manifests in one directory; using the first of .edn, .toml, .json");
        }
        let manifest_key = if dir.is_empty() {
            (*name).to_string()
        } else {
            format!("{dir}/{name}")
        };
        let parsed = async {
            let bytes = store.read_small(&manifest_key, MAX_MANIFEST_BYTES).await?;
            let text = String::from_utf8(bytes).map_err(|_| Error::ManifestSyntax {
                file: manifest_key.clone(),
                position: "file".into(),
                message: "not UTF-8".into(),
            })?;
            let format = ManifestFormat::from_file_name(name).unwrap_or(ManifestFormat::Edn);
            Manifest::parse(&text, format, &manifest_key)
        }
        .await;
        let manifest = match parsed {
            Ok(m) => m,
            Err(e) => {
                out.invalid.push((dir, e));
                continue;
            }
        };
        files.retain(|f| manifest.matches(&f.key));
        if files.is_empty() {
            continue;
        }
        files.sort_by(|a, b| a.key.cmp(&b.key));
        out.ready.push(Batch {
            directory: dir,
            manifest_key,
            manifest,
            files,
        });
    }
    Ok(out)
}
