//! The service's metrics after a run (its own process: a global recorder).

mod common;

use std::time::Duration;

use common::*;
use test_services::kafka::KafkaCluster;
use test_services::unique_name;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_counted_per_partition() {
    let recorder = telemetry::Recorder::new();
    metrics::set_global_recorder(recorder.clone()).unwrap();
    logging();
    let kafka = KafkaCluster::start(1);
    let brokers = kafka.bootstrap_servers().to_string();
    let topic = unique_name("metrics-");
    kafka.create_topic(&topic, 2);
    produce(&brokers, &topic, 2, 0..20).await;
    let producer = kafka_seq::ProducerConfig::new(&brokers).create().unwrap();
    producer
        .send(&topic, &kafka_seq::Record::default().partition(0))
        .await
        .unwrap()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/archive", dir.path().display());
    let opened = lifecycle::store::open(&url, &[]).unwrap();
    let mut a = args(&brokers, "m", &topic, &url, &dir.path().join("spool"));
    a.rotate_records = 7;
    let stop = lifecycle::CancellationToken::new();
    let task = tokio::spawn(bifrost::run(a, stop.clone()));
    wait_records(&*opened.store, 40).await;
    // Let a tick sample the gauges after the last upload.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let snap = recorder.snapshot();
    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let labels = |p: &'static str| [("partition", p), ("topic", topic.as_str())];
    let counter = |name: &str, p: &'static str| snap.counter(name, &labels(p)).unwrap_or(0);
    assert_eq!(counter("bifrost_records_archived_total", "0"), 20);
    assert_eq!(counter("bifrost_records_archived_total", "1"), 20);
    assert_eq!(counter("bifrost_messages_received_total", "0"), 21);
    assert_eq!(counter("bifrost_tombstones_total", "0"), 1);
    assert_eq!(counter("bifrost_tombstones_total", "1"), 0);
    assert_eq!(
        counter("bifrost_objects_uploaded_total", "1"),
        3,
        "7 + 7 + 6"
    );
    assert_eq!(counter("bifrost_conflicts_resolved_total", "1"), 0);
    assert!(counter("bifrost_bytes_archived_total", "1") > 20 * 8);
    assert_eq!(
        snap.gauge("bifrost_commit_lag_records", &labels("0")),
        Some(0.0)
    );
    assert_eq!(
        snap.gauge("bifrost_oldest_unuploaded_seconds", &labels("1")),
        Some(0.0)
    );
    assert_eq!(
        snap.gauge("bifrost_spool_bytes", &[]),
        Some(0.0),
        "nothing left to upload"
    );
    let uploads = snap
        .histogram("bifrost_upload_duration_seconds", &[])
        .expect("upload durations");
    assert_eq!(uploads.count, 6);
}
