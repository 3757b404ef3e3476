//! The sinks against real sockets on 127.0.0.1: a Riemann protocol server written here with the
//! crate's proto types (length-prefixed `Msg` frames, answering `ok`), a UDP receiver, and
//! Prometheus scrapes over HTTP read with a Prometheus text-format parser (`prometheus-parse`).

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_parse::{LineInfo, SampleType, Scrape, Value};
use prost::Message as _;
use telemetry::riemann::proto::{Event, Msg};
use telemetry::{Recorder, RiemannConfig, TelemetryBuilder, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

/// Upper bound for any wait in these tests (never reached when things work).
const PATIENCE: Duration = Duration::from_secs(20);

/// A Riemann TCP server: decodes every frame, hands the `Msg` to the test, answers.
struct RiemannServer {
    addr: SocketAddr,
    received: mpsc::Receiver<Msg>,
    task: JoinHandle<()>,
}

impl RiemannServer {
    async fn start(addr: SocketAddr, answer_ok: bool) -> Self {
        // Rebinding the port a stopped server used may need a moment.
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if attempts < 100 => {
                    attempts += 1;
                    eprintln!("binding {addr}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("binding {addr}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let (tx, received) = mpsc::channel(1024);
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                connections.spawn(serve_connection(stream, tx.clone(), answer_ok));
            }
        });
        Self {
            addr,
            received,
            task,
        }
    }

    /// Stops listening and closes every connection.
    async fn stop(self) -> SocketAddr {
        self.task.abort();
        let _ = self.task.await;
        self.addr
    }

    /// The next message, failing the test after [`PATIENCE`].
    async fn next(&mut self) -> Msg {
        timeout(PATIENCE, self.received.recv())
            .await
            .expect("a Riemann message in time")
            .expect("server running")
    }

    /// Messages until one satisfies `pred` (bounded by [`PATIENCE`] overall).
    async fn until(&mut self, pred: impl Fn(&Msg) -> bool) -> Msg {
        timeout(PATIENCE, async {
            loop {
                let msg = self.received.recv().await.expect("server running");
                if pred(&msg) {
                    return msg;
                }
            }
        })
        .await
        .expect("the expected Riemann message in time")
    }
}

async fn serve_connection(mut stream: TcpStream, tx: mpsc::Sender<Msg>, answer_ok: bool) {
    let mut body = Vec::new();
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        body.resize(u32::from_be_bytes(len) as usize, 0);
        stream.read_exact(&mut body).await.unwrap();
        let msg = Msg::decode(body.as_slice()).expect("a protobuf Msg");
        let _ = tx.send(msg).await;
        let answer = if answer_ok {
            Msg {
                ok: Some(true),
                ..Msg::default()
            }
        } else {
            Msg {
                ok: Some(false),
                error: Some("nope".into()),
                ..Msg::default()
            }
        }
        .encode_to_vec();
        let mut frame = (answer.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&answer);
        if stream.write_all(&frame).await.is_err() {
            return;
        }
    }
}

fn event<'a>(msg: &'a Msg, service: &str) -> &'a Event {
    msg.events
        .iter()
        .find(|e| e.service.as_deref() == Some(service))
        .unwrap_or_else(|| {
            let names: Vec<_> = msg.events.iter().map(|e| e.service.clone()).collect();
            panic!("no event {service:?} in {names:?}")
        })
}

fn counter_in(msg: &Msg, service: &str) -> Option<i64> {
    msg.events
        .iter()
        .find(|e| e.service.as_deref() == Some(service))
        .and_then(|e| e.metric_sint64)
}

/// Records the test metrics through the current `metrics` recorder: `app_jobs_total{outcome=ok}`
/// 42, `app_queue_depth` 2.5, `app_job_seconds` 1, 2, ..., 100 (described, but for the gauge).
fn record_app_metrics() {
    metrics::describe_counter!("app_jobs_total", "Jobs finished.");
    metrics::counter!("app_jobs_total", "outcome" => "ok").increment(41);
    metrics::counter!("app_jobs_total", "outcome" => "ok").increment(1);
    metrics::gauge!("app_queue_depth").set(2.5);
    metrics::describe_histogram!("app_job_seconds", metrics::Unit::Seconds, "Job time.");
    for v in 1..=100 {
        metrics::histogram!("app_job_seconds").record(v as f64);
    }
}

fn recorder_with_metrics() -> Recorder {
    let recorder = Recorder::new();
    metrics::with_local_recorder(&recorder, record_app_metrics);
    recorder
}

#[tokio::test]
async fn final_report_reaches_riemann_with_all_fields() {
    let mut server = RiemannServer::start("127.0.0.1:0".parse().unwrap(), true).await;
    let recorder = recorder_with_metrics();
    let config = RiemannConfig::new(server.addr.to_string())
        .interval(Duration::from_secs(3600)) // only the final report is sent
        .host("test-host")
        .tags(["t1", "t2"])
        .prefix("eu1 ")
        .ttl(Duration::from_secs(30));
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let telemetry = TelemetryBuilder::new("svc")
        .recorder(recorder.clone())
        .riemann(config)
        .start()
        .unwrap();
    telemetry.shutdown().await;
    let msg = server.next().await;

    let jobs = event(&msg, "eu1 svc app_jobs_total{outcome=ok}");
    assert_eq!(jobs.metric_sint64, Some(42));
    assert_eq!(jobs.metric_f, Some(42.0));
    assert_eq!(jobs.state.as_deref(), Some("ok"));
    assert_eq!(jobs.host.as_deref(), Some("test-host"));
    assert_eq!(jobs.tags, ["t1", "t2"]);
    assert_eq!(jobs.ttl, Some(30.0));
    assert_eq!(jobs.description.as_deref(), Some("Jobs finished."));
    assert_eq!(jobs.attributes.len(), 1);
    assert_eq!(jobs.attributes[0].key, "outcome");
    assert_eq!(jobs.attributes[0].value.as_deref(), Some("ok"));
    let micros = jobs.time_micros.unwrap();
    assert!(
        micros >= before,
        "time_micros {micros} before the start {before}"
    );
    assert_eq!(jobs.time, Some(micros / 1_000_000));

    let depth = event(&msg, "eu1 svc app_queue_depth");
    assert_eq!(depth.metric_d, Some(2.5));
    assert_eq!(depth.metric_sint64, None);

    assert_eq!(
        event(&msg, "eu1 svc app_job_seconds count").metric_sint64,
        Some(100)
    );
    let measure = |m: &str| {
        event(&msg, &format!("eu1 svc app_job_seconds {m}"))
            .metric_d
            .unwrap()
    };
    assert_eq!(measure("min"), 1.0);
    assert_eq!(measure("max"), 100.0);
    assert_eq!(measure("mean"), 50.5);
    for (m, want) in [("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p999", 100.0)] {
        let got = measure(m);
        assert!((got - want).abs() / want <= 1.0 / 64.0, "{m}: {got}");
    }
    let p95 = event(&msg, "eu1 svc app_job_seconds p95");
    assert_eq!(p95.description.as_deref(), Some("Job time."));
    assert!(
        p95.attributes
            .iter()
            .any(|a| a.key == "unit" && a.value.as_deref() == Some("seconds"))
    );

    // The reporter's own counters, in the report and in the registry.
    assert_eq!(
        counter_in(&msg, "eu1 svc telemetry_riemann_reports_dropped_total"),
        Some(0)
    );
    let snapshot = recorder.snapshot();
    assert_eq!(
        snapshot.counter("telemetry_riemann_reports_sent_total", &[]),
        Some(1)
    );
    assert_eq!(
        snapshot.counter("telemetry_riemann_reports_dropped_total", &[]),
        Some(0)
    );
    server.stop().await;
}

#[tokio::test]
async fn periodic_reports_resume_after_the_server_restarts() {
    let mut server = RiemannServer::start("127.0.0.1:0".parse().unwrap(), true).await;
    let recorder = Recorder::new();
    let jobs = metrics::with_local_recorder(&recorder, || metrics::counter!("jobs_total"));
    jobs.increment(1);
    let config = RiemannConfig::new(server.addr.to_string())
        .interval(Duration::from_millis(20))
        .backoff(Duration::from_millis(10), Duration::from_millis(50));
    let telemetry = TelemetryBuilder::new("svc")
        .recorder(recorder.clone())
        .riemann(config)
        .start()
        .unwrap();

    server
        .until(|m| counter_in(m, "svc jobs_total") == Some(1))
        .await;
    let addr = server.stop().await;
    jobs.increment(1);
    let mut server = RiemannServer::start(addr, true).await;
    server
        .until(|m| counter_in(m, "svc jobs_total") == Some(2))
        .await;
    telemetry.shutdown().await;
    server.stop().await;
}

#[tokio::test]
async fn reports_are_dropped_and_counted_while_the_server_is_down() {
    // A port nobody listens on (until the server starts below).
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let recorder = Recorder::new();
    let config = RiemannConfig::new(addr.to_string())
        .interval(Duration::from_millis(10))
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
        .timeout(Duration::from_secs(2));
    let telemetry = TelemetryBuilder::new("svc")
        .recorder(recorder.clone())
        .riemann(config)
        .start()
        .unwrap();
    let dropped = || {
        recorder
            .snapshot()
            .counter("telemetry_riemann_reports_dropped_total", &[])
            .unwrap_or(0)
    };
    timeout(PATIENCE, async {
        while dropped() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("three dropped reports in time");

    let mut server = RiemannServer::start(addr, true).await;
    let msg = server
        .until(|m| counter_in(m, "svc telemetry_riemann_reports_dropped_total").is_some())
        .await;
    let reported = counter_in(&msg, "svc telemetry_riemann_reports_dropped_total").unwrap();
    assert!(reported >= 3, "{reported}");
    telemetry.shutdown().await;
    assert!(
        recorder
            .snapshot()
            .counter("telemetry_riemann_reports_sent_total", &[])
            .unwrap()
            >= 2
    );
    server.stop().await;
}

#[tokio::test]
async fn a_refused_report_is_counted_as_dropped() {
    let mut server = RiemannServer::start("127.0.0.1:0".parse().unwrap(), false).await;
    let recorder = recorder_with_metrics();
    let telemetry = TelemetryBuilder::new("svc")
        .recorder(recorder.clone())
        .riemann(RiemannConfig::new(server.addr.to_string()).interval(Duration::from_secs(3600)))
        .start()
        .unwrap();
    telemetry.shutdown().await;
    server.next().await;
    let snapshot = recorder.snapshot();
    assert_eq!(
        snapshot.counter("telemetry_riemann_reports_dropped_total", &[]),
        Some(1)
    );
    assert_eq!(
        snapshot.counter("telemetry_riemann_reports_sent_total", &[]),
        Some(0)
    );
    server.stop().await;
}

#[tokio::test]
async fn udp_reports_are_split_into_datagrams() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let recorder = Recorder::new();
    metrics::with_local_recorder(&recorder, || {
        for i in 0..1000 {
            metrics::counter!("udp_counter_total", "n" => i.to_string()).increment(i);
        }
    });
    let config = RiemannConfig::new(socket.local_addr().unwrap().to_string())
        .interval(Duration::from_secs(3600))
        .transport(Transport::Udp)
        .host("h");
    let telemetry = TelemetryBuilder::new("svc")
        .recorder(recorder)
        .riemann(config)
        .start()
        .unwrap();
    telemetry.shutdown().await;

    let mut seen = std::collections::BTreeMap::new();
    let mut datagrams = 0;
    let mut buf = vec![0u8; 65536];
    timeout(PATIENCE, async {
        while seen.len() < 1000 {
            let n = socket.recv(&mut buf).await.unwrap();
            assert!(
                n <= telemetry::riemann::UDP_MAX_DATAGRAM,
                "datagram of {n} bytes"
            );
            datagrams += 1;
            let msg = Msg::decode(&buf[..n]).expect("one Msg per datagram");
            for e in msg.events {
                assert_eq!(e.host.as_deref(), Some("h"));
                if let Some(n) = e.service.as_deref().and_then(|s| {
                    s.strip_prefix("svc udp_counter_total{n=")
                        .and_then(|s| s.strip_suffix('}'))
                }) {
                    seen.insert(n.parse::<i64>().unwrap(), e.metric_sint64.unwrap());
                }
            }
        }
    })
    .await
    .expect("every event in time");
    assert!(datagrams > 1, "1000 events fit one datagram?");
    assert!(seen.iter().all(|(n, v)| n == v));
}

/// GET `path` over plain HTTP/1.1; returns the status line, the head and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    timeout(PATIENCE, stream.read_to_string(&mut response))
        .await
        .expect("an answer in time")
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a header");
    let status = head.lines().next().unwrap().to_string();
    (status, head.to_string(), body.to_string())
}

/// Parses a scrape with `prometheus-parse`, after checking what that lenient parser lets
/// through: every line is empty, a `# HELP`/`# TYPE` line or a sample, and every sample belongs
/// to a family whose `# TYPE` came before it.
fn parse_scrape(body: &str) -> Scrape {
    let mut typed: Vec<(String, SampleType)> = Vec::new();
    for line in body.lines() {
        match LineInfo::parse(line) {
            LineInfo::Empty | LineInfo::Doc { .. } => {}
            LineInfo::Type {
                metric_name,
                metric_alias,
                sample_type,
            } => typed.push((metric_alias.unwrap_or(metric_name), sample_type)),
            LineInfo::Sample { metric_name, .. } => {
                let family = typed.iter().find(|(name, ty)| {
                    let suffixes: &[&str] = match ty {
                        SampleType::Histogram => &["_bucket", "_sum", "_count"],
                        SampleType::Summary => &["", "_sum", "_count"],
                        _ => &[""],
                    };
                    suffixes.iter().any(|s| metric_name == format!("{name}{s}"))
                });
                assert!(family.is_some(), "sample without # TYPE: {line:?}");
            }
            LineInfo::Ignored => panic!("not Prometheus text format: {line:?}"),
        }
    }
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("a parsable scrape")
}

/// The sample `name` with exactly the labels `labels` (histograms: without `le`).
fn sample<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> &'a Value {
    let found = scrape.samples.iter().find(|s| {
        s.metric == name
            && s.labels.len() == labels.len()
            && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
    });
    match found {
        Some(s) => &s.value,
        None => panic!("no sample {name}{labels:?} in {:#?}", scrape.samples),
    }
}

/// A plain value (counter, gauge or untyped: `_sum` and `_count` of histograms).
fn number(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(scrape, name, labels) {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{name}: not a plain value: {other:?}"),
    }
}

/// Checks that histogram `name{labels}` is a Prometheus histogram (cumulative buckets,
/// strictly increasing `le`, a last `+Inf` bucket equal to `_count`) and returns its buckets
/// as `(le, count)`.
fn histogram(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let Value::Histogram(buckets) = sample(scrape, name, labels) else {
        panic!("{name} is not a histogram");
    };
    let buckets: Vec<(f64, f64)> = buckets.iter().map(|b| (b.less_than, b.count)).collect();
    assert!(buckets.len() >= 2, "{name}: {buckets:?}");
    for w in buckets.windows(2) {
        assert!(w[0].0 < w[1].0, "{name}: le not increasing: {buckets:?}");
        assert!(
            w[0].1 <= w[1].1,
            "{name}: buckets not cumulative: {buckets:?}"
        );
    }
    let (last_le, last_count) = buckets[buckets.len() - 1];
    assert_eq!(last_le, f64::INFINITY, "{name}: no +Inf bucket");
    let count = number(scrape, &format!("{name}_count"), labels);
    assert_eq!(last_count, count, "{name}: +Inf bucket is not _count");
    buckets
}

/// The count of the bucket `le` of `buckets`.
fn bucket(buckets: &[(f64, f64)], le: f64) -> f64 {
    match buckets.iter().find(|(b, _)| *b == le) {
        Some((_, count)) => *count,
        None => panic!("no bucket le={le} in {buckets:?}"),
    }
}

#[tokio::test]
async fn prometheus_endpoint_is_scraped_over_http() {
    let telemetry = TelemetryBuilder::new("svc")
        .prometheus("127.0.0.1:0".parse().unwrap())
        .start()
        .unwrap();
    let addr = telemetry.prometheus_addr().unwrap();
    assert_ne!(addr.port(), 0);
    let facade = telemetry.fanout_recorder();
    metrics::with_local_recorder(&facade, || {
        record_app_metrics();
        metrics::describe_histogram!("app_load_seconds", "Load time per table.");
        for v in [0.0004, 0.003, 0.003, 0.2, 75.0] {
            metrics::histogram!("app_load_seconds", "table" => "t1").record(v);
        }
        metrics::histogram!("app_load_seconds", "table" => "t2").record(1.5);
        metrics::histogram!("app_body_bytes").record(3000.0);
    });

    let (status, head, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    let scrape = parse_scrape(&body);

    // A counter with labels, a gauge, descriptions as # HELP.
    assert_eq!(
        number(&scrape, "app_jobs_total", &[("outcome", "ok")]),
        42.0
    );
    assert_eq!(number(&scrape, "app_queue_depth", &[]), 2.5);
    assert_eq!(
        scrape.docs.get("app_jobs_total").map(String::as_str),
        Some("Jobs finished.")
    );
    assert_eq!(
        scrape.docs.get("app_job_seconds").map(String::as_str),
        Some("Job time.")
    );
    assert!(body.contains("# TYPE app_jobs_total counter\n"), "{body}");
    assert!(body.contains("# TYPE app_queue_depth gauge\n"), "{body}");
    assert!(
        body.contains("# TYPE app_job_seconds histogram\n"),
        "{body}"
    );
    assert!(!body.contains("quantile"), "no summaries any more:\n{body}");

    // 1, 2, ..., 100 seconds in the default `_seconds` buckets.
    let jobs = histogram(&scrape, "app_job_seconds", &[]);
    let les: Vec<f64> = jobs.iter().map(|(le, _)| *le).collect();
    let mut want = telemetry::prometheus::SECONDS_BUCKETS.to_vec();
    want.push(f64::INFINITY);
    assert_eq!(les, want);
    for (le, count) in [
        (0.5, 0.0),
        (1.0, 1.0),
        (2.5, 2.0),
        (10.0, 10.0),
        (60.0, 60.0),
    ] {
        assert_eq!(bucket(&jobs, le), count, "le={le}");
    }
    assert_eq!(bucket(&jobs, f64::INFINITY), 100.0);
    assert_eq!(number(&scrape, "app_job_seconds_sum", &[]), 5050.0);

    // One series per label set, each with its own buckets, sum and count.
    let t1 = histogram(&scrape, "app_load_seconds", &[("table", "t1")]);
    assert_eq!(bucket(&t1, 0.0005), 1.0);
    assert_eq!(bucket(&t1, 0.0025), 1.0);
    assert_eq!(bucket(&t1, 0.005), 3.0);
    assert_eq!(bucket(&t1, 0.25), 4.0);
    assert_eq!(bucket(&t1, 60.0), 4.0);
    assert_eq!(bucket(&t1, f64::INFINITY), 5.0);
    let sum = number(&scrape, "app_load_seconds_sum", &[("table", "t1")]);
    assert!((sum - 75.2064).abs() < 1e-9, "{sum}");
    let t2 = histogram(&scrape, "app_load_seconds", &[("table", "t2")]);
    assert_eq!(bucket(&t2, 1.0), 0.0);
    assert_eq!(bucket(&t2, 2.5), 1.0);
    assert_eq!(
        scrape.docs.get("app_load_seconds").map(String::as_str),
        Some("Load time per table.")
    );
    // `_bytes` histograms get byte buckets.
    let bytes = histogram(&scrape, "app_body_bytes", &[]);
    assert_eq!(bucket(&bytes, 1024.0), 0.0);
    assert_eq!(bucket(&bytes, 4096.0), 1.0);

    // The fan-out fed this crate's registry too (Riemann, log summary).
    let snapshot = telemetry.recorder().snapshot();
    assert_eq!(
        snapshot.counter("app_jobs_total", &[("outcome", "ok")]),
        Some(42)
    );
    assert_eq!(
        snapshot.histogram("app_job_seconds", &[]).map(|h| h.count),
        Some(100)
    );

    // Counters move between scrapes, histograms keep counting since start.
    metrics::with_local_recorder(&facade, || {
        metrics::counter!("app_jobs_total", "outcome" => "ok").increment(8);
        metrics::histogram!("app_job_seconds").record(0.1);
    });
    let (_, _, body) = http_get(addr, "/metrics").await;
    let scrape = parse_scrape(&body);
    assert_eq!(
        number(&scrape, "app_jobs_total", &[("outcome", "ok")]),
        50.0
    );
    let jobs = histogram(&scrape, "app_job_seconds", &[]);
    assert_eq!(bucket(&jobs, 0.1), 1.0);
    assert_eq!(bucket(&jobs, 1.0), 2.0);
    assert_eq!(bucket(&jobs, f64::INFINITY), 101.0);
    assert_eq!(
        telemetry
            .render_prometheus()
            .as_deref()
            .map(parse_scrape)
            .map(|s| number(&s, "app_jobs_total", &[("outcome", "ok")])),
        Some(50.0)
    );

    let (status, _, _) = http_get(addr, "/other").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    telemetry.shutdown().await;
    // Stopped: connections are refused (or closed without an answer).
    let after = TcpStream::connect(addr).await;
    if let Ok(mut stream) = after {
        let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
        let mut rest = Vec::new();
        let n = timeout(PATIENCE, stream.read_to_end(&mut rest)).await;
        assert!(
            matches!(n, Ok(Ok(0)) | Ok(Err(_))),
            "answered after shutdown"
        );
    }
}

#[tokio::test]
async fn buckets_are_set_per_name_suffix() {
    let telemetry = TelemetryBuilder::new("svc")
        .prometheus("127.0.0.1:0".parse().unwrap())
        .prometheus_buckets("_seconds", &[0.1, 1.0])
        .prometheus_buckets("_seconds", &[0.5, 5.0]) // the last wins
        .prometheus_buckets("_rows", &[10.0, 100.0, 1000.0])
        .prometheus_buckets("", &[42.0])
        .start()
        .unwrap();
    metrics::with_local_recorder(&telemetry.fanout_recorder(), || {
        metrics::histogram!("app_wait_seconds").record(1.0);
        metrics::histogram!("app_batch_rows").record(50.0);
        metrics::histogram!("app_ratio").record(0.3);
        metrics::histogram!("app_body_bytes").record(300.0);
    });
    let (_, _, body) = http_get(telemetry.prometheus_addr().unwrap(), "/metrics").await;
    let scrape = parse_scrape(&body);
    let inf = f64::INFINITY;
    assert_eq!(
        histogram(&scrape, "app_wait_seconds", &[]),
        [(0.5, 0.0), (5.0, 1.0), (inf, 1.0)]
    );
    assert_eq!(
        histogram(&scrape, "app_batch_rows", &[]),
        [(10.0, 0.0), (100.0, 1.0), (1000.0, 1.0), (inf, 1.0)]
    );
    assert_eq!(
        histogram(&scrape, "app_ratio", &[]),
        [(42.0, 1.0), (inf, 1.0)]
    );
    // Not overridden: the default `_bytes` buckets.
    let bytes = histogram(&scrape, "app_body_bytes", &[]);
    assert_eq!(bytes.len(), telemetry::prometheus::BYTES_BUCKETS.len() + 1);
    assert_eq!(bucket(&bytes, 256.0), 0.0);
    assert_eq!(bucket(&bytes, 1024.0), 1.0);
    telemetry.shutdown().await;

    for bad in [&[][..], &[1.0, 0.5], &[f64::NAN]] {
        let err = TelemetryBuilder::new("svc")
            .prometheus("127.0.0.1:0".parse().unwrap())
            .prometheus_buckets("_bytes", bad)
            .start()
            .unwrap_err();
        assert!(
            matches!(&err, telemetry::Error::PrometheusBuckets { suffix, .. } if suffix == "_bytes"),
            "{bad:?}: {err}"
        );
    }
}

#[tokio::test]
async fn the_riemann_reporter_counts_itself_in_prometheus() {
    let mut server = RiemannServer::start("127.0.0.1:0".parse().unwrap(), true).await;
    let telemetry = TelemetryBuilder::new("svc")
        .prometheus("127.0.0.1:0".parse().unwrap())
        .riemann(RiemannConfig::new(server.addr.to_string()).interval(Duration::from_millis(20)))
        .start()
        .unwrap();
    server
        .until(|m| counter_in(m, "svc telemetry_riemann_reports_sent_total") >= Some(1))
        .await;
    let addr = telemetry.prometheus_addr().unwrap();
    let scrape = timeout(PATIENCE, async {
        loop {
            let (_, _, body) = http_get(addr, "/metrics").await;
            let scrape = parse_scrape(&body);
            let sent = scrape
                .samples
                .iter()
                .any(|s| s.metric == "telemetry_riemann_reports_sent_total");
            if sent && number(&scrape, "telemetry_riemann_reports_sent_total", &[]) >= 2.0 {
                return scrape;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("two reports sent in time");
    assert_eq!(
        number(&scrape, "telemetry_riemann_reports_dropped_total", &[]),
        0.0
    );
    assert!(
        scrape
            .docs
            .get("telemetry_riemann_reports_sent_total")
            .is_some_and(|d| d.contains("Riemann")),
        "{:?}",
        scrape.docs
    );
    telemetry.shutdown().await;
    server.stop().await;
}

#[tokio::test]
async fn without_prometheus_the_fanout_recorder_is_the_registry() {
    let recorder = Recorder::new();
    let telemetry = TelemetryBuilder::new("svc")
        .recorder(recorder.clone())
        .start()
        .unwrap();
    assert_eq!(telemetry.prometheus_addr(), None);
    assert_eq!(telemetry.render_prometheus(), None);
    metrics::with_local_recorder(&telemetry.fanout_recorder(), record_app_metrics);
    assert_eq!(
        recorder
            .snapshot()
            .counter("app_jobs_total", &[("outcome", "ok")]),
        Some(42)
    );
    telemetry.shutdown().await;
}

#[tokio::test]
async fn a_bad_riemann_address_or_a_taken_port_is_an_error() {
    let err = TelemetryBuilder::new("svc")
        .riemann(RiemannConfig::new("no-port"))
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("\"no-port\""), "{err}");

    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = TelemetryBuilder::new("svc")
        .prometheus(taken.local_addr().unwrap())
        .start()
        .unwrap_err();
    assert!(matches!(err, telemetry::Error::Listen { .. }), "{err}");
}

#[test]
fn starting_outside_a_runtime_is_an_error() {
    let err = TelemetryBuilder::new("svc").start().unwrap_err();
    assert!(matches!(err, telemetry::Error::NoRuntime), "{err}");
}

#[test]
fn the_log_summary_logs_a_last_line_at_shutdown() {
    let captured = test_services::CapturedLog::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // A current-thread runtime runs the summary task on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let telemetry = TelemetryBuilder::new("svc")
            .recorder(recorder_with_metrics())
            .log_summary(Some(Duration::from_secs(3600)))
            .start()
            .unwrap();
        telemetry.shutdown().await;
    });
    let text = captured.text();
    let line = text
        .lines()
        .find(|l| l.contains("metrics: "))
        .unwrap_or_else(|| panic!("no summary line in {text:?}"));
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains("service=svc"), "{line}");
    assert!(
        line.contains("app_jobs_total{outcome=ok}=42(+42)"),
        "{line}"
    );
    assert!(line.contains("app_queue_depth=2.5"), "{line}");
    assert!(line.contains("app_job_seconds[n=100 p50="), "{line}");
    assert_eq!(text.lines().filter(|l| l.contains("metrics: ")).count(), 1);
}
