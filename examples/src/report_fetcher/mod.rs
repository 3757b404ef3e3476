//! `report-fetcher`: downloads one report per (client, day) from a rate-limited reporting
//! API, converts it (currency through a rates table, mass units to grams) and uploads it to
//! object storage, each report an independent state machine run by the `state-machine`
//! executor: `downloadable -> transformable -> uploadable -> completed`.
//!
//! The API is a real HTTP server started on 127.0.0.1 inside the program ([`api`]), with
//! latency, `429` + `Retry-After` and random `503`s. `--serial` runs the naive baseline
//! instead: one report after another, a failure retries the whole report.
//!
//! After the run every expected object is read back and compared with the conversion of the
//! report the API serves. The last line printed is
//! `completed=N dead=N attempts=N elapsed=SECONDS throughput=UNITS_PER_SECOND`.

pub mod api;
pub mod convert;
pub mod fetcher;

use std::collections::HashSet;
use std::io::IsTerminal;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use lifecycle::{CancellationToken, Exit};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore};
use state_machine::{DeadLetter, Executor, Journal, Quota, Report, RetryPolicy, Unit, run_serial};

use self::api::{Api, ApiConfig};
use self::convert::{convert, object_key, raw_report};
use self::fetcher::{Fetcher, ReportState, unit_id};

/// Flags of the `report-fetcher` program.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "report-fetcher",
    about = "Download, convert and upload one report per client and day, each an independent state machine"
)]
pub struct Args {
    /// Number of clients.
    #[arg(long, default_value_t = 50)]
    pub clients: u32,
    /// Number of days (from 2026-01-01).
    #[arg(long, default_value_t = 20)]
    pub days: u32,
    /// Transitions running at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// At most this many downloads at once (0: no limit beyond --concurrency).
    #[arg(long, default_value_t = 0)]
    pub download_concurrency: usize,
    /// At most this many downloads started per second, GCRA (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub download_rate: u32,
    /// Fraction of API requests answered 503 (transient).
    #[arg(long, default_value_t = 0.1)]
    pub failure_rate: f64,
    /// Fraction of API requests answered 429 with Retry-After.
    #[arg(long, default_value_t = 0.02)]
    pub throttle_rate: f64,
    /// The Retry-After the API sends with a 429 (`1s`, `100ms`).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = lifecycle::duration::non_negative)]
    pub retry_after: Duration,
    /// Fraction of reports that do not exist (404: permanent, ends as a dead letter).
    #[arg(long, default_value_t = 0.0)]
    pub gone_rate: f64,
    /// The API's latency per request (`20ms`).
    #[arg(long, value_name = "DURATION", default_value = "20ms", value_parser = lifecycle::duration::non_negative)]
    pub api_latency: Duration,
    /// Attempts per transition before a report is given up.
    #[arg(long, default_value_t = 8)]
    pub max_attempts: u32,
    /// Where reports go: a local directory, `s3://bucket/prefix`, `file:///dir` or
    /// `memory:///`.
    #[arg(long, value_name = "URL", default_value = "report-fetcher-out")]
    pub out: String,
    /// Options of the `--out` store (`--store-option aws_endpoint=http://...`); the `AWS_*`
    /// variables are read too.
    #[command(flatten)]
    pub store: lifecycle::store::StoreOptions,
    /// Journal file: resume from it when it exists, record every transition in it.
    #[arg(long, value_name = "PATH")]
    pub journal: Option<PathBuf>,
    /// Run the naive baseline: one report after another, whole-report retry.
    #[arg(long)]
    pub serial: bool,
    /// Skip reading the objects back.
    #[arg(long)]
    pub no_verify: bool,
    /// The process (`--config`, `--log-format`, `--drain-timeout`, metrics).
    #[command(flatten)]
    pub process: lifecycle::ProcessArgs,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Units of this run (after what a journal said was finished).
    pub units: u64,
    /// Units completed by this run.
    pub completed: u64,
    /// Units given up by this run.
    pub dead: u64,
    /// Step attempts.
    pub attempts: u64,
    /// Retries.
    pub retries: u64,
    /// Seconds the run took.
    pub elapsed: f64,
    /// Completed units per second.
    pub throughput: f64,
    /// Objects read back and found correct.
    pub verified: u64,
}

/// The program, with the process lifecycle of `service-lifecycle` (flags, variables
/// `REPORT_FETCHER_*`, `--config`, logging, metrics, SIGTERM/SIGINT): [`run`], exit 0 when
/// the run finished or was interrupted cleanly (resume it with the same `--journal`), 1 on
/// failure, 2 on bad configuration.
pub fn main(args: Args) -> ExitCode {
    let process = args.process.clone();
    lifecycle::run("report-fetcher", &process, move |stop| async move {
        run(&args, stop).await.map(|_| Exit::Done)
    })
}

fn policy(args: &Args) -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(20),
        cap: Duration::from_secs(2),
        max_attempts: args.max_attempts.max(1),
        max_elapsed: None,
    }
}

/// Runs the program: starts the API, runs every report, verifies, prints the summary. When
/// `stop` is cancelled, running transitions finish and the rest stays in the journal.
///
/// # Errors
/// Bad flags, an unopenable store, a failed journal or a failed verification.
pub async fn run(args: &Args, stop: CancellationToken) -> anyhow::Result<Summary> {
    ensure!(
        args.clients > 0 && args.days > 0,
        "--clients and --days must be positive"
    );
    ensure!(
        !(args.serial && args.journal.is_some()),
        "--journal is for the executor; --serial has none"
    );
    let api = Api::start(ApiConfig {
        latency: args.api_latency,
        failure_rate: args.failure_rate,
        throttle_rate: args.throttle_rate,
        retry_after: args.retry_after,
        gone_rate: args.gone_rate,
    })
    .await?;
    let opened = lifecycle::store::open(&args.out, &args.store.store_options)
        .map_err(lifecycle::BadConfig::wrap)?;
    let (store, prefix) = (opened.store, opened.prefix);
    let fetcher = Arc::new(Fetcher::new(api.base_url(), store.clone(), prefix.clone())?);
    tracing::info!(api = %api.base_url(), out = %args.out, "reporting API started");

    let all = (0..args.clients).flat_map(|c| (0..args.days).map(move |d| (c, d)));
    let unit = |(client, day)| {
        Unit::new(
            unit_id(client, day),
            ReportState::Downloadable { client, day },
        )
    };

    let mut previously_dead: Vec<DeadLetter<ReportState>> = Vec::new();
    let report: Report<ReportState>;
    let units: u64;
    if args.serial {
        units = u64::from(args.clients) * u64::from(args.days);
        let bar = ProgressView::start(units, None);
        report = run_serial(fetcher.as_ref(), all.map(unit), policy(args)).await;
        bar.finish().await;
    } else {
        let mut executor = Executor::with_shared(fetcher.clone())
            .concurrency(args.concurrency)
            .retry_policy(policy(args));
        if args.download_concurrency > 0 {
            executor = executor.limit_concurrency("download", args.download_concurrency);
        }
        if let Some(rate) = NonZeroU32::new(args.download_rate) {
            executor = executor.limit_rate("download", Quota::per_second(rate));
        }
        let mut resumed: Vec<Unit<ReportState>> = Vec::new();
        // What the journal knows (finished or not) is not fed in again.
        let mut known = None;
        if let Some(path) = &args.journal {
            let opened = path.clone();
            let (journal, mut recovery) =
                tokio::task::spawn_blocking(move || Journal::open::<ReportState>(opened)).await??;
            if let Some((offset, why)) = &recovery.torn {
                tracing::warn!(journal = %path.display(), offset, %why, "ignored a torn last record");
            }
            println!(
                "journal: completed={} dead={} unfinished={} torn={}",
                recovery.completed.len(),
                recovery.dead.len(),
                recovery.unfinished.len(),
                recovery.torn.is_some()
            );
            previously_dead = std::mem::take(&mut recovery.dead);
            resumed = std::mem::take(&mut recovery.unfinished);
            known = Some(recovery);
            executor = executor.journal(journal);
        }
        let is_new = move |&(c, d): &(u32, u32)| {
            known
                .as_ref()
                .is_none_or(|r: &state_machine::Recovery<ReportState>| !r.contains(&unit_id(c, d)))
        };
        units = resumed.len() as u64 + all.clone().filter(&is_new).count() as u64;
        let input = resumed
            .into_iter()
            .chain(all.clone().filter(is_new).map(unit));
        let bar = ProgressView::start(units, Some(executor.progress()));
        // Ctrl-C / SIGTERM: running transitions finish, the rest stays in the journal.
        let shutdown = executor.shutdown_handle();
        let signals = tokio::spawn(async move {
            stop.cancelled().await;
            tracing::warn!("interrupted: finishing the running transitions");
            shutdown.shutdown();
        });
        report = executor.run_iter(input).await;
        signals.abort();
        bar.finish().await;
        if let Some(e) = &report.journal_error {
            bail!("the journal failed: {e}");
        }
    }
    let counters = api.counters();
    println!(
        "api: requests={} served={} throttled={} failed={} gone={}",
        counters.requests.load(Ordering::Relaxed),
        counters.served.load(Ordering::Relaxed),
        counters.throttled.load(Ordering::Relaxed),
        counters.failed.load(Ordering::Relaxed),
        counters.gone.load(Ordering::Relaxed),
    );
    api.stop().await;
    for d in &report.dead {
        eprintln!(
            "dead letter: {} in {} after {} attempts: {}",
            d.id,
            d.state.name(),
            d.attempts,
            d.error
        );
    }
    let mode = if args.serial { "serial" } else { "executor" };
    println!(
        "summary: mode={mode} units={units} completed={} dead={} attempts={} retries={} elapsed={:.3} throughput={:.1}",
        report.completed,
        report.dead.len(),
        report.attempts,
        report.retries,
        report.elapsed.as_secs_f64(),
        report.throughput()
    );

    if report.shut_down {
        println!(
            "interrupted: unfinished={} (run again with the same --journal to resume)",
            report.unfinished.len()
        );
    }
    let verified = if args.no_verify || report.shut_down {
        0
    } else {
        let dead: HashSet<&str> = report
            .dead
            .iter()
            .chain(&previously_dead)
            .map(|d| d.id.as_str())
            .collect();
        let expected: Vec<(u32, u32)> = (0..args.clients)
            .flat_map(|c| (0..args.days).map(move |d| (c, d)))
            .filter(|&(c, d)| !dead.contains(unit_id(c, d).as_str()))
            .collect();
        let verified = verify(store.as_ref(), &prefix, &expected).await?;
        println!("verified={verified}");
        verified
    };
    let summary = Summary {
        units,
        completed: report.completed,
        dead: report.dead.len() as u64,
        attempts: report.attempts,
        retries: report.retries,
        elapsed: report.elapsed.as_secs_f64(),
        throughput: report.throughput(),
        verified,
    };
    println!(
        "completed={} dead={} attempts={} elapsed={:.3} throughput={:.1}",
        summary.completed, summary.dead, summary.attempts, summary.elapsed, summary.throughput
    );
    Ok(summary)
}

/// Reads every expected report object back and compares it with the conversion of the
/// report the API serves; returns how many were checked.
pub async fn verify(
    store: &dyn ObjectStore,
    prefix: &Path,
    expected: &[(u32, u32)],
) -> anyhow::Result<u64> {
    let checked = futures::stream::iter(expected.iter().copied())
        .map(|(client, day)| async move {
            let location = fetcher::join(prefix, &object_key(client, day));
            let bytes = store
                .get_opts(&location, GetOptions::default())
                .await
                .with_context(|| format!("report object {location} is missing"))?
                .bytes()
                .await
                .with_context(|| format!("cannot read {location}"))?;
            let stored: convert::Report = serde_json::from_slice(&bytes)
                .with_context(|| format!("{location} is not a report"))?;
            let want = convert(&raw_report(client, day))?;
            ensure!(
                stored == want,
                "{location} does not hold the converted report"
            );
            anyhow::Ok(())
        })
        .buffer_unordered(16)
        .try_fold(0u64, |n, ()| async move { Ok(n + 1) })
        .await?;
    Ok(checked)
}

/// A progress bar on a terminal, a log line every few seconds otherwise.
struct ProgressView {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl ProgressView {
    fn start(units: u64, progress: Option<state_machine::Progress>) -> ProgressView {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let tty = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let bar = tty.then(|| {
                let bar = indicatif::ProgressBar::new(units);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:40}] {pos}/{len} {per_sec} {msg}",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar
            });
            let every = if tty {
                Duration::from_millis(100)
            } else {
                Duration::from_secs(2)
            };
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                let Some(progress) = &progress else { continue };
                let s = progress.snapshot();
                let states: Vec<String> = s
                    .states
                    .iter()
                    .map(|c| format!("{}={}+{}", c.state, c.in_flight, c.ready))
                    .collect();
                match &bar {
                    Some(bar) => {
                        bar.set_position(s.completed + s.dead);
                        bar.set_message(format!(
                            "{} waiting={} dead={}",
                            states.join(" "),
                            s.waiting,
                            s.dead
                        ));
                    }
                    None => tracing::info!(
                        completed = s.completed,
                        dead = s.dead,
                        in_flight = s.in_flight,
                        waiting = s.waiting,
                        states = %states.join(" "),
                        "progress"
                    ),
                }
            }
            if let Some(bar) = bar {
                if let Some(progress) = &progress {
                    let s = progress.snapshot();
                    bar.set_position(s.completed + s.dead);
                }
                bar.finish_and_clear();
            }
        });
        ProgressView { stop, task }
    }

    async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
