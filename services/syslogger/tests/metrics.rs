//! The metrics a run records (telemetry's recorder installed as the process's global one:
//! this test binary holds this one test only).

mod common;

use std::time::Duration;

use common::{WAIT, args, init_logs, read, start};
use test_services::kafka::KafkaCluster;
use test_services::unique_name;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_counts_connections_frames_bytes_failures_oversize_and_deliveries() {
    init_logs();
    let recorder = telemetry::Recorder::new();
    metrics::set_global_recorder(recorder.clone()).unwrap();
    let cluster = KafkaCluster::start(1);
    let topic = unique_name("metrics-");
    cluster.create_topic(&topic, 1);
    let mut a = args(cluster.bootstrap_servers(), &topic);
    a.max_frame = 64;
    let svc = start(a).await;
    let mut s = tokio::net::TcpStream::connect(svc.tcp()).await.unwrap();
    let long = format!("<13>Oct 11 22:14:15 h app: {}", "z".repeat(100));
    let input = format!("<13>Oct 11 22:14:15 h app: one\nnot syslog\n{long}\n");
    s.write_all(input.as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(
        read(cluster.bootstrap_servers(), &topic, 1, 3, WAIT)
            .await
            .len(),
        3
    );
    // The in-flight gauges are set each second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let outcome = svc.stop().await;
    assert_eq!(outcome.delivered, 3);
    let snap = recorder.snapshot();
    let tcp = [("listener", "tcp")];
    assert_eq!(snap.counter("syslogger_connections_total", &tcp), Some(1));
    assert_eq!(snap.counter("syslogger_frames_total", &tcp), Some(3));
    assert_eq!(
        snap.counter("syslogger_received_bytes_total", &tcp),
        Some(input.len() as u64)
    );
    assert_eq!(
        snap.counter("syslogger_parse_failures_total", &tcp),
        Some(1)
    );
    assert_eq!(
        snap.counter("syslogger_oversize_frames_total", &tcp),
        Some(1)
    );
    assert_eq!(snap.counter("syslogger_delivered_total", &[]), Some(3));
    assert_eq!(snap.gauge("syslogger_in_flight", &[]), Some(0.0));
    assert_eq!(snap.gauge("syslogger_in_flight_bytes", &[]), Some(0.0));
    let latency = snap.histogram("syslogger_delivery_seconds", &[]).unwrap();
    assert_eq!(latency.count, 3);
    assert!(recorder.help("syslogger_spilled_total").is_some());
}
