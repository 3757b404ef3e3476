//! The global installation through the command-line flags, as a service binary does it
//! (a test binary of its own: a process has one global recorder).

use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    telemetry: telemetry::TelemetryArgs,
}

#[test]
fn flags_parse_with_defaults_and_reject_a_zero_interval() {
    let args = Args::parse_from(["svc"]);
    assert!(!args.once);
    let t = args.telemetry;
    assert_eq!(t.metrics_listen, None);
    assert_eq!(t.riemann, None);
    assert_eq!(t.riemann_interval, Duration::from_secs(10));
    assert_eq!(t.metrics_log_interval, Duration::from_secs(60));
    assert_eq!(t.riemann_ttl, None);
    assert!(t.riemann_tags.is_empty());
    assert!(!t.riemann_udp);

    let t = Args::parse_from([
        "svc",
        "--once",
        "--metrics-listen",
        "127.0.0.1:9100",
        "--metrics-log-interval",
        "0s",
        "--riemann",
        "localhost:5555",
        "--riemann-interval",
        "1m 30s",
        "--riemann-ttl",
        "5m",
        "--riemann-tag",
        "a",
        "--riemann-tag",
        "b",
        "--riemann-host",
        "h",
        "--riemann-prefix",
        "eu1 ",
        "--riemann-udp",
    ])
    .telemetry;
    assert_eq!(t.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
    assert_eq!(t.metrics_log_interval, Duration::ZERO);
    assert_eq!(t.riemann_interval, Duration::from_secs(90));
    assert_eq!(t.riemann_ttl, Some(Duration::from_secs(300)));
    assert_eq!(t.riemann_tags, ["a", "b"]);
    assert_eq!(t.riemann_host.as_deref(), Some("h"));
    assert_eq!(t.riemann_prefix, "eu1 ");
    assert!(t.riemann_udp);

    assert!(Args::try_parse_from(["svc", "--riemann-interval", "0s"]).is_err());
    assert!(Args::try_parse_from(["svc", "--riemann-interval", "soon"]).is_err());
    assert!(Args::try_parse_from(["svc", "--metrics-listen", "nowhere"]).is_err());
}

#[tokio::test]
async fn install_makes_the_facade_report_to_the_sinks_once_per_process() {
    let args = Args::parse_from(["svc", "--metrics-listen", "127.0.0.1:0"]);
    let telemetry = args.telemetry.install("svc").unwrap();
    metrics::describe_counter!("svc_installed_total", "Installations.");
    metrics::counter!("svc_installed_total").increment(3);
    metrics::histogram!("svc_step_seconds").record(0.02);
    metrics::histogram!("svc_step_seconds").record(7.0);

    // The global recorder feeds this crate's registry (Riemann, log summary)...
    let snapshot = telemetry.recorder().snapshot();
    assert_eq!(snapshot.counter("svc_installed_total", &[]), Some(3));
    assert_eq!(
        snapshot.histogram("svc_step_seconds", &[]).map(|h| h.count),
        Some(2)
    );
    // ... and the Prometheus endpoint.
    let addr = telemetry.prometheus_addr().unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("an answer in time")
    .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| s.value.clone())
    };
    assert_eq!(
        value("svc_installed_total"),
        Some(prometheus_parse::Value::Counter(3.0)),
        "{body}"
    );
    assert_eq!(
        scrape.docs.get("svc_installed_total").map(String::as_str),
        Some("Installations.")
    );
    let Some(prometheus_parse::Value::Histogram(buckets)) = value("svc_step_seconds") else {
        panic!("no histogram svc_step_seconds in {body}");
    };
    let count_at = |le: f64| buckets.iter().find(|b| b.less_than == le).map(|b| b.count);
    assert_eq!(count_at(0.01), Some(0.0));
    assert_eq!(count_at(0.025), Some(1.0));
    assert_eq!(count_at(10.0), Some(2.0));
    assert_eq!(count_at(f64::INFINITY), Some(2.0));
    assert_eq!(
        value("svc_step_seconds_sum"),
        Some(prometheus_parse::Value::Untyped(7.02))
    );
    assert_eq!(
        telemetry
            .render_prometheus()
            .map(|t| t.contains("svc_step_seconds_count 2\n")),
        Some(true)
    );

    let again = Args::parse_from(["svc"]).telemetry.install("svc");
    assert!(matches!(again, Err(telemetry::Error::AlreadyInstalled)));
    telemetry.shutdown().await;
}
