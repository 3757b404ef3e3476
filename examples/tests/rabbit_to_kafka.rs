//! End to end: the real `rabbit-to-kafka` binary between the real RabbitMQ and an
//! in-process Kafka (rdkafka's mock cluster, reached over 127.0.0.1), stopped with SIGTERM
//! mid-stream and restarted: every message ends up in Kafka (at least once).

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use kafka_seq::amqp::AmqpPublisher;
use kafka_seq::{ConsumerConfig, KafkaStream};
use test_services::kafka::KafkaCluster;
use test_services::{AMQP, service_url, unique_name};
use tokio::time::timeout;

const N: usize = 1000;

fn start(url: &str, queue: &str, brokers: &str, topic: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rabbit-to-kafka"))
        .args([
            "--amqp",
            url,
            "--queue",
            queue,
            "--brokers",
            brokers,
            "--topic",
            topic,
        ])
        // One delivery at a time (each waits for Kafka's acknowledgement): slow enough to be
        // stopped mid-stream.
        .args(["-X", "linger.ms=2", "--prefetch", "1"])
        .stdin(Stdio::null())
        .spawn()
        .expect("start rabbit-to-kafka")
}

/// SIGTERM, then the exit status (bounded wait).
async fn stop(mut child: Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
    for _ in 0..300 {
        if let Some(s) = child.try_wait().expect("wait for rabbit-to-kafka") {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    panic!("rabbit-to-kafka did not exit within 30 s of SIGTERM");
}

/// Reads ids from the topic until `seen` holds at least `until` of them.
async fn read_until(stream: &mut KafkaStream, seen: &mut BTreeSet<usize>, until: usize) {
    while seen.len() < until {
        let m = timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("Kafka messages keep coming")
            .expect("stream goes on")
            .expect("no consumer error");
        let v: serde_json::Value = serde_json::from_slice(m.payload.as_deref().unwrap()).unwrap();
        let id = v["id"].as_u64().unwrap() as usize;
        assert_eq!(m.key.as_deref(), Some(id.to_string().as_bytes()));
        assert!(v["_source"].is_string());
        seen.insert(id);
        m.ack.ack();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_reaches_kafka_across_a_sigterm_restart() {
    let Some(url) = service_url(AMQP, "rabbit-to-kafka end to end") else {
        return;
    };
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let topic = unique_name("r2k-");
    cluster.create_topic(&topic, 3);
    let queue = unique_name("r2k_");

    let publisher = AmqpPublisher::connect(&url).await.unwrap();
    publisher.declare_queue(&queue).await.unwrap();
    let bodies: Vec<String> = (0..N)
        .map(|i| format!(r#"{{"id":{i},"text":"message {i}"}}"#))
        .collect();
    publisher
        .publish_all("", &queue, bodies.iter().map(|b| b.as_bytes()))
        .await
        .unwrap();

    let mut kafka = ConsumerConfig::new(&brokers, unique_name("check-"))
        .topics([&topic])
        .subscribe()
        .unwrap();
    let mut seen = BTreeSet::new();

    let first = start(&url, &queue, &brokers, &topic);
    // Stop it once it has moved a few messages (bounded wait).
    let mut left = N as u32;
    for _ in 0..600 {
        left = publisher.queue_len(&queue).await.unwrap();
        if left < (N - 50) as u32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(left < (N - 50) as u32, "the first run moves messages");
    let status = stop(first).await;
    assert!(
        status.success(),
        "first run exits 0 after draining: {status}"
    );
    let remaining = publisher.queue_len(&queue).await.unwrap();
    assert!(remaining > 0, "the first run was stopped mid-stream");

    let second = start(&url, &queue, &brokers, &topic);
    read_until(&mut kafka, &mut seen, N).await;
    let status = stop(second).await;
    assert!(status.success(), "second run exits 0: {status}");
    assert_eq!(seen, (0..N).collect::<BTreeSet<_>>());
    eprintln!(
        "rabbit-to-kafka: {remaining} of {N} messages left in RabbitMQ by the first run, all {N} in Kafka after the restart"
    );

    let control = kafka.control();
    drop(kafka);
    timeout(Duration::from_secs(30), control.closed())
        .await
        .unwrap()
        .unwrap();
    publisher.delete_queue(&queue).await.unwrap();
    publisher.close().await;
}
