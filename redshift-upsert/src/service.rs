//! The `blueshift` service: poll the store, load every ready directory, delete loaded files.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use regex::Regex;

use crate::error::{Error, Result};
use crate::load::{LoadOptions, LoadReport, Loader, jitter};
use crate::manifest::TableName;
use crate::plan::plan;
use crate::store::Store;
use crate::warehouse::WarehouseUrl;
use crate::watcher::{ReadyDir, scan};

/// Flags and `BLUESHIFT_*` variables of the `blueshift` binary.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The watched store: `s3://BUCKET[/PREFIX]` or `file:///PATH`.
    #[arg(long, env = "BLUESHIFT_STORE")]
    pub store: String,
    /// The default warehouse (manifests may name another with `:jdbc-url`):
    /// `postgres://...`, `redshift://...` or `sqlite://PATH`.
    #[arg(long, env = "BLUESHIFT_WAREHOUSE")]
    pub warehouse: String,
    /// Only directories whose key matches this regular expression are loaded.
    #[arg(long, env = "BLUESHIFT_KEY_PATTERN", default_value = ".*")]
    pub key_pattern: String,
    /// Time between scans (`500ms`, `30s`, `5m`, `1h`), with up to 20% random jitter.
    #[arg(long, env = "BLUESHIFT_POLL_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Scan once, load what is ready, and exit: 0 when every ready directory loaded, 1 otherwise.
    #[arg(long, env = "BLUESHIFT_ONCE")]
    pub once: bool,
    /// Print the plan for every ready directory and exit without loading.
    #[arg(long, env = "BLUESHIFT_DRY_RUN")]
    pub dry_run: bool,
    /// Redshift: the IAM role COPY uses.
    #[arg(long, env = "BLUESHIFT_IAM_ROLE")]
    pub iam_role: Option<String>,
    /// Redshift: use MERGE for the merge strategy instead of DELETE + INSERT.
    #[arg(long, env = "BLUESHIFT_MERGE_STATEMENT")]
    pub merge_statement: bool,
    /// An S3 API endpoint (e.g. `http://127.0.0.1:5055`): path-style requests, HTTP allowed.
    #[arg(long, env = "BLUESHIFT_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// The load-history table (exactly-once bookkeeping), created if missing.
    #[arg(long, env = "BLUESHIFT_HISTORY_TABLE", default_value = crate::load::DEFAULT_HISTORY_TABLE)]
    pub history_table: String,
    /// Attempts per load for serialization conflicts (PostgreSQL 40001, Redshift 1023).
    #[arg(long, env = "BLUESHIFT_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,
    /// Directories loaded at the same time (loads into one table are always serialised).
    #[arg(long, env = "BLUESHIFT_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
}

/// A `#[derive(Parser)]` wrapper so the binary (or tests) can parse [`Args`] alone.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "blueshift",
    about = "Load object-storage files into the warehouse with upserts"
)]
pub struct Cli {
    /// The service's flags.
    #[command(flatten)]
    pub args: Args,
}

/// Parses `500ms`, `30s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 30s, 5m, 1h)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown unit {u:?} in {s:?}; use ms, s, m or h")),
    };
    if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What one poll did.
#[derive(Debug, Default)]
pub struct PollOutcome {
    /// Directories loaded (or found already loaded) and cleaned up.
    pub loaded: Vec<LoadReport>,
    /// Directories that failed (with the error), including invalid manifests.
    pub failed: Vec<(String, Error)>,
    /// Ready directories not attempted because their retry backoff has not expired.
    pub deferred: usize,
}

/// The running service: store, loaders per warehouse, backoff state.
pub struct Service {
    args: Args,
    store: Store,
    key_pattern: Regex,
    default_warehouse: WarehouseUrl,
    history_table: TableName,
    loaders: HashMap<WarehouseUrl, Arc<Loader>>,
    backoff: HashMap<String, (u32, Instant)>,
}

impl Service {
    /// Validates the flags and opens the store (databases are connected on first use).
    pub fn new(args: Args) -> Result<Service> {
        let key_pattern = Regex::new(&args.key_pattern)
            .map_err(|e| Error::Config(format!("--key-pattern {:?}: {e}", args.key_pattern)))?;
        let default_warehouse = WarehouseUrl::parse(&args.warehouse)?;
        let history_table = TableName::parse(&args.history_table)
            .map_err(|e| Error::Config(format!("--history-table: {e}")))?;
        // Last: opening a file:// store creates its directory, which a bad flag must not.
        let store = Store::open(&args.store, args.s3_endpoint.as_deref())?;
        Ok(Service {
            args,
            store,
            key_pattern,
            default_warehouse,
            history_table,
            loaders: HashMap::new(),
            backoff: HashMap::new(),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn warehouse_for(&self, dir: &ReadyDir) -> Result<WarehouseUrl> {
        match &dir.manifest.jdbc_url {
            Some(u) => WarehouseUrl::parse(u).map_err(|e| Error::ManifestKey {
                file: dir.manifest_key.clone(),
                key: ":jdbc-url".into(),
                message: e.to_string(),
            }),
            None => Ok(self.default_warehouse.clone()),
        }
    }

    fn loader(&mut self, url: &WarehouseUrl) -> Result<Arc<Loader>> {
        if let Some(l) = self.loaders.get(url) {
            return Ok(l.clone());
        }
        let opts = LoadOptions {
            merge_statement: self.args.merge_statement,
            iam_role: self.args.iam_role.clone(),
            max_attempts: self.args.max_attempts.max(1),
            delete_loaded: true,
            history_table: self.history_table.clone(),
        };
        let l = Arc::new(Loader::new(url.clone(), opts)?);
        self.loaders.insert(url.clone(), l.clone());
        Ok(l)
    }

    /// The plans for every ready directory, as text (what `--dry-run` prints).
    pub async fn dry_run(&mut self) -> Result<(String, usize)> {
        let s = scan(&self.store, &self.key_pattern).await?;
        let mut out = String::new();
        let mut failed = 0;
        for (dir, e) in &s.invalid {
            out.push_str(&format!("-- directory {dir}: INVALID: {e}\n"));
            failed += 1;
        }
        for d in &s.ready {
            let r = async {
                let url = self.warehouse_for(d)?;
                let l = self.loader(&url)?;
                let rs = l.redshift_target(&self.store, &d.directory)?;
                let p = plan(&d.manifest, &d.files, l.dialect(), rs.as_ref())?;
                Ok::<_, Error>((url, p))
            }
            .await;
            match r {
                Ok((url, p)) => out.push_str(&format!(
                    "-- directory {} -> {} ({:?})\n{p}\n",
                    d.directory,
                    url.redacted(),
                    p.dialect
                )),
                Err(e) => {
                    failed += 1;
                    out.push_str(&format!("-- directory {}: CANNOT PLAN: {e}\n", d.directory));
                }
            }
        }
        Ok((out, failed))
    }

    /// Scans once and loads every ready directory whose backoff has expired.
    pub async fn poll(&mut self) -> Result<PollOutcome> {
        let s = scan(&self.store, &self.key_pattern).await?;
        let mut out = PollOutcome::default();
        for (dir, e) in s.invalid {
            tracing::error!(directory = %dir, error = %e, "invalid manifest; directory not loaded");
            metrics::counter!("blueshift_invalid_manifests_total").increment(1);
            out.failed.push((dir, e));
        }
        // Backoff of directories that are no longer ready (loaded by someone else, deleted)
        // is forgotten, so the map holds at most the ready directories.
        self.backoff
            .retain(|dir, _| s.ready.iter().any(|d| d.directory == *dir));
        let now = Instant::now();
        let mut jobs = Vec::new();
        for d in s.ready {
            if let Some((_, until)) = self.backoff.get(&d.directory)
                && *until > now
            {
                out.deferred += 1;
                continue;
            }
            match self.warehouse_for(&d).and_then(|u| self.loader(&u)) {
                Ok(l) => jobs.push((l, d)),
                Err(e) => out.failed.push((d.directory.clone(), e)),
            }
        }
        let store = &self.store;
        let results: Vec<(String, Result<LoadReport>)> = futures::stream::iter(jobs)
            .map(|(l, d)| async move {
                let r = l.load(store, &d).await;
                (d.directory, r)
            })
            .buffer_unordered(self.args.concurrency.max(1))
            .collect()
            .await;
        for (dir, r) in results {
            match r {
                Ok(rep) => {
                    tracing::info!(directory = %dir, table = %rep.table, files = rep.files_loaded, skipped = rep.files_skipped, rows = rep.rows, attempts = rep.attempts, "loaded");
                    self.backoff.remove(&dir);
                    out.loaded.push(rep);
                }
                Err(e) => {
                    let failures = self.backoff.get(&dir).map_or(0, |b| b.0) + 1;
                    let wait = (self.args.poll_interval * 2u32.saturating_pow(failures.min(10)))
                        .min(Duration::from_secs(3600));
                    tracing::error!(directory = %dir, error = %e, failures, retry_in = ?wait, "load failed; rolled back, files kept");
                    self.backoff
                        .insert(dir.clone(), (failures, Instant::now() + wait));
                    out.failed.push((dir, e));
                }
            }
        }
        Ok(out)
    }
}

/// Runs the service as the flags say. Returns whether everything succeeded (`--once` and
/// `--dry-run`: every ready directory loaded / planned; otherwise true after a clean
/// shutdown on SIGINT/SIGTERM).
pub async fn run(args: Args) -> Result<bool> {
    let once = args.once;
    let dry = args.dry_run;
    let interval = args.poll_interval;
    let mut svc = Service::new(args)?;
    if dry {
        let (text, failed) = svc.dry_run().await?;
        print!("{text}");
        return Ok(failed == 0);
    }
    if once {
        let o = svc.poll().await?;
        return Ok(o.failed.is_empty());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let notify = Arc::new(tokio::sync::Notify::new());
    {
        let (stop, notify) = (stop.clone(), notify.clone());
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.store(true, Ordering::SeqCst);
            // Wakes the loop's wait, or is kept for it if it is polling right now.
            notify.notify_one();
        });
    }
    tracing::info!(store = %svc.store.url, "blueshift watching");
    while !stop.load(Ordering::SeqCst) {
        if let Err(e) = svc.poll().await {
            tracing::error!(error = %e, "scan failed");
        }
        let wait = interval.mul_f64(0.9) + jitter(interval / 5);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = notify.notified() => {}
        }
    }
    tracing::info!("blueshift stopped");
    Ok(true)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 days").is_err());
    }

    #[test]
    fn cli_contract() {
        let c = Cli::try_parse_from([
            "blueshift",
            "--store",
            "file:///tmp/x",
            "--warehouse",
            "sqlite:///tmp/x.db",
            "--key-pattern",
            "in/.*",
            "--poll-interval",
            "10s",
            "--once",
            "--dry-run",
        ])
        .unwrap();
        assert!(c.args.once && c.args.dry_run);
        assert_eq!(c.args.poll_interval, Duration::from_secs(10));
        assert!(Cli::try_parse_from(["blueshift", "--store", "file:///x"]).is_err());
    }
}
