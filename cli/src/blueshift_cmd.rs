//! `blueshift`: watch object storage and load directories of data files into the warehouse
//! with upserts (the `redshift-upsert` crate), with the service metrics of `telemetry`.
//!
//! Exit status with `--once` / `--dry-run`: 0 when every ready directory loaded (planned),
//! 1 otherwise; 2 on bad flags or configuration.

use std::process::ExitCode;

use anyhow::Context;

/// Flags of `blueshift`: the service's (each also from a `BLUESHIFT_*` variable) and the
/// metrics sinks' (`--metrics-listen ADDR`, `--riemann HOST:PORT`, `--riemann-interval`, ...).
#[derive(Debug, clap::Parser)]
#[command(
    name = "blueshift",
    version,
    about = "Load object-storage files into the warehouse with upserts"
)]
pub struct BlueshiftArgs {
    /// The service.
    #[command(flatten)]
    pub service: redshift_upsert::service::Args,
    /// Where metrics go.
    #[command(flatten)]
    pub telemetry: telemetry::TelemetryArgs,
}

/// Runs the service until it is done (`--once`, `--dry-run`) or stopped (SIGTERM/SIGINT),
/// then sends the final metrics report. Must be called inside a tokio runtime.
pub async fn run(args: BlueshiftArgs) -> ExitCode {
    let metrics = match args.telemetry.install("blueshift") {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("cannot set up metrics: {e}");
            eprintln!("blueshift: cannot set up metrics: {e}");
            return ExitCode::from(2);
        }
    };
    let result = redshift_upsert::service::run(args.service)
        .await
        .context("blueshift failed");
    // Even a short `--once` run is visible in Riemann.
    metrics.shutdown().await;
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("blueshift: {e:#}");
            ExitCode::from(2)
        }
    }
}
