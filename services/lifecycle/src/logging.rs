//! Logging set-up, the same for every binary: `tracing` to stderr, `RUST_LOG` honoured (default
//! level [`DEFAULT_LEVEL`]), colour only when stderr is a terminal, JSON lines on request.

use std::io::IsTerminal;

/// The level logged when `RUST_LOG` is unset or invalid.
pub const DEFAULT_LEVEL: &str = "info";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal only).
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Installs the global `tracing` subscriber. A second call (a subscriber is installed
/// already, e.g. by a test harness) changes nothing.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LEVEL));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    // Ignored when a subscriber exists: the first one set up keeps the process's logs.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}
