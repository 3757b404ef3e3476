//! The process part of every service binary and example program of the workspace, written
//! once: a service is a library function that runs until a [`CancellationToken`] fires and
//! returns an [`Exit`]; this crate does everything around it.
//!
//! - **Configuration** ([`parse`]): the binary's clap flags, each also read from an
//!   environment variable `<SERVICE>_<LONG_FLAG>` (e.g. `BLUESHIFT_POLL_INTERVAL`), and from
//!   an optional `--config FILE` (TOML whose keys are the long flag names,
//!   `poll-interval = "30s"`). Precedence: flags > environment > file > defaults. Unknown
//!   keys in the file are errors naming the file and the key.
//! - **Logging** ([`logging::init`]): `tracing` to stderr, `RUST_LOG` honoured, one default
//!   level (`info`), colour only on a terminal, `--log-format json` for log shippers.
//! - **Running** ([`run`]): telemetry installed from the flags ([`telemetry::TelemetryArgs`]),
//!   SIGTERM and SIGINT cancel the token (a second signal exits at once with status 130),
//!   the service gets `--drain-timeout` to finish what it accepted, then the final metrics
//!   report goes out and the process exits 0 (done), 1 (work failed) or 2 (bad
//!   configuration).
//! - **Durations** ([`duration`]): every duration flag parses with `humantime` (`500ms`,
//!   `30s`, `5m`, `1h 30m`).
//! - **Object storage** (feature `store`, [`store`]): one way to open a store from a URL plus
//!   `--store-option key=value` and the standard `AWS_*` variables.
//!
//! ```
//! use clap::Parser;
//! use lifecycle::{Exit, ProcessArgs};
//!
//! /// A service that counts to a number unless it is stopped first.
//! #[derive(Parser)]
//! struct Args {
//!     /// How far to count.
//!     #[arg(long, default_value_t = 3)]
//!     upto: u32,
//!     #[command(flatten)]
//!     process: ProcessArgs,
//! }
//!
//! async fn count(upto: u32, stop: lifecycle::CancellationToken) -> anyhow::Result<Exit> {
//!     for _ in 0..upto {
//!         if stop.is_cancelled() {
//!             break; // drained: nothing was in flight
//!         }
//!     }
//!     Ok(Exit::Done)
//! }
//!
//! // In `main`: `let args: Args = lifecycle::parse("counter");` reads the real command line
//! // and environment; here the same with a given command line.
//! let args: Args = lifecycle::try_parse_from("counter", ["counter", "--upto", "5"]).unwrap();
//! let upto = args.upto;
//! let code = lifecycle::run("counter", &args.process, move |stop| count(upto, stop));
//! assert_eq!(code, std::process::ExitCode::SUCCESS);
//! ```
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod config;
pub mod duration;
mod error;
pub mod logging;
mod run;
mod shutdown;
#[cfg(feature = "store")]
pub mod store;

pub use config::{ProcessArgs, env_name, parse, try_parse_from};
pub use error::{BadConfig, Error};
pub use run::{Exit, run};
pub use shutdown::{SECOND_SIGNAL_EXIT, cancel_on_signals};
pub use tokio_util::sync::CancellationToken;
