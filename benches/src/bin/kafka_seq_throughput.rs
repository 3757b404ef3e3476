//! Consume and produce throughput through `kafka-seq`'s streams against bare rdkafka, on
//! the same in-process mock cluster (rdkafka's `MockCluster`, real protocol over 127.0.0.1).
//!
//! `cargo run --release -p benches --bin kafka_seq_throughput -- [MESSAGES] [PAYLOAD_BYTES] [ROUNDS]`
//! (defaults 40000, 100, 5; the mock cluster trims a partition's log past a few MB, so keep
//! MESSAGES x PAYLOAD_BYTES under ~4 MB). Each round runs every variant once, bare and
//! kafka-seq taking turns at going first; the median round of each is reported, with the range. Consume times start at the first message (excluding the
//! consumer-group join) and end at the last; produce times start after one warm-up message
//! was acknowledged.
//! Target: kafka-seq >= 0.9x bare rdkafka.
//!
//! For profiling one variant, `KAFKA_SEQ_BENCH_ONLY=consume-seq` (comma-separated among
//! `produce-bare`, `produce-seq`, `produce-lane`, `consume-bare`, `consume-bare-owned`,
//! `consume-seq`, `consume-batch`) runs
//! only those; the consumers' topic is written by the bare producer whenever a consumer runs.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use kafka_seq::{ConsumerConfig, ProducerConfig, Record};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Bare rdkafka: a threaded producer (idempotent, like kafka-seq's), send + flush.
fn produce_bare(brokers: &str, topic: &str, payload: &[u8], n: usize) -> Duration {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("queue.buffering.max.messages", "100000")
        .create()
        .expect("producer");
    // Warm-up (connection, idempotent producer id), outside the timing.
    producer
        .send(BaseRecord::<(), [u8]>::to(topic).payload(payload))
        .map_err(|(e, _)| e)
        .expect("warm-up send");
    producer
        .flush(Duration::from_secs(30))
        .expect("warm-up flush");
    let start = Instant::now();
    for _ in 1..n {
        let mut record = BaseRecord::<(), [u8]>::to(topic).payload(payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    }
    // Wait for every delivery report like the sink's `close` does. Not `flush`: on a
    // ThreadedProducer, rust-rdkafka's flush polls the queue in 100 ms slices that the
    // background thread's polling leaves empty, which added up to 100 ms to a ~30 ms job.
    let deadline = Instant::now() + Duration::from_secs(60);
    while producer.in_flight_count() > 0 {
        assert!(Instant::now() < deadline, "deliveries within 60 s");
        std::thread::sleep(Duration::from_micros(200));
    }
    start.elapsed()
}

/// kafka-seq: the producer's sink, closed (every delivery acknowledged) at the end.
async fn produce_seq(brokers: &str, topic: &str, payload: &bytes::Bytes, n: usize) -> Duration {
    let producer = ProducerConfig::new(brokers).create().expect("producer");
    let mut sink = producer.sink(topic);
    // Warm-up (connection, idempotent producer id), outside the timing.
    sink.send(Record::new(payload.clone()))
        .await
        .expect("warm-up");
    let start = Instant::now();
    for _ in 1..n {
        sink.feed(Record {
            payload: Some(payload.clone()),
            ..Record::default()
        })
        .await
        .expect("feed");
    }
    sink.close().await.expect("close");
    start.elapsed()
}

/// kafka-seq's delivery lane: every message's report taken, in the sender's order, by a
/// second task (as syslogger settles a connection), tickets handed over 256 at a time.
async fn produce_lane(brokers: &str, topic: &str, payload: &bytes::Bytes, n: usize) -> Duration {
    let producer = ProducerConfig::new(brokers).create().expect("producer");
    let (mut sender, mut reports) = producer.lane(16 * 1024).expect("lane");
    let record = Record::new(payload.clone());
    // Warm-up (connection, idempotent producer id), outside the timing.
    let t = sender.send(topic, &record).await.expect("warm-up");
    reports.report(t).await.expect("warm-up delivered");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<kafka_seq::Ticket>>(64);
    let settler = tokio::spawn(async move {
        while let Some(batch) = rx.recv().await {
            for t in batch {
                if let Err(t) = reports.take_delivered(t) {
                    reports.report(t).await.expect("delivered");
                }
            }
        }
    });
    let start = Instant::now();
    let mut batch = Vec::with_capacity(256);
    for _ in 1..n {
        let t = match sender.try_send(topic, &record).expect("send") {
            Some(t) => t,
            None => {
                // Hand over what is held before waiting for room it may free.
                if !batch.is_empty() {
                    tx.send(std::mem::take(&mut batch)).await.expect("settler");
                }
                sender.send(topic, &record).await.expect("send")
            }
        };
        batch.push(t);
        if batch.len() == 256 {
            tx.send(std::mem::replace(&mut batch, Vec::with_capacity(256)))
                .await
                .expect("settler");
        }
    }
    tx.send(batch).await.expect("settler");
    drop(tx);
    settler.await.expect("settler");
    start.elapsed()
}

/// Bare rdkafka: a StreamConsumer in a group. `owned`: the same job as kafka-seq's stream
/// (each message copied out of librdkafka with `detach`, its offset stored for the
/// auto-commit once processed: librdkafka's at-least-once pattern); otherwise only the
/// borrowed payload's length is read (a floor, not a usable consumer).
async fn consume_bare(brokers: &str, topic: &str, group: &str, n: usize, owned: bool) -> Duration {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set(
            "enable.auto.offset.store",
            if owned { "false" } else { "true" },
        )
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut bytes = 0usize;
    let first = consumer.recv().await.expect("recv");
    bytes += first.payload().map_or(0, <[u8]>::len);
    drop(first);
    let start = Instant::now();
    for _ in 1..n {
        let m = consumer.recv().await.expect("recv");
        if owned {
            let m = m.detach();
            bytes += m.payload().map_or(0, <[u8]>::len);
            consumer
                .store_offset(m.topic(), m.partition(), m.offset() + 1)
                .expect("store offset");
        } else {
            bytes += m.payload().map_or(0, <[u8]>::len);
        }
    }
    let elapsed = start.elapsed();
    assert!(bytes > 0);
    elapsed
}

/// kafka-seq: the consumer stream, acknowledging every message, or (`batches`) batches of
/// up to 256 borrowed messages (`next_batch`), each acknowledged when the callback returns;
/// commits every second. Timed from the first message on.
async fn consume_seq(brokers: &str, topic: &str, group: &str, n: usize, batches: bool) -> Duration {
    let mut stream = ConsumerConfig::new(brokers, group)
        .topics([topic])
        .subscribe()
        .expect("subscribe");
    let control = stream.control();
    let mut bytes = 0usize;
    let mut seen = 0;
    let mut start = Instant::now();
    while seen < n {
        if seen == 1 {
            start = Instant::now();
        }
        if batches {
            let max = if seen == 0 { 1 } else { (n - seen).min(256) };
            seen += stream
                .next_batch(max, |m| {
                    bytes += m.payload.map_or(0, <[u8]>::len);
                    std::ops::ControlFlow::Continue(())
                })
                .await
                .expect("message")
                .expect("no error");
        } else {
            let m = stream.next().await.expect("message").expect("no error");
            bytes += m.payload.as_ref().map_or(0, bytes::Bytes::len);
            m.ack.ack();
            seen += 1;
        }
    }
    let elapsed = start.elapsed();
    assert!(bytes > 0);
    control.shutdown();
    drop(stream);
    control.closed().await.expect("final commit");
    elapsed
}

/// The median of `times` (sorted in place; the upper middle for an even count).
fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

/// `median msg/s (min-max)` of a variant's rounds.
fn summary(n: usize, times: &mut [Duration]) -> String {
    let m = median(times);
    format!(
        "{:.0} msg/s (rounds {:.0}-{:.0})",
        rate(n, m),
        rate(n, times[times.len() - 1]),
        rate(n, times[0])
    )
}

#[tokio::main]
async fn main() {
    let n = arg(1, 40_000);
    let size = arg(2, 100);
    let rounds = arg(3, 5).max(1);
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    println!(
        "kafka_seq_throughput: {n} messages of {size} B, {rounds} rounds, medians (order alternates)"
    );

    let only = std::env::var("KAFKA_SEQ_BENCH_ONLY").ok();
    let run = |variant: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|v| v == variant))
    };
    let consumes = [
        "consume-bare",
        "consume-bare-owned",
        "consume-seq",
        "consume-batch",
    ]
    .iter()
    .any(|v| run(v));
    let (mut pb, mut ps, mut pl, mut cb, mut cbo, mut cs, mut cbt) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for round in 0..rounds {
        let (t1, t2, t3) = (
            format!("bare-{round}"),
            format!("seq-{round}"),
            format!("lane-{round}"),
        );
        cluster.create_topic(&t1, 1, 1).expect("topic");
        cluster.create_topic(&t2, 1, 1).expect("topic");
        cluster.create_topic(&t3, 1, 1).expect("topic");
        // Alternate which side goes first, so neither always meets a warmer (or busier)
        // cluster.
        let bare_first = round % 2 == 0;
        for side in [bare_first, !bare_first] {
            if side && (run("produce-bare") || consumes) {
                let (b, t, p) = (brokers.clone(), t1.clone(), payload.clone());
                let time = tokio::task::spawn_blocking(move || produce_bare(&b, &t, &p, n))
                    .await
                    .expect("join");
                if run("produce-bare") {
                    pb.push(time);
                }
            } else if !side {
                if run("produce-seq") {
                    ps.push(produce_seq(&brokers, &t2, &payload, n).await);
                }
                if run("produce-lane") {
                    pl.push(produce_lane(&brokers, &t3, &payload, n).await);
                }
            }
        }
        // Every consumer reads the same topic (written by the bare producer).
        for side in [bare_first, !bare_first] {
            if side {
                if run("consume-bare") {
                    cb.push(consume_bare(&brokers, &t1, &format!("gb-{round}"), n, false).await);
                }
                if run("consume-bare-owned") {
                    cbo.push(consume_bare(&brokers, &t1, &format!("gbo-{round}"), n, true).await);
                }
            } else {
                if run("consume-seq") {
                    cs.push(consume_seq(&brokers, &t1, &format!("gs-{round}"), n, false).await);
                }
                if run("consume-batch") {
                    cbt.push(consume_seq(&brokers, &t1, &format!("gt-{round}"), n, true).await);
                }
            }
        }
        let last = |times: &[Duration]| times.last().map_or(0.0, |t| rate(n, *t));
        println!(
            "round {round}: produce bare {:.0}/s seq {:.0}/s lane {:.0}/s; consume bare {:.0}/s bare-owned {:.0}/s seq {:.0}/s batch {:.0}/s",
            last(&pb),
            last(&ps),
            last(&pl),
            last(&cb),
            last(&cbo),
            last(&cs),
            last(&cbt)
        );
    }
    if only.is_some() {
        return;
    }
    let ratio = |bare: &mut [Duration], seq: &mut [Duration]| {
        median(bare).as_secs_f64() / median(seq).as_secs_f64()
    };
    println!(
        "produce: bare rdkafka {}, kafka-seq sink {}, ratio of medians {:.2}",
        summary(n, &mut pb),
        summary(n, &mut ps),
        ratio(&mut pb, &mut ps)
    );
    println!(
        "produce: kafka-seq lane (every report taken) {}, ratio of medians {:.2}",
        summary(n, &mut pl),
        ratio(&mut pb, &mut pl)
    );
    println!(
        "consume: bare rdkafka detach+store_offset {}, kafka-seq stream {}, ratio of medians {:.2}",
        summary(n, &mut cbo),
        summary(n, &mut cs),
        ratio(&mut cbo, &mut cs)
    );
    println!(
        "consume: bare rdkafka borrowed, no offsets {}, ratio of medians {:.2}",
        summary(n, &mut cb),
        ratio(&mut cb, &mut cs)
    );
    println!(
        "consume: kafka-seq next_batch (borrowed, acked on return) {}, ratio to bare borrowed {:.2}",
        summary(n, &mut cbt),
        ratio(&mut cb, &mut cbt)
    );
}
