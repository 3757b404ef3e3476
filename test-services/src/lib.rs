//! Test support shared by the workspace's crates.
//!
//! A test that needs a real service (PostgreSQL, RabbitMQ, an S3 API server) reads the
//! service's URL from an environment variable through [`service_url`]:
//!
//! - variable set: the test runs against it;
//! - variable unset and `REQUIRE_SERVICES` is not `1`: one line saying the test was skipped
//!   and why goes to stderr (uncaptured, so it shows in `cargo test` output), and the test
//!   returns early;
//! - variable unset and `REQUIRE_SERVICES=1` (as `.ci/run` sets it): the test fails.
//!
//! ```
//! # unsafe { std::env::remove_var("REQUIRE_SERVICES") };
//! let Some(url) = test_services::service_url("TEST_EXAMPLE_URL_NEVER_SET", "doc example") else {
//!     return; // skipped
//! };
//! # unreachable!("{url}");
//! ```
#![warn(missing_docs)]

use std::io::Write;

#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "postgres")]
pub mod postgres;

/// The variable naming PostgreSQL for loader tests.
pub const POSTGRES: &str = "TEST_POSTGRES_URL";
/// The variable naming RabbitMQ for AMQP tests.
pub const AMQP: &str = "TEST_AMQP_URL";
/// The variable naming the S3 API server started by `.ci/run`.
pub const S3_ENDPOINT: &str = "TEST_S3_ENDPOINT";
/// The variable that turns a missing service into a failure.
pub const REQUIRE_SERVICES: &str = "REQUIRE_SERVICES";

/// Whether missing services must fail tests (`REQUIRE_SERVICES=1`).
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES).is_ok_and(|v| v.trim() == "1")
}

/// The URL in environment variable `var`, for the test named `test`.
///
/// Returns `None` after printing one uncaptured `skipped` line when the variable is unset or
/// empty and services are not required.
///
/// # Panics
/// When the variable is unset or empty and `REQUIRE_SERVICES=1`: in CI a missing service is
/// a failure, never a skip.
pub fn service_url(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
        _ if services_required() => {
            panic!("{test}: {var} is not set and REQUIRE_SERVICES=1: the service is required")
        }
        _ => {
            // Written to the real stderr: libtest captures `eprintln!`, not the handle.
            let _ = writeln!(
                std::io::stderr(),
                "skipped {test}: {var} is not set (set it, or REQUIRE_SERVICES=1 to fail instead)"
            );
            None
        }
    }
}

/// A name unique to this process and call, for databases objects, buckets, topics and queues
/// that tests create so that concurrent tests never share state.
///
/// Lower-case ASCII letters, digits and `-`/`_` only (as given in `prefix`).
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}{}x{nanos:x}x{n}", std::process::id())
}

/// Creates a bucket named `<prefix><unique>` on the S3 API server at `endpoint`
/// (`http://HOST:PORT`, e.g. [`S3_ENDPOINT`]'s value) with a plain path-style HTTP `PUT`, and
/// returns its name. Bucket names allow lower-case letters, digits and `-` only: `prefix`
/// should keep to those.
///
/// # Panics
/// When the server cannot be reached within 10 s or does not answer `200`.
pub fn create_s3_bucket(endpoint: &str, prefix: &str) -> String {
    use std::io::Read;
    let bucket = unique_name(prefix).replace('_', "-").to_ascii_lowercase();
    let hostport = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&hostport)
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("S3 endpoint {endpoint}: not HOST:PORT"));
    let timeout = std::time::Duration::from_secs(10);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
        .unwrap_or_else(|e| panic!("S3 endpoint {endpoint}: {e}"));
    let _ = s.set_read_timeout(Some(timeout));
    let req = format!(
        "PUT /{bucket} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("S3 endpoint {endpoint}: {e}"));
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let head = String::from_utf8_lossy(&resp[..resp.len().min(40)]).to_string();
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "creating bucket {bucket} at {endpoint}: {head}"
    );
    bucket
}

/// Collects what a logger writes, for tests that assert on log lines: give a clone to
/// `tracing_subscriber::fmt().with_writer(move || captured.clone())`, then read
/// [`text`](Self::text).
#[derive(Clone, Debug, Default)]
pub struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLog {
    /// Everything written so far (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_log_keeps_what_was_written() {
        let log = CapturedLog::default();
        let mut writer = log.clone();
        writer.write_all(b"one ").unwrap();
        writer.write_all(b"two").unwrap();
        assert_eq!(log.text(), "one two");
    }

    #[test]
    fn unique_names_differ() {
        let a = unique_name("t_");
        let b = unique_name("t_");
        assert_ne!(a, b);
        assert!(a.starts_with("t_"));
    }

    #[test]
    fn set_variable_is_returned() {
        // PATH is set in every test environment.
        let path = std::env::var("PATH").expect("PATH");
        assert_eq!(service_url("PATH", "t").as_deref(), Some(path.trim()));
    }
}
