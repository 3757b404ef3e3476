//! Tiny programs wiring the workspace's crates together. Each binary in `src/bin` parses
//! its flags and calls one function of the module named after it.
#![warn(missing_docs)]

pub mod pipeline;
pub mod rabbit_to_kafka;
pub mod report_fetcher;
