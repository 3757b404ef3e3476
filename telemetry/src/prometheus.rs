//! The Prometheus scrape endpoint: the text exposition of
//! [`metrics-exporter-prometheus`](metrics_exporter_prometheus) served by a minimal HTTP/1.1
//! server of this crate (`GET /metrics`).
//!
//! Every histogram is exposed as a Prometheus histogram — cumulative `<name>_bucket{le="..."}`
//! series, `+Inf` included, plus `<name>_sum` and `<name>_count` since start — which Prometheus
//! can aggregate across instances (`histogram_quantile(0.99, sum by (le) (rate(..._bucket[5m])))`).
//! The bucket bounds depend on the metric name's suffix: [`SECONDS_BUCKETS`] for `_seconds`,
//! [`BYTES_BUCKETS`] for `_bytes`, [`DEFAULT_BUCKETS`] for every other histogram; a service
//! changes them with [`TelemetryBuilder::prometheus_buckets`](crate::TelemetryBuilder::prometheus_buckets).

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::MissedTickBehavior;

use crate::Error;

/// Bucket upper bounds of histograms named `*_seconds`: 0.5 ms to 1 minute.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Bucket upper bounds of histograms named `*_bytes`: powers of 4 from 256 B to 1 GiB.
pub const BYTES_BUCKETS: &[f64] = &[
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
];

/// Bucket upper bounds of every other histogram (counts, ratios, ...): 1, 2.5, 5 times the
/// powers of ten from 0.001 to 1 000 000.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10_000.0,
    25_000.0,
    50_000.0,
    100_000.0,
    250_000.0,
    500_000.0,
    1_000_000.0,
];

/// Concurrent scrape connections served at most; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;
/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client gets to send its request and read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Time between two drains of the samples recorded into the exporter's histograms (they are
/// queued until then, so this bounds their memory), when no scrape does it first.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Checks bucket bounds: at least one, finite, strictly increasing.
pub(crate) fn check_buckets(suffix: &str, bounds: &[f64]) -> Result<(), Error> {
    let bad = |reason| Error::PrometheusBuckets {
        suffix: suffix.to_string(),
        reason,
    };
    if bounds.is_empty() {
        return Err(bad("no bound"));
    }
    if bounds.iter().any(|b| !b.is_finite()) {
        return Err(bad(
            "a bound is not a finite number (`+Inf` is always added)",
        ));
    }
    if bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err(bad("the bounds are not strictly increasing"));
    }
    Ok(())
}

/// The exporter's recorder: histograms with [`DEFAULT_BUCKETS`], [`SECONDS_BUCKETS`] for names
/// ending in `_seconds` and [`BYTES_BUCKETS`] for `_bytes`, each replaced by `overrides`
/// (`(suffix, bounds)`, the empty suffix standing for every histogram no other suffix matches).
pub(crate) fn build(overrides: &[(String, Vec<f64>)]) -> Result<PrometheusRecorder, Error> {
    let mut fallback = DEFAULT_BUCKETS;
    let mut by_suffix: Vec<(&str, &[f64])> =
        vec![("_seconds", SECONDS_BUCKETS), ("_bytes", BYTES_BUCKETS)];
    for (suffix, bounds) in overrides {
        check_buckets(suffix, bounds)?;
        if suffix.is_empty() {
            fallback = bounds;
        } else if let Some(found) = by_suffix.iter_mut().find(|(s, _)| s == suffix) {
            found.1 = bounds;
        } else {
            by_suffix.push((suffix, bounds));
        }
    }
    let to_error = |suffix: &str| {
        let suffix = suffix.to_string();
        move |e: metrics_exporter_prometheus::BuildError| Error::PrometheusBuckets {
            suffix,
            reason: match e {
                metrics_exporter_prometheus::BuildError::EmptyBucketsOrQuantiles => "no bound",
                _ => "refused by the exporter",
            },
        }
    };
    let mut builder = PrometheusBuilder::new()
        .set_buckets(fallback)
        .map_err(to_error(""))?;
    for (suffix, bounds) in by_suffix {
        builder = builder
            .set_buckets_for_metric(Matcher::Suffix(suffix.to_string()), bounds)
            .map_err(to_error(suffix))?;
    }
    Ok(builder.build_recorder())
}

/// Drains the samples queued in the exporter's histograms every [`UPKEEP_INTERVAL`] until
/// `stop` changes or its sender is dropped.
pub(crate) async fn upkeep(handle: PrometheusHandle, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(UPKEEP_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => handle.run_upkeep(),
            _ = stop.changed() => return,
        }
    }
}

/// Serves scrapes on `listener` until `stop` changes or its sender is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let handle = handle.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(IO_TIMEOUT, answer(stream, &handle)).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "telemetry: accepting a Prometheus scrape failed");
                // Typically out of file descriptors: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request head and writes one response, then closes the connection.
async fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_REQUEST {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_ascii_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics" | "/") => respond(&mut stream, "200 OK", &handle.render()).await,
        ("GET", _) => respond(&mut stream, "404 Not Found", "not found: try /metrics\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "only GET\n").await,
    }
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_buckets_are_valid() {
        for (suffix, bounds) in [
            ("_seconds", SECONDS_BUCKETS),
            ("_bytes", BYTES_BUCKETS),
            ("", DEFAULT_BUCKETS),
        ] {
            check_buckets(suffix, bounds).unwrap();
        }
        assert_eq!(SECONDS_BUCKETS.first(), Some(&0.0005));
        assert_eq!(SECONDS_BUCKETS.last(), Some(&60.0));
        assert_eq!(BYTES_BUCKETS.last(), Some(&f64::from(1u32 << 30)));
    }

    #[test]
    fn bad_buckets_are_refused() {
        for bad in [
            &[][..],
            &[1.0, 1.0],
            &[2.0, 1.0],
            &[1.0, f64::INFINITY],
            &[f64::NAN],
        ] {
            let err = build(&[("_seconds".to_string(), bad.to_vec())]).unwrap_err();
            assert!(
                matches!(&err, Error::PrometheusBuckets { suffix, .. } if suffix == "_seconds"),
                "{bad:?}: {err}"
            );
        }
    }

    /// The `le` bounds of `name`'s `_bucket` series in `text`, in order.
    fn bounds_of(text: &str, name: &str) -> Vec<String> {
        let prefix = format!("{name}_bucket{{le=\"");
        text.lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|l| l.split_once('"').map(|(le, _)| le.to_string()))
            .collect()
    }

    #[test]
    fn buckets_follow_the_name_suffix_and_can_be_replaced() {
        let recorder = build(&[
            ("_bytes".to_string(), vec![10.0, 100.0]),
            ("_rows".to_string(), vec![1.0, 1000.0]),
            (String::new(), vec![0.5]),
        ])
        .unwrap();
        metrics::with_local_recorder(&recorder, || {
            metrics::describe_histogram!("app_wait_seconds", "Waiting.");
            metrics::histogram!("app_wait_seconds").record(0.003);
            metrics::histogram!("app_body_bytes").record(50.0);
            metrics::histogram!("app_batch_rows").record(7.0);
            metrics::histogram!("app_ratio").record(0.25);
        });
        let text = recorder.handle().render();
        let le = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut seconds: Vec<String> = SECONDS_BUCKETS.iter().map(f64::to_string).collect();
        seconds.push("+Inf".to_string());
        assert_eq!(bounds_of(&text, "app_wait_seconds"), seconds, "{text}");
        assert_eq!(
            bounds_of(&text, "app_body_bytes"),
            le(&["10", "100", "+Inf"])
        );
        assert_eq!(
            bounds_of(&text, "app_batch_rows"),
            le(&["1", "1000", "+Inf"])
        );
        assert_eq!(bounds_of(&text, "app_ratio"), le(&["0.5", "+Inf"]));
        for line in [
            "# HELP app_wait_seconds Waiting.",
            "# TYPE app_wait_seconds histogram",
            "app_wait_seconds_bucket{le=\"0.0025\"} 0",
            "app_wait_seconds_bucket{le=\"0.005\"} 1",
            "app_wait_seconds_bucket{le=\"60\"} 1",
            "app_wait_seconds_bucket{le=\"+Inf\"} 1",
            "app_wait_seconds_sum 0.003",
            "app_wait_seconds_count 1",
            "app_body_bytes_bucket{le=\"10\"} 0",
            "app_body_bytes_bucket{le=\"100\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
        assert!(!text.contains("quantile"), "{text}");
    }
}
