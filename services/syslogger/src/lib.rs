//! `syslogger`: syslog over TCP, TLS, UDP and RELP into Kafka, with backpressure instead of
//! drops, no expiry inside the producer, RELP acknowledged only after Kafka acknowledged, and
//! nothing lost on shutdown.
//!
//! - **Listeners** ([`Args`]): TCP (`--listen`), RELP (`--relp-listen`, rsyslog's
//!   `omrelp`), UDP (`--udp-listen`, lossy and counted); TLS on TCP and RELP with
//!   `--tls-cert`/`--tls-key` (and client certificates with `--tls-client-ca`).
//! - **Framing** ([`Decoder`]): RFC 6587 octet counting and LF-terminated lines,
//!   auto-detected per frame; oversized frames truncated (or dead-lettered), counted, and
//!   the stream kept in sync whatever the read boundaries.
//! - **Parsing** ([`Parser`]): RFC 5424 and RFC 3164 through `syslog_loose`; a message that
//!   does not parse is forwarded raw and counted.
//! - **Payloads** ([`Format`]): `raw`, `json`, or the original Go syslogger's `original`.
//! - **Backpressure**: a byte budget (`--max-in-flight-bytes`) across connections; when it
//!   is full sockets are not read. `message.timeout.ms` is infinite unless set: during a
//!   broker outage reading pauses, and nothing expires.
//! - **Dead letters** (`--dead-letter`): what Kafka refuses for good goes to a topic or a
//!   Baldr file, with the reason.
//! - **Shutdown** ([`run`]): stop accepting, read what clients sent, wait for every
//!   delivery; what is not delivered by the deadline is spilled to a Baldr file
//!   (`--spill-dir`) that the next start sends first ([`Outcome::spill_file`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bytes::BytesMut;
//! use syslogger::{Decoder, Frame, Framing, Parser};
//!
//! // Octet-counted frames and lines, however the reads split them.
//! let mut decoder = Decoder::new(Framing::Auto, 64 * 1024);
//! let mut buf = BytesMut::from(&b"27 <34>Oct 11 22:14:15 h su: x<13>Oct 11 22:14:16 h app: line\n"[..]);
//! let mut frames = Vec::new();
//! while let Some(Frame::Message(f)) = decoder.decode(&mut buf, false) {
//!     frames.push(f);
//! }
//! assert_eq!(frames.len(), 2);
//! let m = Parser::default().parse(std::str::from_utf8(&frames[1])?, chrono::Utc::now());
//! assert_eq!((m.hostname, m.appname, m.message), (Some("h"), Some("app"), "line"));
//!
//! // The service itself: no listener given, so it refuses to start (a configuration
//! // error, exit status 2 in the binary).
//! let args = syslogger::Args { brokers: "127.0.0.1:9092".into(), ..Default::default() };
//! let err = syslogger::run(args, lifecycle::CancellationToken::new()).await.unwrap_err();
//! assert!(err.is_config());
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod conn;
mod error;
mod format;
mod forward;
mod framing;
mod parse;
mod relp;
mod route;
mod service;
mod spill;
mod tls;

pub use conn::Oversize;
pub use error::{Error, Result};
pub use format::{Format, encode};
pub use framing::{Decoder, Frame, Framing, MAX_COUNT_DIGITS};
pub use parse::{Message, Parser, Protocol, facility_name, severity_name};
pub use relp::{Command as RelpCommand, Decoder as RelpDecoder, InvalidFrame, RelpFrame};
pub use route::{KeySpec, Template};
pub use service::{
    Args, Bound, DEFAULT_IN_FLIGHT_BYTES, DEFAULT_MAX_FRAME, Outcome, describe_metrics, run,
    run_with,
};
pub use spill::{Envelope, read_envelopes, spill_files};
