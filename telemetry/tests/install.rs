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
    metrics::counter!("svc_installed_total").increment(3);

    assert_eq!(
        telemetry
            .recorder()
            .snapshot()
            .counter("svc_installed_total", &[]),
        Some(3)
    );
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
    assert!(response.contains("\nsvc_installed_total 3\n"), "{response}");

    let again = Args::parse_from(["svc"]).telemetry.install("svc");
    assert!(matches!(again, Err(telemetry::Error::AlreadyInstalled)));
    telemetry.shutdown().await;
}
