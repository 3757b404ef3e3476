//! The metrics kafka-seq records, read through a `telemetry::Recorder` installed as the
//! global recorder. A test binary of its own: librdkafka's callbacks and the consumer's
//! tasks run on threads of their own, which a thread-local recorder would not cover, and the
//! unlabelled gauges (in flight, unacked) are process-wide, so there is one test.

use std::sync::OnceLock;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kafka_seq::{ConsumerConfig, KafkaMessage, KafkaStream, ProducerConfig, Record};
use telemetry::Recorder;
use test_services::kafka::KafkaCluster;
use test_services::unique_name;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(60);

fn recorder() -> &'static Recorder {
    static RECORDER: OnceLock<Recorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder = Recorder::new();
        metrics::set_global_recorder(recorder.clone()).unwrap();
        recorder
    })
}

fn counter(name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    recorder().snapshot().counter(name, labels)
}

fn gauge(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    recorder().snapshot().gauge(name, labels)
}

/// Waits (bounded: 200 x 50 ms) until `check` holds, polling `stream` meanwhile when given
/// (commit confirmations are served while the consumer is polled; no message may come).
async fn wait_until(what: &str, mut stream: Option<&mut KafkaStream>, check: impl Fn() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        match stream.as_deref_mut() {
            Some(s) => {
                if let Ok(m) = timeout(Duration::from_millis(50), s.next()).await {
                    panic!("no message expected while waiting for {what}: {m:?}");
                }
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!(
        "{what}: not within 10 s; gauges: {:?}",
        recorder().snapshot().gauges
    );
}

async fn next(stream: &mut KafkaStream) -> KafkaMessage {
    timeout(WAIT, stream.next())
        .await
        .expect("a message within the time limit")
        .expect("the stream goes on")
        .expect("no consumer error")
}

/// Feeds `count` records to `partition` of `topic` through a sink and closes it.
async fn produce(producer: &kafka_seq::KafkaProducer, topic: &str, partition: i32, count: usize) {
    let mut sink = producer.sink(topic);
    for i in 0..count {
        sink.feed(Record::new(i.to_string()).partition(partition))
            .await
            .unwrap();
    }
    timeout(WAIT, sink.close()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_and_producer_metrics_after_a_run() {
    recorder();
    // Three brokers: one can go down while the others answer metadata requests.
    let cluster = KafkaCluster::start(3);
    let brokers = cluster.bootstrap_servers().to_string();
    let input = unique_name("metrics-in-");
    let other = unique_name("metrics-other-");
    cluster.create_topic(&input, 2);
    cluster.create_topic(&other, 1);

    // --- Producer: a sink to one topic, `send` to another (10 per partition + 2). ---
    let producer = ProducerConfig::new(&brokers).create().unwrap();
    produce(&producer, &input, 0, 10).await;
    produce(&producer, &input, 1, 10).await;
    for i in 0..2 {
        let report = producer
            .send(&other, &Record::new(i.to_string()))
            .await
            .unwrap();
        timeout(WAIT, report).await.unwrap().unwrap();
    }
    let t_in = [("topic", input.as_str())];
    let t_other = [("topic", other.as_str())];
    assert_eq!(
        counter("kafka_seq_producer_delivered_total", &t_in),
        Some(20)
    );
    assert_eq!(
        counter("kafka_seq_producer_delivered_total", &t_other),
        Some(2)
    );
    assert_eq!(
        counter("kafka_seq_producer_delivery_errors_total", &t_in),
        Some(0)
    );
    let seconds = recorder()
        .snapshot()
        .histogram("kafka_seq_producer_delivery_seconds", &t_in)
        .unwrap();
    assert_eq!(seconds.count, 20, "one enqueue-to-ack duration per message");
    assert!(seconds.min > 0.0 && seconds.max < 60.0, "{seconds:?}");
    assert_eq!(gauge("kafka_seq_producer_in_flight", &[]), Some(0.0));

    // --- Consumer: receive all 20, ack partition 0 and half of partition 1. ---
    let group = unique_name("g-");
    let mut stream = ConsumerConfig::new(&brokers, &group)
        .topics([input.as_str()])
        .commit_interval(Duration::from_millis(100))
        .subscribe()
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..20 {
        let m = next(&mut stream).await;
        if m.partition == 1 && m.offset >= 5 {
            held.push(m);
        } else {
            m.ack.ack();
        }
    }
    let p0 = [("topic", input.as_str()), ("partition", "0")];
    let p1 = [("topic", input.as_str()), ("partition", "1")];
    assert_eq!(counter("kafka_seq_consumer_received_total", &p0), Some(10));
    assert_eq!(counter("kafka_seq_consumer_received_total", &p1), Some(10));
    assert_eq!(counter("kafka_seq_consumer_acked_total", &p0), Some(10));
    assert_eq!(counter("kafka_seq_consumer_acked_total", &p1), Some(5));
    // Commits are confirmed while the stream is polled; the contiguous prefix only.
    wait_until("committed offsets 10 and 5", Some(&mut stream), || {
        gauge("kafka_seq_consumer_committed_offset", &p0) == Some(10.0)
            && gauge("kafka_seq_consumer_committed_offset", &p1) == Some(5.0)
    })
    .await;
    wait_until("5 unacked", None, || {
        gauge("kafka_seq_consumer_unacked", &[]) == Some(5.0)
    })
    .await;
    wait_until("no lag", None, || {
        gauge("kafka_seq_consumer_lag", &p0) == Some(0.0)
            && gauge("kafka_seq_consumer_lag", &p1) == Some(0.0)
    })
    .await;

    // Five more on partition 1, fetched by librdkafka but not handed out: a lag of 5.
    produce(&producer, &input, 1, 5).await;
    wait_until("a lag of 5 on partition 1", None, || {
        gauge("kafka_seq_consumer_lag", &p1) == Some(5.0)
    })
    .await;
    assert_eq!(gauge("kafka_seq_consumer_lag", &p0), Some(0.0));

    // The held ones acked and the new ones consumed and acked: everything committed.
    for m in held {
        m.ack.ack();
    }
    for _ in 0..5 {
        let m = next(&mut stream).await;
        assert_eq!(m.partition, 1);
        m.ack.ack();
    }
    assert_eq!(counter("kafka_seq_consumer_received_total", &p1), Some(15));
    assert_eq!(counter("kafka_seq_consumer_acked_total", &p1), Some(15));
    wait_until("committed offset 15", Some(&mut stream), || {
        gauge("kafka_seq_consumer_committed_offset", &p1) == Some(15.0)
            && gauge("kafka_seq_consumer_lag", &p1) == Some(0.0)
    })
    .await;
    let control = stream.control();
    drop(stream);
    timeout(WAIT, control.closed()).await.unwrap().unwrap();
    assert_eq!(gauge("kafka_seq_consumer_unacked", &[]), Some(0.0));
    assert_eq!(
        gauge("kafka_seq_consumer_committed_offset", &p0),
        Some(10.0)
    );
    assert_eq!(
        gauge("kafka_seq_consumer_committed_offset", &p1),
        Some(15.0)
    );
    assert_eq!(
        counter("kafka_seq_consumer_nacked_total", &p1),
        Some(0),
        "nothing nacked"
    );

    // --- In flight while the leader is down, then a delivery that fails. ---
    let held_topic = unique_name("metrics-held-");
    cluster.create_topic(&held_topic, 1);
    cluster
        .mock()
        .partition_leader(&held_topic, 0, Some(1))
        .unwrap();
    let bounded = ProducerConfig::new(&brokers)
        .set("linger.ms", "1")
        .max_in_flight(5)
        .create()
        .unwrap();
    let first = bounded.send(&held_topic, &Record::new("0")).await.unwrap();
    timeout(WAIT, first).await.unwrap().unwrap();
    cluster.mock().broker_down(1).unwrap();
    let mut sink = bounded.sink(&held_topic);
    for i in 1..4 {
        timeout(WAIT, sink.feed(Record::new(i.to_string())))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        gauge("kafka_seq_producer_in_flight", &[]),
        Some(3.0),
        "three unacknowledged while the leader is down"
    );
    cluster.mock().broker_up(1).unwrap();
    timeout(WAIT, sink.close()).await.unwrap().unwrap();
    assert_eq!(gauge("kafka_seq_producer_in_flight", &[]), Some(0.0));
    let t_held = [("topic", held_topic.as_str())];
    assert_eq!(
        counter("kafka_seq_producer_delivered_total", &t_held),
        Some(4)
    );

    cluster.mock().broker_down(1).unwrap();
    let failing = ProducerConfig::new(&brokers)
        .set("message.timeout.ms", "500")
        .create()
        .unwrap();
    let mut sink = failing.sink(&held_topic);
    sink.feed(Record::new("lost")).await.unwrap();
    timeout(WAIT, sink.close()).await.unwrap().unwrap_err();
    assert_eq!(
        counter("kafka_seq_producer_delivery_errors_total", &t_held),
        Some(1)
    );
    assert_eq!(
        counter("kafka_seq_producer_delivered_total", &t_held),
        Some(4)
    );
    assert_eq!(gauge("kafka_seq_producer_in_flight", &[]), Some(0.0));

    // Every series is described (help text and unit) once a client was created.
    for name in [
        "kafka_seq_consumer_received_total",
        "kafka_seq_consumer_committed_offset",
        "kafka_seq_consumer_lag",
        "kafka_seq_producer_in_flight",
        "kafka_seq_producer_delivery_seconds",
    ] {
        let described = recorder().help(name);
        assert!(
            described.is_some_and(|d| !d.is_empty()),
            "{name} is not described"
        );
    }
}
