//! Metrics for services: what the [`metrics`] facade records reaches several sinks at once —
//! a Prometheus scrape endpoint, a Riemann reporter and a periodic one-line summary in the logs.
//!
//! Code records metrics through the `metrics` facade (`metrics::counter!` and friends); a
//! service binary installs the global recorder once, with the sinks its flags ask for
//! ([`TelemetryArgs`], flattened into every binary's arguments), and shuts it down before
//! exiting so that Riemann gets a final report, even after a short `--once` run. The global
//! recorder is a fan-out (`metrics-util`) to this crate's [`Recorder`], which the Riemann
//! reporter and the log summary read, and, when the Prometheus endpoint is on, to the recorder
//! of `metrics-exporter-prometheus`, whose text exposition the endpoint serves.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), telemetry::Error> {
//! use std::time::Duration;
//!
//! let telemetry = telemetry::TelemetryBuilder::new("demo")
//!     .prometheus("127.0.0.1:0".parse().expect("an address")) // GET http://ADDR/metrics
//!     .log_summary(Some(Duration::from_secs(60)))
//!     // .riemann(telemetry::RiemannConfig::new("riemann.example.com:5555"))
//!     .install()?;
//!
//! metrics::counter!("demo_jobs_total", "outcome" => "ok").increment(1);
//! metrics::histogram!("demo_job_duration_seconds").record(0.042);
//!
//! // What a scrape of the endpoint gets now:
//! let text = telemetry.render_prometheus().unwrap_or_default();
//! assert!(text.contains("demo_jobs_total{outcome=\"ok\"} 1\n"));
//! assert!(text.contains("demo_job_duration_seconds_bucket{le=\"0.025\"} 0\n"));
//! assert!(text.contains("demo_job_duration_seconds_bucket{le=\"0.05\"} 1\n"));
//! assert!(text.contains("demo_job_duration_seconds_bucket{le=\"+Inf\"} 1\n"));
//! assert!(text.contains("demo_job_duration_seconds_count 1\n"));
//! // What the Riemann reporter and the log summary read:
//! let snapshot = telemetry.recorder().snapshot();
//! assert_eq!(snapshot.counter("demo_jobs_total", &[("outcome", "ok")]), Some(1));
//! telemetry.shutdown().await; // final Riemann report, last log line
//! # Ok(())
//! # }
//! ```
//!
//! # Metric names: one convention across the workspace
//!
//! - `<crate>_<what>[_<unit>]` in lower `snake_case` ASCII (no dots, no dashes), starting with
//!   the crate or binary that records it: `blueshift_files_loaded_total`,
//!   `bifrost_upload_duration_seconds`, `syslogger_received_bytes_total`.
//! - Counters end in `_total`. Durations are histograms in seconds (`_seconds`), sizes in bytes
//!   (`_bytes`); no milliseconds, no kilobytes.
//! - Labels only for small, bounded sets (`table`, `topic`, `partition`, `outcome`), never for
//!   file names, ids or anything else unbounded.
//! - Describe each metric once (`metrics::describe_counter!(name, unit, text)`): the text
//!   becomes the Prometheus `# HELP` line and the Riemann event's description.
//! - This crate's own metrics: `telemetry_riemann_reports_sent_total` and
//!   `telemetry_riemann_reports_dropped_total`.
//!
//! # Sinks
//!
//! - **Prometheus** ([`prometheus`]): the text exposition (format 0.0.4) of
//!   `metrics-exporter-prometheus` at `GET /metrics`, served by this crate's small HTTP server
//!   (at most 16 concurrent scrapes, 10 s I/O limit, 404 on other paths). Counters and gauges as
//!   such; histograms as Prometheus histograms: cumulative `<name>_bucket{le="..."}` series up
//!   to `le="+Inf"`, `<name>_sum` and `<name>_count` since start, so they aggregate across
//!   instances. Buckets by name suffix: [`prometheus::SECONDS_BUCKETS`] (0.5 ms to 60 s) for
//!   `_seconds`, [`prometheus::BYTES_BUCKETS`] (256 B to 1 GiB) for `_bytes`,
//!   [`prometheus::DEFAULT_BUCKETS`] otherwise; [`TelemetryBuilder::prometheus_buckets`]
//!   changes them. Descriptions become `# HELP` lines. [`Telemetry::render_prometheus`] gives
//!   the same text without HTTP.
//! - **Riemann** ([`riemann`], [`RiemannConfig`]): every interval one `Msg` over TCP (4-byte
//!   big-endian length + protobuf, acknowledged by the server) or UDP. Each counter and gauge
//!   is one event, service `<prefix><service> <name>` (labels appended as `{k=v,...}` and
//!   also sent as attributes); each histogram gives `<prefix><service> <name> count` (all-time)
//!   and `min`, `max`, `mean`, `p50`, `p95`, `p99`, `p999` over the samples since the last
//!   report. Events carry `time`/`time_micros`, state `ok`, the host (default: hostname), the
//!   tags and a TTL (default twice the interval). A report that cannot be delivered is dropped
//!   and counted, never queued; the reporter reconnects with exponential backoff.
//! - **Log summary**: every interval one `tracing` line (target `telemetry`): counters as
//!   `total(+delta)`, gauges, histograms' interval `n`, `p50`, `p99`, `max`.
//!
//! # Histograms
//!
//! This crate's histograms (read by Riemann and the log summary) use fixed memory (about
//! 16 KiB each) and lock-free recording: samples are counted in log-linear buckets (32 per
//! power of two), so quantiles, `min` and `max` are within 1.6 % of the true values; `count`,
//! `sum` and `mean` are exact. Samples below 2^-20 (about
//! 1 µs as seconds, including zero and negatives) or of 2^44 and above fall in open-ended
//! buckets whose estimates are clamped to the exact all-time minimum and maximum.
//!
//! The exporter's histograms (read by Prometheus) queue each sample lock-free (in blocks of
//! samples, so recording allocates once per block, not per sample) until a scrape or the
//! upkeep task, once a second, counts them into the buckets.
//!
//! # Tests
//!
//! A process has one global recorder; tests start sinks with [`TelemetryBuilder::start`]
//! (which does not install anything globally) and record with [`metrics::with_local_recorder`]
//! through [`Telemetry::fanout_recorder`] (every sink), or into their own [`Recorder`] given
//! with [`TelemetryBuilder::recorder`] (Riemann and the log summary only).
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

#[cfg(feature = "clap")]
mod args;
mod fanout;
mod histogram;
pub mod prometheus;
mod recorder;
pub mod riemann;
mod service;
mod summary;

#[cfg(feature = "clap")]
pub use args::TelemetryArgs;
pub use histogram::HistogramStats;
pub use recorder::{Recorder, Snapshot};
pub use riemann::{RiemannConfig, Transport};
pub use service::{Telemetry, TelemetryBuilder};

use std::net::SocketAddr;
use std::time::Duration;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Telemetry was started outside a tokio runtime.
    #[error("telemetry must be started inside a tokio runtime")]
    NoRuntime,
    /// The Prometheus endpoint cannot listen.
    #[error("cannot listen for Prometheus scrapes on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Bucket bounds given for Prometheus histograms are unusable.
    #[error("Prometheus buckets for histograms named *{suffix:?}: {reason}")]
    PrometheusBuckets {
        /// The metric-name suffix they were given for (empty: every other histogram).
        suffix: String,
        /// What is wrong with them.
        reason: &'static str,
    },
    /// Another global `metrics` recorder is installed already.
    #[error("a global metrics recorder is already installed in this process")]
    AlreadyInstalled,
    /// The Riemann address is not `HOST:PORT`, or resolves to nothing.
    #[error("invalid Riemann address {addr:?}: expected HOST:PORT")]
    RiemannAddress {
        /// The address given.
        addr: String,
    },
    /// Reconnection to Riemann is deferred after failures.
    #[error("Riemann {addr}: not connected, next attempt in {remaining:?}")]
    RiemannBackoff {
        /// The server.
        addr: String,
        /// Time left before the next connection attempt.
        remaining: Duration,
    },
    /// Connecting, sending or reading the answer took too long.
    #[error("Riemann {addr}: {op} timed out after {timeout:?}")]
    RiemannTimeout {
        /// The server.
        addr: String,
        /// What was being done.
        op: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// An I/O error with the Riemann server.
    #[error("Riemann {addr}: {op}: {source}")]
    RiemannIo {
        /// The server.
        addr: String,
        /// What was being done.
        op: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// A report could not be encoded.
    #[error("Riemann {addr}: encoding a report: {source}")]
    RiemannEncode {
        /// The server.
        addr: String,
        /// The cause.
        source: prost::EncodeError,
    },
    /// The server answered with something that is not a `Msg`.
    #[error("Riemann {addr}: cannot decode the answer: {source}")]
    RiemannDecode {
        /// The server.
        addr: String,
        /// The cause.
        source: prost::DecodeError,
    },
    /// The server's answer announces more bytes than accepted.
    #[error("Riemann {addr}: answer of {len} bytes exceeds the limit of {max}")]
    RiemannReplyTooLarge {
        /// The server.
        addr: String,
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The server answered `ok: false` (or no `ok`).
    #[error("Riemann {addr}: report refused: {message}")]
    RiemannRejected {
        /// The server.
        addr: String,
        /// The server's `error` text.
        message: String,
    },
}
