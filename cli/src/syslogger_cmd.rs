//! `syslogger`: syslog over TCP, TLS, UDP and RELP into Kafka (the `syslogger` service
//! crate), with the process lifecycle of `service-lifecycle` (flags, `SYSLOGGER_*`
//! variables, `--config FILE`, logging, metrics, SIGTERM/SIGINT, exit codes).
//!
//! Exit status: 0 after a clean stop (every received message delivered or dead-lettered);
//! 1 when messages were spilled (written to `--spill-dir` for the next start; the log line
//! says how many) or refused without a dead-letter destination, or the drain deadline
//! passed; 2 on bad flags or configuration (including an address that cannot be bound).

use std::process::ExitCode;

use lifecycle::{BadConfig, Exit};

/// Flags of `syslogger`: the service's, and the process's (`--config`, `--log-format`,
/// `--drain-timeout`, metrics sinks).
#[derive(Debug, clap::Parser)]
#[command(
    name = "syslogger",
    version,
    about = "Syslog over TCP, TLS, UDP and RELP into Kafka: backpressure, nothing expires, nothing lost on shutdown"
)]
pub struct SysloggerArgs {
    /// The service.
    #[command(flatten)]
    pub service: syslogger::Args,
    /// The process.
    #[command(flatten)]
    pub process: lifecycle::ProcessArgs,
}

/// Runs the service until SIGTERM/SIGINT, then drains within `--drain-timeout`.
pub fn run(args: SysloggerArgs) -> ExitCode {
    let SysloggerArgs {
        mut service,
        process,
    } = args;
    service.drain_timeout = process.drain_timeout;
    lifecycle::run("syslogger", &process, move |stop| async move {
        let outcome = syslogger::run(service, stop).await.map_err(|e| {
            if e.is_config() {
                BadConfig::wrap(e)
            } else {
                e.into()
            }
        })?;
        if outcome.succeeded() {
            return Ok(Exit::Done);
        }
        let where_to = outcome.spill_file.as_ref().map_or_else(
            || "nowhere (no --spill-dir)".to_string(),
            |p| p.display().to_string(),
        );
        anyhow::bail!(
            "{} messages not delivered: {} spilled to {where_to}, {} refused by Kafka without a dead-letter destination",
            outcome.spilled + outcome.refused,
            outcome.spilled,
            outcome.refused
        )
    })
}
