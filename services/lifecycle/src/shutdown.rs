//! Signals to a cancellation token: the first SIGTERM or SIGINT cancels it, a second one exits
//! the process at once.

use tokio_util::sync::CancellationToken;

/// The exit status after a second signal: the service was told to stop and then told again
/// not to wait (128 + SIGINT, as shells report an interrupted program).
pub const SECOND_SIGNAL_EXIT: i32 = 130;

/// Spawns a task on the current tokio runtime that cancels `token` on the first SIGTERM or
/// SIGINT (Ctrl-C) and exits the process with status [`SECOND_SIGNAL_EXIT`] on the second.
/// The task ends when the token is cancelled by anyone else and no signal came.
///
/// # Errors
/// No tokio runtime, or the signal handlers cannot be installed.
pub fn cancel_on_signals(token: CancellationToken) -> std::io::Result<()> {
    let handle = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    let mut signals = Signals::install()?;
    handle.spawn(async move {
        let first = tokio::select! {
            s = signals.next() => s,
            () = token.cancelled() => return,
        };
        tracing::info!(
            signal = first,
            "stopping: finishing accepted work (a second signal exits at once)"
        );
        token.cancel();
        let second = signals.next().await;
        tracing::error!(
            signal = second,
            "second signal: exiting now, work in flight is abandoned"
        );
        std::process::exit(SECOND_SIGNAL_EXIT);
    });
    Ok(())
}

#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals)
    }

    async fn next(&mut self) -> &'static str {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            // No handler: never resolve rather than pretend a signal came.
            Err(_) => std::future::pending().await,
        }
    }
}
