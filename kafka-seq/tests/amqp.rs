//! AMQP behaviour against the real RabbitMQ named by TEST_AMQP_URL.
#![cfg(feature = "amqp")]

use std::collections::BTreeSet;
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
    let control = stream.control();
    drop(stream);
    timeout(WAIT, control.closed()).await.unwrap();
    publisher.delete_queue(&queue).await.unwrap();
    publisher.close().await;
}
