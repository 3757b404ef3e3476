//! The workspace's command-line tools. Each binary in `src/bin` parses its arguments and calls
//! one function here (or in the library crate it wraps).
#![warn(missing_docs)]

pub mod baldr_cmd;
#[cfg(feature = "bifrost")]
pub mod bifrost_cmd;
#[cfg(feature = "blueshift")]
pub mod blueshift_cmd;
#[cfg(feature = "experiment")]
pub mod experiment_cmd;
#[cfg(feature = "query")]
pub mod query;
#[cfg(feature = "syslogger")]
pub mod syslogger_cmd;
