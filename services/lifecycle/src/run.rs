//! Running a service: runtime, logging, telemetry, signals, drain deadline, exit status.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::ProcessArgs;
use crate::error::BadConfig;
use crate::logging;

/// How long the runtime waits for blocking tasks (a stuck client call) after the service
/// returned, before the process exits anyway.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(5);

/// How a service run ended; the process's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// Everything asked for was done, or the service was stopped and drained: status 0.
    Done,
    /// Some work failed (and was left to be retried by the next run): status 1.
    WorkFailed,
    /// The configuration is wrong (flags, environment, config file): status 2.
    BadConfig,
}

impl Exit {
    /// The process exit status: 0, 1 or 2.
    pub fn code(self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::WorkFailed => 1,
            Exit::BadConfig => 2,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// Runs a service: sets up logging (`--log-format`, `RUST_LOG`), starts a tokio runtime,
/// installs telemetry as the flags say, calls `service` with a token that SIGTERM/SIGINT
/// cancel, gives the service `--drain-timeout` after cancellation to return, sends the final
/// metrics report and returns the exit status.
///
/// An `Err` from the service is logged (with its causes) and exits 1, or 2 when it is a
/// [`BadConfig`]. A service still running at the drain deadline, or one that panicked,
/// exits 1.
pub fn run<F, Fut>(name: &'static str, process: &ProcessArgs, service: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<Exit>> + Send + 'static,
{
    logging::init(process.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(service = name, error = %e, "cannot start the tokio runtime");
            return Exit::WorkFailed.into();
        }
    };
    let exit = runtime.block_on(supervise(name, process, service));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    exit.into()
}

async fn supervise<F, Fut>(name: &'static str, process: &ProcessArgs, service: F) -> Exit
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<Exit>> + Send + 'static,
{
    let telemetry = match process.telemetry.install(name) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(service = name, error = %e, "cannot set up metrics");
            return Exit::BadConfig;
        }
    };
    let token = CancellationToken::new();
    if let Err(e) = crate::shutdown::cancel_on_signals(token.clone()) {
        tracing::error!(service = name, error = %e, "cannot install the signal handlers");
        telemetry.shutdown().await;
        return Exit::WorkFailed;
    }
    let mut task = tokio::spawn(service(token.clone()));
    let joined = tokio::select! {
        r = &mut task => Some(r),
        () = token.cancelled() => None,
    };
    let joined = match joined {
        Some(r) => Some(r),
        None => match tokio::time::timeout(process.drain_timeout, &mut task).await {
            Ok(r) => Some(r),
            Err(_) => {
                task.abort();
                None
            }
        },
    };
    let exit = match joined {
        None => {
            tracing::error!(service = name, deadline = ?process.drain_timeout, "did not stop within the drain deadline; exiting with work unfinished");
            Exit::WorkFailed
        }
        Some(Err(e)) => {
            tracing::error!(service = name, error = %e, "the service task failed");
            Exit::WorkFailed
        }
        Some(Ok(Ok(exit))) => exit,
        Some(Ok(Err(e))) => {
            let exit = if BadConfig::is_in(&e) {
                Exit::BadConfig
            } else {
                Exit::WorkFailed
            };
            tracing::error!(service = name, "{e:#}");
            exit
        }
    };
    // The final report: even a short run is visible in Riemann and the logs.
    telemetry.shutdown().await;
    tracing::info!(service = name, status = exit.code(), "exiting");
    exit
}
