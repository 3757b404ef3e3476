//! `bifrost`: archive Kafka topics to object storage as Baldr files (the `bifrost` service
//! crate), with the process lifecycle of `service-lifecycle` (flags, `BIFROST_*` variables,
//! `--config FILE`, logging, metrics, SIGTERM/SIGINT, exit codes).
//!
//! - `bifrost --brokers LIST --group ID --topics REGEX --store URL ...`: the service, until
//!   SIGTERM (exit 0 after a clean stop, 1 on a failure, 2 on bad configuration).
//! - `bifrost verify --store URL [--prefix P] [--deep]`: prints per partition the offsets
//!   covered, gaps and overlaps; exit 1 on an overlap or a damaged object.
//! - `bifrost replay --store URL --group ID --topic T --partition P --from OFFSET`: writes a
//!   replay token (the service, with `--tokens`, replays the partition at its next
//!   assignment, replacing its objects).

use std::process::ExitCode;

use lifecycle::{BadConfig, Exit};

/// Flags of `bifrost`: the service's, and the process's (`--config`, `--log-format`,
/// `--drain-timeout`, metrics sinks); or a subcommand.
#[derive(Debug, clap::Parser)]
#[command(
    name = "bifrost",
    version,
    about = "Archive Kafka topics to object storage as Baldr files, exactly once",
    subcommand_negates_reqs = true
)]
pub struct BifrostArgs {
    /// `verify` or `replay`; without one, the service runs.
    #[command(subcommand)]
    pub command: Option<BifrostCommand>,
    /// The service.
    #[command(flatten)]
    pub service: bifrost::Args,
    /// The process.
    #[command(flatten)]
    pub process: lifecycle::ProcessArgs,
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BifrostCommand {
    /// Report per partition the offsets the archive covers, gaps and overlaps (exit 1 on
    /// an overlap or a damaged object).
    Verify(bifrost::VerifyArgs),
    /// Make the service (with --tokens) archive a partition again from an offset,
    /// replacing its objects, at its next assignment.
    Replay(bifrost::ReplayArgs),
}

fn config_or_failure(e: bifrost::Error) -> anyhow::Error {
    if e.is_config() {
        BadConfig::wrap(e)
    } else {
        e.into()
    }
}

/// Runs the service or a subcommand.
pub fn run(args: BifrostArgs) -> ExitCode {
    let BifrostArgs {
        command,
        service,
        process,
    } = args;
    match command {
        None => lifecycle::run("bifrost", &process, move |stop| async move {
            bifrost::run(service, stop)
                .await
                .map_err(config_or_failure)?;
            Ok(Exit::Done)
        }),
        Some(BifrostCommand::Verify(v)) => {
            lifecycle::run("bifrost", &process, move |_| async move {
                let report = bifrost::verify(&v).await.map_err(config_or_failure)?;
                print!("{}", report.text());
                Ok(if report.ok() {
                    Exit::Done
                } else {
                    Exit::WorkFailed
                })
            })
        }
        Some(BifrostCommand::Replay(r)) => {
            lifecycle::run("bifrost", &process, move |_| async move {
                let said = bifrost::replay(&r).await.map_err(config_or_failure)?;
                print!("{said}");
                Ok(Exit::Done)
            })
        }
    }
}
