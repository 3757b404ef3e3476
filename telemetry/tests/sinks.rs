//! The sinks against real sockets on 127.0.0.1: a Riemann protocol server written here with the
//! crate's proto types (length-prefixed `Msg` frames, answering `ok`), a UDP receiver, and
//! Prometheus scrapes over HTTP.

use std::net::SocketAddr;
use std::time::Duration;

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

fn recorder_with_metrics() -> Recorder {
    let recorder = Recorder::new();
    metrics::with_local_recorder(&recorder, || {
        metrics::describe_counter!("app_jobs_total", "Jobs finished.");
        metrics::counter!("app_jobs_total", "outcome" => "ok").increment(41);
        metrics::counter!("app_jobs_total", "outcome" => "ok").increment(1);
        metrics::gauge!("app_queue_depth").set(2.5);
        metrics::describe_histogram!("app_job_seconds", metrics::Unit::Seconds, "Job time.");
        for v in 1..=100 {
            metrics::histogram!("app_job_seconds").record(v as f64);
        }
    });
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

/// GET `path` over plain HTTP/1.1; returns the status line and the body.
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

#[tokio::test]
async fn prometheus_endpoint_is_scraped_over_http() {
    let recorder = recorder_with_metrics();
    let telemetry = TelemetryBuilder::new("svc")
        .recorder(recorder.clone())
        .prometheus("127.0.0.1:0".parse().unwrap())
        .start()
        .unwrap();
    let addr = telemetry.prometheus_addr().unwrap();
    assert_ne!(addr.port(), 0);

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
    for line in [
        "# HELP app_jobs_total Jobs finished.",
        "# TYPE app_jobs_total counter",
        "app_jobs_total{outcome=\"ok\"} 42",
        "# TYPE app_queue_depth gauge",
        "app_queue_depth 2.5",
        "# TYPE app_job_seconds summary",
        "app_job_seconds_count 100",
        "app_job_seconds_sum 5050",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "{line:?} missing from:\n{body}"
        );
    }

    // Counters move between scrapes.
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("app_jobs_total", "outcome" => "ok").increment(8);
    });
    let (_, _, body) = http_get(addr, "/metrics").await;
    assert!(
        body.lines()
            .any(|l| l == "app_jobs_total{outcome=\"ok\"} 50"),
        "{body}"
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
