//! Metrics for services: one [`metrics`] recorder read by several sinks at once —
//! a Prometheus scrape endpoint, a Riemann reporter and a periodic one-line summary in the logs.
//!
//! Code records metrics through the `metrics` facade (`metrics::counter!` and friends); a
//! service binary installs this crate's [`Recorder`] once, with the sinks its flags ask for
//! ([`TelemetryArgs`], flattened into every binary's arguments), and shuts it down before
//! exiting so that Riemann gets a final report, even after a short `--once` run.
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
//! let text = telemetry::prometheus::render(telemetry.recorder());
//! assert!(text.contains("demo_jobs_total{outcome=\"ok\"} 1\n"));
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
//! - **Prometheus** ([`prometheus`]): text format 0.0.4 at `GET /metrics`. Counters and gauges
//!   as such, histograms as summaries (quantiles 0.5/0.95/0.99/0.999 since start, `_sum`,
//!   `_count`).
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
//! Histograms use fixed memory (about 16 KiB each) and lock-free recording: samples are
//! counted in log-linear buckets (32 per power of two), so quantiles, `min` and `max` are within
//! 1.6 % of the true values; `count`, `sum` and `mean` are exact. Samples below 2^-20 (about
//! 1 µs as seconds, including zero and negatives) or of 2^44 and above fall in open-ended
//! buckets whose estimates are clamped to the exact all-time minimum and maximum.
//!
//! # Tests
//!
//! A process has one global recorder; tests build their own [`Recorder`], record into it with
//! [`metrics::with_local_recorder`] and start sinks with [`TelemetryBuilder::recorder`] and
//! [`TelemetryBuilder::start`] (which does not install anything globally).
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

#[cfg(feature = "clap")]
mod args;
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
