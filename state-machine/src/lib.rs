//! An executor for many independent, idempotent units of work, each a small state machine.
//!
//! A unit is an id and a serde-serialisable state (e.g. `Downloadable -> Transformable ->
//! Uploadable -> completed`). You supply a [`Machine`]: given a state, its `step` performs the
//! transition the state names and returns the next state or [`Transition::Completed`], or a
//! [`StepError`] classified as transient (retry later, optionally after a server-given
//! `Retry-After`) or permanent.
//!
//! The [`Executor`]:
//! - runs up to `concurrency` transitions at once; a unit whose transition failed waits in a
//!   timer queue (exponential backoff with full jitter, cap, max attempts, max elapsed: see
//!   [`RetryPolicy`]) while the workers run other units: nothing sleeps a worker;
//! - honours per-state concurrency limits and per-state rate limits (GCRA, via `governor`)
//!   without holding back other states;
//! - pulls units from a `Stream` or iterator only as capacity frees, so memory is bounded by
//!   the units held (running, ready, waiting to retry), never by the input's size;
//! - ends units past their attempts, or with a permanent error, as [`DeadLetter`]s holding the
//!   last state, the last error and the attempt count, all returned in the [`Report`];
//! - stops on [`Shutdown::shutdown`]: running transitions finish, every unfinished unit comes
//!   back in [`Report::unfinished`] with its current state;
//! - optionally writes a [`Journal`] (an append-only Baldr file of `(id, state)` records)
//!   after every transition, from which [`Executor::resume`] continues after a crash;
//! - shows a live [`Snapshot`] (through [`Progress`]), `metrics` counters and histograms per
//!   state (`state_machine_transitions_total`, `state_machine_failures_total`,
//!   `state_machine_retries_total`, `state_machine_transition_seconds`, plus
//!   `state_machine_units_{admitted,completed,dead}_total` and the gauges
//!   `state_machine_in_flight`, `state_machine_waiting`), and a `tracing` span per unit.
//!
//! ```
//! use std::time::Duration;
//! use state_machine::{Executor, Machine, RetryPolicy, StepError, Transition, Unit};
//!
//! #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
//! enum Report { Downloadable, Transformable(u32), Uploadable(u32) }
//!
//! struct Reports;
//! impl Machine for Reports {
//!     type State = Report;
//!     fn state_name(&self, s: &Report) -> &'static str {
//!         match s {
//!             Report::Downloadable => "download",
//!             Report::Transformable(_) => "transform",
//!             Report::Uploadable(_) => "upload",
//!         }
//!     }
//!     async fn step(&self, id: &str, s: &Report) -> Result<Transition<Report>, StepError> {
//!         match s {
//!             Report::Downloadable if id == "gone" => Err(StepError::permanent("404 Not Found")),
//!             Report::Downloadable => Ok(Transition::Next(Report::Transformable(7))),
//!             Report::Transformable(v) => Ok(Transition::Next(Report::Uploadable(v * 2))),
//!             Report::Uploadable(_) => Ok(Transition::Completed),
//!         }
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut units: Vec<_> = (0..10).map(|i| Unit::new(format!("r{i}"), Report::Downloadable)).collect();
//! units.push(Unit::new("gone", Report::Downloadable));
//! let report = Executor::new(Reports)
//!     .concurrency(4)
//!     .limit_concurrency("download", 2)
//!     .retry_policy(RetryPolicy { max_attempts: 3, ..RetryPolicy::default() })
//!     .run_iter(units)
//!     .await;
//! assert_eq!(report.completed, 10);
//! assert_eq!(report.dead.len(), 1);
//! assert_eq!(report.dead[0].id, "gone");
//! # });
//! ```
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod error;
mod executor;
mod journal;
mod machine;
mod policy;
mod serial;
mod snapshot;

pub use error::Error;
pub use executor::{Executor, Report, Shutdown};
pub use governor::Quota;
pub use journal::{Journal, Recovery};
pub use machine::{DeadLetter, ErrorKind, Machine, StepError, Transition, Unit};
pub use policy::RetryPolicy;
pub use serial::run_serial;
pub use snapshot::{Progress, Snapshot, StateCounts};
