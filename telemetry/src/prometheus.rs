//! The Prometheus scrape endpoint: text exposition format 0.0.4 over a minimal HTTP/1.1 server.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use metrics::Key;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::recorder::Recorder;

/// Concurrent scrape connections served at most; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;
/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client gets to send its request and read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes `name` with every character Prometheus does not allow in metric names replaced by `_`.
fn push_name(out: &mut String, name: &str, label_name: bool) {
    for (i, c) in name.chars().enumerate() {
        let ok = c.is_ascii_alphabetic()
            || c == '_'
            || (c == ':' && !label_name)
            || (c.is_ascii_digit() && i > 0);
        out.push(if ok { c } else { '_' });
    }
    if name.is_empty() {
        out.push('_');
    }
}

fn push_labels(out: &mut String, key: &Key, extra: Option<(&str, &str)>) {
    let mut labels = key
        .labels()
        .map(|l| (l.key(), l.value()))
        .chain(extra)
        .peekable();
    if labels.peek().is_none() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in labels.enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_name(out, k, true);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

fn push_header(out: &mut String, recorder: &Recorder, name: &str, kind: &str) {
    if let Some(d) = recorder.description(name) {
        out.push_str("# HELP ");
        push_name(out, name, false);
        out.push(' ');
        for c in d.text.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('\n');
    }
    out.push_str("# TYPE ");
    push_name(out, name, false);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// Renders every series of `recorder` in the Prometheus text format (version 0.0.4).
///
/// Counters and gauges keep their names (characters Prometheus does not allow become `_`);
/// histograms are rendered as summaries: `name{quantile="0.5"}` (and 0.95, 0.99, 0.999) over
/// all samples since start, plus `name_sum` and `name_count`.
pub fn render(recorder: &Recorder) -> String {
    let snapshot = recorder.snapshot();
    let mut out = String::new();
    let mut last = None;
    for (key, value) in &snapshot.counters {
        if last != Some(key.name()) {
            push_header(&mut out, recorder, key.name(), "counter");
            last = Some(key.name());
        }
        push_name(&mut out, key.name(), false);
        push_labels(&mut out, key, None);
        let _ = writeln!(out, " {value}");
    }
    last = None;
    for (key, value) in &snapshot.gauges {
        if last != Some(key.name()) {
            push_header(&mut out, recorder, key.name(), "gauge");
            last = Some(key.name());
        }
        push_name(&mut out, key.name(), false);
        push_labels(&mut out, key, None);
        out.push(' ');
        push_value(&mut out, *value);
        out.push('\n');
    }
    last = None;
    for (key, stats) in &snapshot.histograms {
        if last != Some(key.name()) {
            push_header(&mut out, recorder, key.name(), "summary");
            last = Some(key.name());
        }
        for (q, v) in [
            ("0.5", stats.p50),
            ("0.95", stats.p95),
            ("0.99", stats.p99),
            ("0.999", stats.p999),
        ] {
            push_name(&mut out, key.name(), false);
            push_labels(&mut out, key, Some(("quantile", q)));
            out.push(' ');
            push_value(&mut out, if stats.count == 0 { f64::NAN } else { v });
            out.push('\n');
        }
        push_name(&mut out, key.name(), false);
        out.push_str("_sum");
        push_labels(&mut out, key, None);
        out.push(' ');
        push_value(&mut out, stats.sum);
        out.push('\n');
        push_name(&mut out, key.name(), false);
        out.push_str("_count");
        push_labels(&mut out, key, None);
        let _ = writeln!(out, " {}", stats.count);
    }
    out
}

/// Serves scrapes on `listener` until `stop` changes or its sender is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    recorder: Recorder,
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
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(IO_TIMEOUT, answer(stream, &recorder)).await;
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
async fn answer(mut stream: TcpStream, recorder: &Recorder) -> std::io::Result<()> {
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
        ("GET", "/metrics" | "/") => respond(&mut stream, "200 OK", &render(recorder)).await,
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
    fn renders_types_help_labels_and_summaries() {
        let r = Recorder::new();
        metrics::with_local_recorder(&r, || {
            metrics::describe_counter!("app_jobs_total", "Jobs done.\nReally.");
            metrics::counter!("app_jobs_total", "kind" => "a\"b").increment(2);
            metrics::counter!("app.dotted").increment(1);
            metrics::gauge!("app_depth").set(f64::INFINITY);
            metrics::histogram!("app_seconds").record(2.0);
        });
        let text = render(&r);
        let expected = "# TYPE app_dotted counter\napp_dotted 1\n\
            # HELP app_jobs_total Jobs done.\\nReally.\n# TYPE app_jobs_total counter\n\
            app_jobs_total{kind=\"a\\\"b\"} 2\n\
            # TYPE app_depth gauge\napp_depth +Inf\n\
            # TYPE app_seconds summary\n\
            app_seconds{quantile=\"0.5\"} 2\napp_seconds{quantile=\"0.95\"} 2\n\
            app_seconds{quantile=\"0.99\"} 2\napp_seconds{quantile=\"0.999\"} 2\n\
            app_seconds_sum 2\napp_seconds_count 1\n";
        assert_eq!(text, expected);
    }
}
