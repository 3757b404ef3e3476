//! The service: poll the store, load every ready directory, delete loaded files; back off
//! per directory on failure; stop when the token fires.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::StreamExt;
use lifecycle::CancellationToken;
use redshift_upsert::{
    Batch, DEFAULT_HISTORY_TABLE, LoadOptions, LoadReport, Loader, Store, TableName, WarehouseUrl,
};
use regex::Regex;

use crate::error::{Error, Result};
use crate::watcher::scan;

/// The longest a failing directory waits before its next attempt.
const MAX_DIRECTORY_BACKOFF: Duration = Duration::from_secs(3600);

/// The service's flags. With `service-lifecycle`'s parsing each is also read from
/// `BLUESHIFT_<FLAG>` and from the `--config` file.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The watched store: `s3://BUCKET[/PREFIX]`, `file:///PATH` or a directory.
    #[arg(long, value_name = "URL")]
    pub store: String,
    /// Options of the store (`--store-option aws_endpoint=http://...`).
    #[command(flatten)]
    pub store_options: lifecycle::store::StoreOptions,
    /// The warehouse: `postgres://...`, `redshift://...` or `sqlite://PATH`.
    #[arg(long, value_name = "URL")]
    pub warehouse: String,
    /// Let manifests name their own warehouse (`:jdbc-url`) when it is on this server
    /// (`HOST` for any port, or `HOST:PORT`; repeatable). Without it a manifest's `:jdbc-url`
    /// is refused unless it names `--warehouse` itself; a SQLite path never is allowed.
    #[arg(long = "allow-manifest-warehouse", value_name = "HOST[:PORT]")]
    pub allow_manifest_warehouse: Vec<String>,
    /// Only directories whose key matches this regular expression are loaded.
    #[arg(long, value_name = "REGEX", default_value = ".*")]
    pub key_pattern: String,
    /// Time between scans (`500ms`, `30s`, `5m`), with up to 20% random jitter; also the first
    /// wait of a failed directory, which doubles with each failure up to an hour.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = lifecycle::duration::positive)]
    pub poll_interval: Duration,
    /// Scan once, load what is ready, and exit: 0 when every ready directory loaded, 1 otherwise.
    #[arg(long)]
    pub once: bool,
    /// Print the plan for every ready directory and exit without loading.
    #[arg(long)]
    pub dry_run: bool,
    /// Redshift: the IAM role COPY uses.
    #[arg(long, value_name = "ARN")]
    pub iam_role: Option<String>,
    /// Redshift: use MERGE for the merge strategy instead of DELETE + INSERT.
    #[arg(long)]
    pub merge_statement: bool,
    /// The load-history table (exactly-once bookkeeping), created if missing.
    #[arg(long, value_name = "TABLE", default_value = DEFAULT_HISTORY_TABLE)]
    pub history_table: String,
    /// Attempts per load for serialization conflicts (PostgreSQL 40001, Redshift 1023).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub max_attempts: u32,
    /// Directories loaded at the same time (loads into one table are always serialised).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub concurrency: usize,
}

impl Default for Args {
    /// The flags' defaults, with an empty store and warehouse (set both).
    fn default() -> Args {
        Args {
            store: String::new(),
            store_options: Default::default(),
            warehouse: String::new(),
            allow_manifest_warehouse: Vec::new(),
            key_pattern: ".*".into(),
            poll_interval: Duration::from_secs(30),
            once: false,
            dry_run: false,
            iam_role: None,
            merge_statement: false,
            history_table: DEFAULT_HISTORY_TABLE.into(),
            max_attempts: 5,
            concurrency: 4,
        }
    }
}

/// What one poll did.
#[derive(Debug, Default)]
pub struct PollOutcome {
    /// Directories loaded (or found already loaded) and cleaned up.
    pub loaded: Vec<LoadReport>,
    /// Directories that failed (with the error), including invalid manifests and refused
    /// manifest warehouses.
    pub failed: Vec<(String, Error)>,
    /// Ready directories not attempted because their retry backoff has not expired.
    pub deferred: usize,
}

/// What a run of the service did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Scans made.
    pub polls: u64,
    /// Directories loaded over the run.
    pub loaded: u64,
    /// Directory failures over the run (a directory failing twice counts twice).
    pub failed: u64,
    /// `--dry-run`: the plans, as text.
    pub plans: Option<String>,
}

impl Outcome {
    /// Whether the run did all it was asked: no directory failed (or could not be planned).
    pub fn succeeded(&self) -> bool {
        self.failed == 0
    }
}

/// A server a manifest may name (`--allow-manifest-warehouse`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedServer {
    host: String,
    port: Option<u16>,
}

impl AllowedServer {
    fn parse(s: &str) -> std::result::Result<AllowedServer, String> {
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or("an IPv6 address needs its closing ]")?;
            (h, after.strip_prefix(':'))
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                _ => (s, None),
            }
        };
        if host.is_empty() || host.contains('/') || host.contains('@') {
            return Err("expected HOST or HOST:PORT".into());
        }
        let port = port
            .map(|p| p.parse::<u16>().map_err(|_| format!("{p:?} is not a port")))
            .transpose()?;
        Ok(AllowedServer {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        self.host.eq_ignore_ascii_case(host) && self.port.is_none_or(|p| p == port)
    }
}

/// The running service: store, loaders per warehouse, backoff state.
pub struct Service {
    args: Args,
    store: Store,
    key_pattern: Regex,
    default_warehouse: WarehouseUrl,
    allowed: Vec<AllowedServer>,
    history_table: TableName,
    loaders: HashMap<WarehouseUrl, Arc<Loader>>,
    backoff: HashMap<String, (ExponentialBackoff, Instant)>,
}

impl Service {
    /// Validates the flags and opens the store (databases are connected on first use).
    ///
    /// # Errors
    /// [`Error::Flag`] or [`Error::Store`]: nothing is created or contacted then.
    pub fn new(args: Args) -> Result<Service> {
        let flag = |flag: &'static str, value: &str, message: String| Error::Flag {
            flag,
            value: value.to_string(),
            message,
        };
        let key_pattern = Regex::new(&args.key_pattern)
            .map_err(|e| flag("key-pattern", &args.key_pattern, e.to_string()))?;
        let default_warehouse = WarehouseUrl::parse(&args.warehouse)
            .map_err(|e| flag("warehouse", &args.warehouse, e.to_string()))?;
        let history_table = TableName::parse(&args.history_table)
            .map_err(|e| flag("history-table", &args.history_table, e))?;
        let allowed = args
            .allow_manifest_warehouse
            .iter()
            .map(|a| AllowedServer::parse(a).map_err(|m| flag("allow-manifest-warehouse", a, m)))
            .collect::<Result<Vec<_>>>()?;
        // Last: opening a file:// store creates its directory, which a bad flag must not.
        let opened = lifecycle::store::open(&args.store, &args.store_options.store_options)?;
        let store = Store::new(
            opened.store,
            opened.prefix.as_ref(),
            opened.s3_bucket.as_deref(),
            opened.url,
        );
        Ok(Service {
            args,
            store,
            key_pattern,
            default_warehouse,
            allowed,
            history_table,
            loaders: HashMap::new(),
            backoff: HashMap::new(),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The warehouse a directory loads into: `--warehouse`, or the manifest's `:jdbc-url`
    /// when the operator allows its server.
    fn warehouse_for(&self, dir: &Batch) -> Result<WarehouseUrl> {
        let Some(named) = &dir.manifest.jdbc_url else {
            return Ok(self.default_warehouse.clone());
        };
        let refuse = |warehouse: String, reason: String| Error::ManifestWarehouse {
            directory: dir.directory.clone(),
            manifest: dir.manifest_key.clone(),
            warehouse,
            reason,
        };
        let url = WarehouseUrl::parse(named)
            .map_err(|e| refuse(redshift_upsert::redact(named), e.to_string()))?;
        if url == self.default_warehouse {
            return Ok(url);
        }
        match url.server() {
            Err(e) => Err(refuse(url.redacted(), e.to_string())),
            Ok(None) => Err(refuse(
                url.redacted(),
                "a manifest may never name a SQLite file".into(),
            )),
            Ok(Some((host, port))) if self.allowed.iter().any(|a| a.allows(&host, port)) => Ok(url),
            Ok(Some((host, port))) => Err(refuse(
                url.redacted(),
                format!(
                    "server {host}:{port} is not allowed (the operator allows servers with --allow-manifest-warehouse HOST[:PORT])"
                ),
            )),
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
            ..LoadOptions::default()
        };
        let l = Arc::new(Loader::new(url.clone(), opts)?);
        self.loaders.insert(url.clone(), l.clone());
        Ok(l)
    }

    /// The plans for every ready directory, as text (what `--dry-run` prints), and how many
    /// directories could not be planned.
    ///
    /// # Errors
    /// The store cannot be listed.
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
                let p = self.loader(&url)?.plan(&self.store, d)?;
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
    ///
    /// # Errors
    /// The store cannot be listed (directory failures are in the outcome).
    pub async fn poll(&mut self) -> Result<PollOutcome> {
        let s = scan(&self.store, &self.key_pattern).await?;
        let mut out = PollOutcome::default();
        for (dir, e) in s.invalid {
            tracing::error!(directory = %dir, error = %e, "invalid manifest; directory not loaded");
            metrics::counter!("blueshift_invalid_manifests_total").increment(1);
            out.failed.push((dir, e.into()));
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
                Err(e) => {
                    tracing::error!(directory = %d.directory, error = %e, "directory not loaded");
                    self.back_off(&d.directory);
                    out.failed.push((d.directory.clone(), e));
                }
            }
        }
        let store = &self.store;
        let results: Vec<(String, redshift_upsert::Result<LoadReport>)> =
            futures::stream::iter(jobs)
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
                    let wait = self.back_off(&dir);
                    tracing::error!(directory = %dir, error = %e, retry_in = ?wait, "load failed; rolled back, files kept");
                    out.failed.push((dir, e.into()));
                }
            }
        }
        metrics::gauge!("blueshift_directories_deferred").set(out.deferred as f64);
        Ok(out)
    }

    /// Records a failure of `dir` and returns how long it now waits.
    fn back_off(&mut self, dir: &str) -> Duration {
        let (steps, until) = self.backoff.entry(dir.to_string()).or_insert_with(|| {
            let steps = ExponentialBuilder::new()
                .with_min_delay(self.args.poll_interval)
                .with_max_delay(MAX_DIRECTORY_BACKOFF)
                .without_max_times()
                .build();
            (steps, Instant::now())
        });
        let wait = steps.next().unwrap_or(MAX_DIRECTORY_BACKOFF);
        *until = Instant::now() + wait;
        wait
    }
}

/// Describes the service's metrics (once per process is enough; later calls change nothing).
pub fn describe_metrics() {
    metrics::describe_counter!(
        "blueshift_polls_total",
        "Scans of the store for ready directories."
    );
    metrics::describe_counter!(
        "blueshift_scan_failures_total",
        "Scans that failed (the store could not be listed)."
    );
    metrics::describe_counter!(
        "blueshift_invalid_manifests_total",
        "Directories skipped because their manifest is invalid."
    );
    metrics::describe_gauge!(
        "blueshift_directories_deferred",
        "Ready directories waiting out their retry backoff at the last scan."
    );
}

/// Runs the service as the flags say until it is done (`--once`, `--dry-run`) or `stop`
/// fires; a scan in progress when it fires finishes first (each load commits or rolls back).
///
/// # Errors
/// Bad flags or an unopenable store ([`Error::is_config`]); with `--once` or `--dry-run`, a
/// store that cannot be listed. Failed directories are counted in the [`Outcome`].
pub async fn run(args: Args, stop: CancellationToken) -> Result<Outcome> {
    describe_metrics();
    let once = args.once;
    let dry = args.dry_run;
    let interval = args.poll_interval;
    let mut svc = Service::new(args)?;
    let mut outcome = Outcome::default();
    if dry {
        let (text, failed) = svc.dry_run().await?;
        outcome.plans = Some(text);
        outcome.failed = failed as u64;
        return Ok(outcome);
    }
    if once {
        let o = svc.poll().await?;
        outcome.polls = 1;
        outcome.loaded = o.loaded.len() as u64;
        outcome.failed = o.failed.len() as u64;
        return Ok(outcome);
    }
    tracing::info!(store = %svc.store.url, "blueshift watching");
    while !stop.is_cancelled() {
        metrics::counter!("blueshift_polls_total").increment(1);
        outcome.polls += 1;
        match svc.poll().await {
            Ok(o) => {
                outcome.loaded += o.loaded.len() as u64;
                outcome.failed += o.failed.len() as u64;
            }
            Err(e) => {
                metrics::counter!("blueshift_scan_failures_total").increment(1);
                tracing::error!(error = %e, "scan failed");
            }
        }
        let wait = interval.mul_f64(0.9 + fastrand::f64() * 0.2);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => {}
        }
    }
    tracing::info!(
        polls = outcome.polls,
        loaded = outcome.loaded,
        failed = outcome.failed,
        "blueshift stopped"
    );
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_what_the_flags_default_to() {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: Args,
        }
        let parsed = <P as clap::Parser>::try_parse_from(["b", "--store=", "--warehouse="])
            .unwrap()
            .a;
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Args::default()));
    }

    #[test]
    fn allowed_servers_parse_and_match() {
        let a = AllowedServer::parse("DB.example:5439").unwrap();
        assert!(a.allows("db.example", 5439));
        assert!(!a.allows("db.example", 5432));
        assert!(!a.allows("db.example.evil", 5439));
        let any_port = AllowedServer::parse("db.example").unwrap();
        assert!(any_port.allows("db.example", 1));
        let v6 = AllowedServer::parse("[::1]:5432").unwrap();
        assert!(v6.allows("::1", 5432));
        assert!(AllowedServer::parse("user@host").is_err());
        assert!(AllowedServer::parse("host:notaport").is_err());
        assert!(AllowedServer::parse("").is_err());
    }

    #[test]
    fn flags_are_checked_before_the_store_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("never-created");
        let args = |allow: &str| Args {
            store: format!("file://{}", store.display()),
            warehouse: "sqlite:///tmp/x.db".into(),
            allow_manifest_warehouse: vec![allow.into()],
            ..Args::default()
        };
        let e = Service::new(args("a@b")).err().unwrap();
        assert!(e.is_config());
        assert!(e.to_string().contains("--allow-manifest-warehouse"), "{e}");
        assert!(!store.exists());
        assert!(Service::new(args("db:5432")).is_ok());
        assert!(store.exists());
    }
}
