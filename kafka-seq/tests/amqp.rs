//! AMQP behaviour against the real RabbitMQ named by TEST_AMQP_URL.
#![cfg(feature = "amqp")]

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use kafka_seq::amqp::{AmqpConfig, AmqpDelivery, AmqpPublisher, AmqpStream};
use test_services::{AMQP, service_url, unique_name};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

async fn next(stream: &mut AmqpStream) -> AmqpDelivery {
    timeout(WAIT, stream.next())
        .await
        .expect("a delivery within the time limit")
        .expect("the stream goes on")
        .expect("no consumer error")
}

/// The global recorder of this test binary (series are told apart by their queue label).
fn recorder() -> &'static telemetry::Recorder {
    static RECORDER: OnceLock<telemetry::Recorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder = telemetry::Recorder::new();
        metrics::set_global_recorder(recorder.clone()).unwrap();
        recorder
    })
}

fn id(d: &AmqpDelivery) -> usize {
    std::str::from_utf8(&d.data).unwrap().parse().unwrap()
}

#[tokio::test]
async fn unacked_deliveries_of_a_dropped_consumer_are_redelivered() {
    let Some(url) = service_url(AMQP, "amqp redelivery") else {
        return;
    };
    let queue = unique_name("kseq_redeliver_");
    let publisher = AmqpPublisher::connect(&url).await.unwrap();
    publisher.declare_queue(&queue).await.unwrap();
    let bodies: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    publisher
        .publish_all("", &queue, bodies.iter().map(|b| b.as_bytes()))
        .await
        .unwrap();

    let mut first = AmqpConfig::new(&url, &queue)
        .prefetch(10)
        .drain_timeout(Duration::from_secs(5))
        .consume()
        .await
        .unwrap();
    let control = first.control();
    let mut acked = BTreeSet::new();
    for _ in 0..20 {
        let d = next(&mut first).await;
        acked.insert(id(&d));
        d.ack().await.unwrap();
    }
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(next(&mut first).await);
    }
    let held_ids: BTreeSet<usize> = held.iter().map(id).collect();
    control.shutdown();
    drop(first);
    drop(held);
    timeout(WAIT, control.closed()).await.unwrap();

    let mut second = AmqpConfig::new(&url, &queue)
        .prefetch(10)
        .consume()
        .await
        .unwrap();
    let mut rest = BTreeSet::new();
    while rest.len() < 30 {
        let d = next(&mut second).await;
        let i = id(&d);
        assert!(!acked.contains(&i), "{i} was acked, yet redelivered");
        if held_ids.contains(&i) {
            assert!(d.redelivered, "{i} was delivered before");
        }
        rest.insert(i);
        d.ack().await.unwrap();
    }
    let all: BTreeSet<usize> = acked.union(&rest).copied().collect();
    assert_eq!(all, (0..50).collect());
    let control = second.control();
    control.shutdown();
    drop(second);
    timeout(WAIT, control.closed()).await.unwrap();
    publisher.delete_queue(&queue).await.unwrap();
    publisher.close().await;
}

#[tokio::test]
async fn a_cancelled_consumer_reconnects_with_backoff() {
    let Some(url) = service_url(AMQP, "amqp reconnect") else {
        return;
    };
    let recorder = recorder();
    let queue = unique_name("kseq_reconnect_");
    let publisher = AmqpPublisher::connect(&url).await.unwrap();
    publisher.declare_queue(&queue).await.unwrap();
    publisher.publish("", &queue, b"before").await.unwrap();

    let mut stream = AmqpConfig::new(&url, &queue)
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .consume()
        .await
        .unwrap();
    let d = next(&mut stream).await;
    assert_eq!(&d.data[..], b"before");
    d.ack().await.unwrap();
    // Deleting the queue makes RabbitMQ cancel the consumer; the stream reconnects,
    // declares the queue again and goes on.
    publisher.delete_queue(&queue).await.unwrap();
    publisher.declare_queue(&queue).await.unwrap();
    publisher.publish("", &queue, b"after").await.unwrap();
    let d = next(&mut stream).await;
    assert_eq!(&d.data[..], b"after");
    d.ack().await.unwrap();
    publisher.publish("", &queue, b"rejected").await.unwrap();
    let d = next(&mut stream).await;
    d.nack(false).await.unwrap();
    let control = stream.control();
    drop(stream);
    timeout(WAIT, control.closed()).await.unwrap();
    let snapshot = recorder.snapshot();
    let count = |name: &str| snapshot.counter(name, &[("queue", queue.as_str())]);
    assert_eq!(count("kafka_seq_amqp_received_total"), Some(3));
    assert_eq!(count("kafka_seq_amqp_acked_total"), Some(2));
    assert_eq!(count("kafka_seq_amqp_nacked_total"), Some(1));
    assert_eq!(count("kafka_seq_amqp_reconnects_total"), Some(1));
    publisher.delete_queue(&queue).await.unwrap();
    publisher.close().await;
}

/// A TCP proxy on 127.0.0.1 in front of RabbitMQ whose connections the test can cut (a
/// dropped TCP connection, as when a network path or the broker's host goes away).
struct Proxy {
    url: String,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(url: &str) -> Self {
        // amqp://user:pass@host:port/vhost -> host:port
        let after_at = url.rsplit_once('@').map_or(url, |(_, rest)| rest);
        let upstream = after_at.split('/').next().unwrap().to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let proxied = url.replacen(&upstream, &local.to_string(), 1);
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let connections = connections.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    connections.lock().unwrap().push(task.abort_handle());
                }
            }
        });
        Self {
            url: proxied,
            connections,
            accept,
        }
    }

    /// Drops every connection made so far (new ones are still accepted).
    fn cut(&self) -> usize {
        let cut: Vec<_> = self.connections.lock().unwrap().drain(..).collect();
        for c in &cut {
            c.abort();
        }
        cut.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_reconnects_and_unacked_deliveries_come_back() {
    let Some(url) = service_url(AMQP, "amqp dropped connection") else {
        return;
    };
    let queue = unique_name("kseq_dropped_");
    let publisher = AmqpPublisher::connect(&url).await.unwrap();
    publisher.declare_queue(&queue).await.unwrap();
    for body in ["acked", "held", "probe"] {
        publisher
            .publish("", &queue, body.as_bytes())
            .await
            .unwrap();
    }

    let proxy = Proxy::start(&url).await;
    // Prefetch 2: RabbitMQ sends "acked" and "held", and "probe" only once it has processed
    // the ack of "acked". Receiving "probe" proves the ack reached the broker before the cut
    // (AMQP does not confirm acks: one still in flight when a connection drops is lost and
    // its message comes back, at least once).
    let mut stream = AmqpConfig::new(&proxy.url, &queue)
        .prefetch(2)
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .consume()
        .await
        .unwrap();
    let d = next(&mut stream).await;
    assert_eq!(&d.data[..], b"acked");
    d.ack().await.unwrap();
    let held = next(&mut stream).await;
    assert_eq!(&held.data[..], b"held");
    assert!(!held.redelivered);
    let probe = next(&mut stream).await;
    assert_eq!(&probe.data[..], b"probe");
    // The TCP connection goes away under the consumer.
    assert!(proxy.cut() > 0, "the consumer connected through the proxy");
    // Dropped unacknowledged: it frees its place in the stream's prefetch window (sending
    // nothing), so the stream can notice the loss while `held` is still held.
    drop(probe);
    publisher.publish("", &queue, b"after").await.unwrap();
    // The stream reconnects (through the proxy, still accepting); the unacknowledged
    // deliveries come back, marked redelivered, and nothing acked does.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let d = next(&mut stream).await;
        assert_ne!(&d.data[..], b"acked", "an acked delivery came back");
        seen.push((String::from_utf8(d.data.to_vec()).unwrap(), d.redelivered));
        d.ack().await.unwrap();
    }
    seen.sort();
    assert_eq!(
        seen.iter().map(|(b, _)| b.as_str()).collect::<Vec<_>>(),
        ["after", "held", "probe"]
    );
    assert!(seen[1].1, "held comes back marked redelivered");
    assert!(seen[2].1, "probe comes back marked redelivered");
    // Acking on the dead connection says so (RabbitMQ already requeued it).
    let err = held.ack().await.unwrap_err();
    assert!(
        matches!(err, kafka_seq::Error::AmqpChannelGone { .. }),
        "{err}"
    );
    let control = stream.control();
    drop(stream);
    timeout(WAIT, control.closed()).await.unwrap();
    publisher.delete_queue(&queue).await.unwrap();
    publisher.close().await;
}
