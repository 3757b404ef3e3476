//! `blueshift`: watch object storage and load directories of data files into the warehouse
//! with upserts (the `blueshift` service crate), with the process lifecycle of
//! `service-lifecycle` (flags, `BLUESHIFT_*` variables, `--config FILE`, logging, metrics,
//! SIGTERM/SIGINT, exit codes).
//!
//! Exit status: with `--once` / `--dry-run`, 0 when every ready directory loaded (planned),
//! 1 otherwise; 0 after a clean stop (SIGTERM/SIGINT) of the daemon; 2 on bad flags or
//! configuration.

use std::process::ExitCode;

use lifecycle::{BadConfig, Exit};

/// Flags of `blueshift`: the service's, and the process's (`--config`, `--log-format`,
/// `--drain-timeout`, metrics sinks).
#[derive(Debug, clap::Parser)]
#[command(
    name = "blueshift",
    version,
    about = "Load object-storage files into the warehouse with upserts"
)]
pub struct BlueshiftArgs {
    /// The service.
    #[command(flatten)]
    pub service: blueshift::Args,
    /// The process.
    #[command(flatten)]
    pub process: lifecycle::ProcessArgs,
}

/// Runs the service until it is done (`--once`, `--dry-run`) or stopped (SIGTERM/SIGINT);
/// prints `--dry-run`'s plans on stdout.
pub fn run(args: BlueshiftArgs) -> ExitCode {
    let BlueshiftArgs { service, process } = args;
    let one_shot = service.once || service.dry_run;
    lifecycle::run("blueshift", &process, move |stop| async move {
        let outcome = blueshift::run(service, stop).await.map_err(|e| {
            if e.is_config() {
                BadConfig::wrap(e)
            } else {
                e.into()
            }
        })?;
        if let Some(plans) = &outcome.plans {
            print!("{plans}");
        }
        Ok(if one_shot && !outcome.succeeded() {
            Exit::WorkFailed
        } else {
            Exit::Done
        })
    })
}
