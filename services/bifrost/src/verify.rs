//! `bifrost verify`: per partition, the offset ranges the objects under a prefix cover, their
//! gaps and overlaps; `--deep` decodes every object and checks it against its range header.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange};

use crate::args::{ReplayArgs, VerifyArgs};
use crate::error::{Error, Result};
use crate::layout;
use crate::meta::{HEADER_READ, ObjectRange};
use crate::token::{self, Token};
use crate::upload::count_records;

/// An object's first offset (from its key), key, and range (or why it has none).
type ReadObject = (i64, String, Result<ObjectRange, String>);

/// Objects read at a time.
const CONCURRENCY: usize = 16;

/// What `verify` found for one partition's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionReport {
    /// `[<prefix>/]<group>/<topic>/partition=<p>`.
    pub dir: String,
    /// Objects in it.
    pub objects: usize,
    /// Records they hold (as their headers say).
    pub records: u64,
    /// The offsets covered, merged into ranges (`first..=last`).
    pub covered: Vec<(i64, i64)>,
    /// Offsets between objects that no object covers (compaction and transaction markers
    /// make some; an overlap never is).
    pub gaps: Vec<(i64, i64)>,
    /// Pairs of keys whose ranges overlap: a record in two objects.
    pub overlaps: Vec<(String, String)>,
    /// Objects that are unreadable, lack a range header, or (`--deep`) disagree with it.
    pub damaged: Vec<String>,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Per partition directory, sorted.
    pub partitions: Vec<PartitionReport>,
}

impl VerifyReport {
    /// No overlap and no damaged object (gaps are allowed): exit status 0.
    pub fn ok(&self) -> bool {
        self.partitions
            .iter()
            .all(|p| p.overlaps.is_empty() && p.damaged.is_empty())
    }

    /// The report as text, a line per partition then a line per problem.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let ranges = |v: &[(i64, i64)]| {
            v.iter()
                .map(|(a, b)| format!("{a}..={b}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        for p in &self.partitions {
            let _ = write!(
                out,
                "{}: {} objects, {} records, offsets {}",
                p.dir,
                p.objects,
                p.records,
                ranges(&p.covered)
            );
            if !p.gaps.is_empty() {
                let _ = write!(out, ", gaps {}", ranges(&p.gaps));
            }
            if !p.overlaps.is_empty() {
                let _ = write!(out, ", {} OVERLAPS", p.overlaps.len());
            }
            out.push('\n');
            for (a, b) in &p.overlaps {
                let _ = writeln!(out, "  overlap: {a} and {b}");
            }
            for d in &p.damaged {
                let _ = writeln!(out, "  damaged: {d}");
            }
        }
        if self.partitions.is_empty() {
            out.push_str("no bifrost objects under this prefix\n");
        }
        out
    }
}

/// Lists the prefix and reports every partition's coverage.
///
/// # Errors
/// The store cannot be opened or listed.
pub async fn verify(args: &VerifyArgs) -> Result<VerifyReport> {
    let opened = lifecycle::store::open(&args.store, &args.store_options.store_options)?;
    let prefix = opened.key(&args.prefix);
    let store = opened.store.clone();
    let url = opened.url.clone();
    let list_err = |source| Error::Object {
        url: url.clone(),
        op: "list",
        key: prefix.to_string(),
        source: Box::new(source),
    };
    let listed: Vec<_> = store
        .list((!prefix.as_ref().is_empty()).then_some(&prefix))
        .try_collect()
        .await
        .map_err(list_err)?;
    let keys: Vec<(layout::ParsedKey, Path)> = listed
        .into_iter()
        .filter_map(|m| layout::parse_key(m.location.as_ref()).map(|k| (k, m.location)))
        .collect();
    let deep = args.deep;
    let read: Vec<(layout::ParsedKey, String, Result<ObjectRange, String>)> =
        futures::stream::iter(keys)
            .map(|(k, path)| {
                let store = store.clone();
                async move {
                    let r = read_object(&*store, &path, deep).await;
                    (k, path.to_string(), r)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
    let mut by_dir: BTreeMap<String, Vec<ReadObject>> = BTreeMap::new();
    for (k, key, r) in read {
        by_dir.entry(k.dir).or_default().push((k.first, key, r));
    }
    let mut report = VerifyReport::default();
    for (dir, mut objects) in by_dir {
        objects.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut p = PartitionReport {
            dir,
            objects: objects.len(),
            ..Default::default()
        };
        let mut prev: Option<(String, ObjectRange)> = None;
        for (first, key, r) in objects {
            let r = match r {
                Ok(r) if r.first == first => r,
                Ok(r) => {
                    p.damaged
                        .push(format!("{key}: its header says it starts at {}", r.first));
                    continue;
                }
                Err(e) => {
                    p.damaged.push(format!("{key}: {e}"));
                    continue;
                }
            };
            p.records += r.records;
            match &prev {
                Some((pk, pr)) if r.first <= pr.last => {
                    p.overlaps.push((
                        format!("{pk} ({}..={})", pr.first, pr.last),
                        format!("{key} ({}..={})", r.first, r.last),
                    ));
                }
                Some((_, pr)) if r.first > pr.last + 1 => p.gaps.push((pr.last + 1, r.first - 1)),
                _ => {}
            }
            match p.covered.last_mut() {
                Some((_, last)) if r.first <= *last + 1 => *last = (*last).max(r.last),
                _ => p.covered.push((r.first, r.last)),
            }
            if prev.as_ref().is_none_or(|(_, pr)| r.last > pr.last) {
                prev = Some((key, r));
            }
        }
        report.partitions.push(p);
    }
    Ok(report)
}

/// An object's range from its header; with `deep`, also decodes it and checks the records
/// and bytes.
async fn read_object(
    store: &dyn object_store::ObjectStore,
    key: &Path,
    deep: bool,
) -> Result<ObjectRange, String> {
    let opts = GetOptions {
        range: (!deep).then_some(GetRange::Bounded(0..HEADER_READ)),
        ..Default::default()
    };
    let data = store
        .get_opts(key, opts)
        .await
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    let r = ObjectRange::parse(&data[..data.len().min(HEADER_READ as usize)])?;
    if deep {
        let k = key.to_string();
        let (records, bytes) = tokio::task::spawn_blocking(move || count_records(&k, &data))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if (records, bytes) != (r.records, r.bytes) {
            return Err(format!(
                "its header says {} records ({} bytes), it holds {records} ({bytes} bytes)",
                r.records, r.bytes
            ));
        }
    }
    Ok(r)
}

/// Writes a replay token: the service (with `--tokens`) archives the partition again from
/// `--from` (from the start of the object holding it), replacing its objects, when it is
/// next assigned the partition. Returns what was done, for the operator.
///
/// # Errors
/// The store cannot be opened or written.
pub async fn replay(args: &ReplayArgs) -> Result<String> {
    if args.from < 0 || args.partition < 0 {
        return Err(Error::Flag {
            flag: if args.from < 0 { "from" } else { "partition" },
            value: args.from.min(i64::from(args.partition)).to_string(),
            message: "must not be negative".into(),
        });
    }
    let opened = lifecycle::store::open(&args.store, &args.store_options.store_options)?;
    let prefix = opened.key(&args.prefix);
    let dir = layout::partition_dir(prefix.as_ref(), &args.group, &args.topic, args.partition);
    let key = Path::from(format!("{dir}/{}", layout::TOKEN_NAME));
    let t = Token {
        topic: args.topic.clone(),
        partition: args.partition,
        next: args.from,
        replay: true,
    };
    token::write(&*opened.store, &opened.url, &key, &t).await?;
    Ok(format!(
        "replay token written to {key}: bifrost (running with --tokens) archives {} [{}] again from offset {} (from the start of the object holding it) when it is next assigned the partition (restart it, or wait for a rebalance); objects from there on are REPLACED\n",
        args.topic, args.partition, args.from
    ))
}
