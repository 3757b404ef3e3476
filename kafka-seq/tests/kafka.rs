//! Kafka behaviour against rdkafka's in-process mock cluster (real protocol, groups, commits).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kafka_seq::{ConsumerConfig, KafkaMessage, KafkaStream, ProducerConfig, Record};
use rdkafka::bindings::rd_kafka_resp_err_t as RDKafkaRespErr;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaApiKey;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use test_services::kafka::KafkaCluster;
use test_services::unique_name;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(60);

/// Produces `n` messages with payload/key `"{i}"`, round-robin over `partitions`.
async fn produce(brokers: &str, topic: &str, range: std::ops::Range<usize>, partitions: i32) {
    let producer = ProducerConfig::new(brokers).create().unwrap();
    let mut sink = producer.sink(topic);
    for i in range {
        let p = i32::try_from(i).unwrap() % partitions;
        sink.feed(Record::new(i.to_string()).key(i.to_string()).partition(p))
            .await
            .unwrap();
    }
    timeout(WAIT, sink.close()).await.unwrap().unwrap();
}

fn consumer(brokers: &str, group: &str, topic: &str) -> KafkaStream {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    ConsumerConfig::new(brokers, group)
        .topics([topic])
        .set_all(std::env::var("KAFKA_DEBUG").ok().into_iter().flat_map(|d| {
            [
                ("debug".to_string(), d),
                ("log_level".to_string(), "7".to_string()),
            ]
        }))
        // The mock coordinator waits up to the session timeout (and, for members that
        // died, the rebalance timeout = max.poll.interval.ms) for a rebalance.
        .set("session.timeout.ms", "6000")
        .set("max.poll.interval.ms", "7000")
        .set("heartbeat.interval.ms", "500")
        .commit_interval(Duration::from_millis(100))
        .drain_timeout(Duration::from_secs(5))
        .subscribe()
        .unwrap()
}

fn id(m: &KafkaMessage) -> usize {
    std::str::from_utf8(m.payload.as_deref().unwrap())
        .unwrap()
        .trim_end()
        .parse()
        .unwrap()
}

async fn next(stream: &mut KafkaStream) -> KafkaMessage {
    timeout(WAIT, stream.next())
        .await
        .expect("a message within the time limit")
        .expect("the stream goes on")
        .expect("no consumer error")
}

/// A 3-broker cluster and a 1-partition topic led by broker 1 (which tests take down).
fn cluster_led_by_broker_1(prefix: &str) -> (KafkaCluster, String, String) {
    let cluster = KafkaCluster::start(3);
    let brokers = cluster.bootstrap_servers().to_string();
    let topic = unique_name(prefix);
    cluster.create_topic(&topic, 1);
    cluster.mock().partition_leader(&topic, 0, Some(1)).unwrap();
    (cluster, brokers, topic)
}

/// A producer whose deliveries fail 2 s after the leader is gone (and that reconnects
/// quickly when it is back).
fn failing_fast(brokers: &str) -> kafka_seq::KafkaProducer {
    ProducerConfig::new(brokers)
        .set("linger.ms", "1")
        .set("message.timeout.ms", "2000")
        .set("reconnect.backoff.max.ms", "200")
        .create()
        .unwrap()
}

/// Reads `topic` from the start with a new group: exactly the messages `0..n`, in order.
async fn expect_in_order(brokers: &str, topic: &str, n: usize) {
    let mut stream = consumer(brokers, &unique_name("g-"), topic);
    for i in 0..n {
        let m = next(&mut stream).await;
        assert_eq!(id(&m), i, "every message once, in order");
        m.ack.ack();
    }
    let control = stream.control();
    drop(stream);
    timeout(WAIT, control.closed()).await.unwrap().unwrap();
}

/// The group's committed offsets of `topic`'s partitions (`-1`: none), from the broker.
fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    let out = (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect();
    // Drop the lists before the consumer (rust-rdkafka hang on drop otherwise).
    drop(got);
    drop(c);
    out
}

/// Polls the committed offsets until they equal `want` (bounded in time).
async fn wait_committed(brokers: &str, group: &str, topic: &str, want: &[i64]) {
    let partitions = i32::try_from(want.len()).unwrap();
    let mut last = Vec::new();
    for _ in 0..100 {
        let (b, g, t) = (brokers.to_string(), group.to_string(), topic.to_string());
        last = tokio::task::spawn_blocking(move || committed(&b, &g, &t, partitions))
            .await
            .unwrap();
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("committed offsets stayed {last:?}, expected {want:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_acks_commit_only_the_contiguous_prefix() {
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let topic = unique_name("prefix-");
    let group = unique_name("g-");
    cluster.create_topic(&topic, 1);
    produce(&brokers, &topic, 0..10, 1).await;

    let mut stream = consumer(&brokers, &group, &topic);
    let control = stream.control();
    let mut held = HashMap::new();
    for _ in 0..10 {
        let m = next(&mut stream).await;
        assert_eq!(
            id(&m) as i64,
            m.offset,
            "one partition: payload i at offset i"
        );
        held.insert(m.offset, m.ack);
    }
    for o in [0, 1, 2, 4, 5, 7] {
        held.remove(&o).unwrap().ack();
    }
    // 3 is not acked: the commit stops there even though 4, 5 and 7 were processed.
    wait_committed(&brokers, &group, &topic, &[3]).await;
    held.remove(&3).unwrap().ack();
    wait_committed(&brokers, &group, &topic, &[6]).await;
    // 6, 8, 9 are dropped unacknowledged at shutdown: nothing past 6 is committed.
    drop(held);
    control.shutdown();
    timeout(WAIT, control.closed()).await.unwrap().unwrap();
    assert_eq!(committed(&brokers, &group, &topic, 1), vec![6]);

    // A new consumer of the group resumes at 6: 7 is redelivered (at least once).
    let mut again = consumer(&brokers, &group, &topic);
    let first = next(&mut again).await;
    assert_eq!(first.offset, 6);
    drop(first);
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_periodic_commit_is_committed_again() {
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let topic = unique_name("recommit-");
    let group = unique_name("g-");
    cluster.create_topic(&topic, 1);
    produce(&brokers, &topic, 0..5, 1).await;

    // The broker refuses the first offset commit.
    cluster.mock().request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE],
    );
    let mut stream = consumer(&brokers, &group, &topic);
    let control = stream.control();
    for _ in 0..5 {
        next(&mut stream).await.ack.ack();
    }
    // The failure comes back while the stream is polled, and the offset is committed again
    // (with no new progress to carry it): not only at shutdown, never lost.
    let polling = tokio::spawn(async move {
        let extra = stream.next().await;
        assert!(extra.is_none(), "no sixth message: {extra:?}");
    });
    wait_committed(&brokers, &group, &topic, &[5]).await;
    control.shutdown();
    timeout(WAIT, polling).await.unwrap().unwrap();
    timeout(WAIT, control.closed()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_consumer_resumes_from_the_committed_offset_without_loss() {
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let topic = unique_name("resume-");
    let group = unique_name("g-");
    cluster.create_topic(&topic, 2);
    produce(&brokers, &topic, 0..100, 2).await;

    // The first consumer processes 40 messages, holds 5 unprocessed, then goes away.
    let mut first = consumer(&brokers, &group, &topic);
    let control = first.control();
    let mut processed = BTreeSet::new();
    let mut unprocessed = Vec::new();
    for _ in 0..40 {
        let m = next(&mut first).await;
        processed.insert(id(&m));
        m.ack.ack();
    }
    for _ in 0..5 {
        unprocessed.push(next(&mut first).await);
    }
    drop(first);
    drop(unprocessed);
    timeout(WAIT, control.closed()).await.unwrap().unwrap();
    let done = committed(&brokers, &group, &topic, 2);
    assert_eq!(
        done.iter().map(|o| (*o).max(0)).sum::<i64>(),
        40,
        "exactly the processed messages: {done:?}"
    );

    // Its replacement starts at the committed offsets and sees everything else.
    let mut second = consumer(&brokers, &group, &topic);
    let mut seen = BTreeSet::new();
    while processed.len() + seen.len() < 100 {
        let m = next(&mut second).await;
        assert!(
            m.offset >= done[m.partition as usize].max(0),
            "{}/{} is below the committed offset",
            m.partition,
            m.offset
        );
        assert!(
            !processed.contains(&id(&m)),
            "{} was committed already",
            id(&m)
        );
        seen.insert(id(&m));
        m.ack.ack();
    }
    let control = second.control();
    control.shutdown();
    drop(second);
    timeout(WAIT, control.closed()).await.unwrap().unwrap();
    assert_eq!(committed(&brokers, &group, &topic, 2), vec![50, 50]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_split_partitions_and_a_rebalance_loses_nothing() {
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let topic = unique_name("split-");
    let group = unique_name("g-");
    cluster.create_topic(&topic, 4);
    produce(&brokers, &topic, 0..200, 4).await;

    let mut a = consumer(&brokers, &group, &topic);
    let (ca, mut seen) = (a.control(), BTreeSet::new());
    for _ in 0..50 {
        let m = next(&mut a).await;
        seen.insert(id(&m));
        m.ack.ack();
    }
    // B joins: A's partitions are revoked (committing A's progress) and split. Rebalances
    // are served while a stream is polled (as with any Kafka consumer), so both are polled.
    let b = consumer(&brokers, &group, &topic);
    let cb = b.control();
    let mut both = futures::stream::select(a.map(|m| ('a', m)), b.map(|m| ('b', m)));
    let mut by = HashMap::new();
    let mut take = |who: char, m: KafkaMessage, seen: &mut BTreeSet<usize>| {
        by.entry(who)
            .or_insert_with(BTreeSet::new)
            .insert(m.partition);
        seen.insert(id(&m));
        m.ack.ack();
    };
    // Bounded in time, not only in count: while messages flow, 300 turns pass long before
    // the group has rebalanced.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for _ in 0..100_000 {
        if !cb.assignment().is_empty() && ca.assignment().len() + cb.assignment().len() == 4 {
            break;
        }
        if std::time::Instant::now() > deadline {
            break;
        }
        if let Ok(Some((who, m))) = timeout(Duration::from_millis(100), both.next()).await {
            take(who, m.unwrap(), &mut seen);
        }
    }
    let (pa, pb) = (ca.assignment(), cb.assignment());
    assert!(
        !pa.is_empty() && !pb.is_empty(),
        "split: A {pa:?}, B {pb:?}"
    );
    produce(&brokers, &topic, 200..400, 4).await;
    while seen.len() < 400 {
        let (who, m) = timeout(WAIT, both.next()).await.unwrap().unwrap();
        take(who, m.unwrap(), &mut seen);
    }
    assert_eq!(seen, (0..400).collect::<BTreeSet<_>>());
    let from_b = by.get(&'b').cloned().unwrap_or_default();
    assert_eq!(
        from_b,
        pb.iter().map(|(_, p)| *p).collect(),
        "B read its partitions"
    );
    // Progress made across the rebalance is committed periodically, then at shutdown.
    wait_committed(&brokers, &group, &topic, &[100; 4]).await;
    drop(both);
    timeout(WAIT, ca.closed()).await.unwrap().unwrap();
    timeout(WAIT, cb.closed()).await.unwrap().unwrap();
    assert_eq!(committed(&brokers, &group, &topic, 4), vec![100; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_subscription_picks_up_a_topic_created_later() {
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let prefix = unique_name("logs");
    let (early, late) = (format!("{prefix}-early"), format!("{prefix}-late"));
    cluster.create_topic(&early, 1);
    cluster.create_topic(&unique_name("other-"), 1);
    produce(&brokers, &early, 0..3, 1).await;

    let mut stream = ConsumerConfig::new(&brokers, unique_name("g-"))
        .pattern(&format!("{prefix}-.*"))
        .set("topic.metadata.refresh.interval.ms", "500")
        .subscribe()
        .unwrap();
    for i in 0..3 {
        let m = next(&mut stream).await;
        assert_eq!((&*m.topic, id(&m)), (early.as_str(), i));
        m.ack.ack();
    }
    cluster.create_topic(&late, 1);
    produce(&brokers, &late, 3..5, 1).await;
    for i in 3..5 {
        let m = next(&mut stream).await;
        assert_eq!((&*m.topic, id(&m)), (late.as_str(), i));
        m.ack.ack();
    }
    let control = stream.control();
    drop(stream);
    timeout(WAIT, control.closed()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_and_up_loses_no_acknowledged_message() {
    let (cluster, brokers, topic) = cluster_led_by_broker_1("down-");
    let producer = ProducerConfig::new(&brokers)
        .set("linger.ms", "1")
        .max_in_flight(50)
        .create()
        .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..100 {
        deliveries.push(
            producer
                .send(&topic, &Record::new(i.to_string()))
                .await
                .unwrap(),
        );
    }
    cluster.mock().broker_down(1).unwrap();
    // Sends go on while the leader is down; at most 50 wait unacknowledged.
    let sender = tokio::spawn({
        let (producer, topic) = (producer.clone(), topic.clone());
        async move {
            let mut d = Vec::new();
            for i in 100..200 {
                d.push(
                    producer
                        .send(&topic, &Record::new(i.to_string()))
                        .await
                        .unwrap(),
                );
            }
            d
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.mock().broker_up(1).unwrap();
    deliveries.extend(timeout(WAIT, sender).await.unwrap().unwrap());
    let mut acked = BTreeSet::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        let at = timeout(WAIT, d).await.unwrap().unwrap();
        assert_eq!(at.partition, 0);
        acked.insert(i);
    }
    timeout(WAIT, producer.flush()).await.unwrap().unwrap();

    let mut stream = consumer(&brokers, &unique_name("g-"), &topic);
    let mut seen = BTreeSet::new();
    while seen.len() < acked.len() {
        let m = next(&mut stream).await;
        seen.insert(id(&m));
        m.ack.ack();
    }
    assert_eq!(seen, acked, "every acknowledged message is in the topic");
    let control = stream.control();
    drop(stream);
    timeout(WAIT, control.closed()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_is_bounded_when_the_cluster_is_gone() {
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let topic = unique_name("gone-");
    cluster.create_topic(&topic, 1);
    produce(&brokers, &topic, 0..3, 1).await;
    let mut stream = ConsumerConfig::new(&brokers, unique_name("g-"))
        .topics([topic.as_str()])
        // No periodic commit: the acknowledged message is only committed at close.
        .commit_interval(Duration::from_secs(3600))
        .drain_timeout(Duration::from_secs(1))
        .close_timeout(Duration::from_secs(3))
        .subscribe()
        .unwrap();
    let control = stream.control();
    next(&mut stream).await.ack.ack();
    drop(cluster);
    drop(stream);
    // librdkafka's synchronous commit waits for the vanished coordinator forever; the
    // consumer gives up after close_timeout and says so instead of hanging (and the
    // runtime's shutdown at the end of this test does not wait for it either).
    let closed = timeout(WAIT, control.closed())
        .await
        .expect("closing is bounded");
    assert!(closed.is_err(), "the final commit cannot have succeeded");
}

/// Run only as the child process of `killed_consumer_is_replaced_without_loss`: consumes,
/// acks, and prints `acked ID` for every message, until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of killed_consumer_is_replaced_without_loss"]
async fn child_consumer() {
    use std::io::Write;
    let (Ok(brokers), Ok(group), Ok(topic)) = (
        std::env::var("KSEQ_CHILD_BROKERS"),
        std::env::var("KSEQ_CHILD_GROUP"),
        std::env::var("KSEQ_CHILD_TOPIC"),
    ) else {
        return;
    };
    let mut stream = consumer(&brokers, &group, &topic);
    let mut out = std::io::stdout();
    while let Some(m) = timeout(WAIT, stream.next()).await.unwrap() {
        let m = m.unwrap();
        let i = id(&m);
        m.ack.ack();
        writeln!(out, "acked {i}").unwrap();
        out.flush().unwrap();
        // Slow enough that the parent kills it mid-way.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_consumer_is_replaced_without_loss() {
    use std::io::BufRead;
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let topic = unique_name("killed-");
    let group = unique_name("g-");
    cluster.create_topic(&topic, 2);
    produce(&brokers, &topic, 0..200, 2).await;

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_consumer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KSEQ_CHILD_BROKERS", &brokers)
        .env("KSEQ_CHILD_GROUP", &group)
        .env("KSEQ_CHILD_TOPIC", &topic)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            // libtest may print "test child_consumer ... " before the first line.
            if let Some((_, i)) = line.split_once("acked ") {
                let _ = tx.send(i.trim().parse::<usize>().unwrap());
            }
        }
    });
    let mut acked = BTreeSet::new();
    while acked.len() < 40 {
        acked.insert(timeout(WAIT, rx.recv()).await.unwrap().expect("child runs"));
    }
    // Let a periodic commit happen, then kill it without any chance to commit again.
    let mut done = vec![-1, -1];
    for _ in 0..100 {
        let (b, g, t) = (brokers.clone(), group.clone(), topic.clone());
        done = tokio::task::spawn_blocking(move || committed(&b, &g, &t, 2))
            .await
            .unwrap();
        if done.iter().map(|o| (*o).max(0)).sum::<i64>() >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    while let Ok(i) = rx.try_recv() {
        acked.insert(i);
    }
    let done = committed(&brokers, &group, &topic, 2);
    let committed_total: i64 = done.iter().map(|o| (*o).max(0)).sum();
    assert!(committed_total >= 20, "the child committed: {done:?}");
    assert!(
        committed_total <= acked.len() as i64,
        "never committed past processing: {done:?} vs {} acked",
        acked.len()
    );
    assert!(acked.len() < 200, "killed mid-way");

    let mut next_consumer = consumer(&brokers, &group, &topic);
    let mut first_offset = [None, None];
    let mut seen = BTreeSet::new();
    while acked.union(&seen).count() < 200 {
        let Ok(Some(Ok(m))) = timeout(WAIT, next_consumer.next()).await else {
            let missing: Vec<usize> = (0..200)
                .filter(|i| !acked.contains(i) && !seen.contains(i))
                .collect();
            panic!(
                "acked {} seen {} committed {done:?}; missing {missing:?}",
                acked.len(),
                seen.len()
            );
        };
        let p = m.partition as usize;
        first_offset[p].get_or_insert(m.offset);
        seen.insert(id(&m));
        m.ack.ack();
    }
    for p in 0..2 {
        if let Some(first) = first_offset[p] {
            assert_eq!(
                first,
                done[p].max(0),
                "partition {p} resumes at its committed offset"
            );
        }
    }
    // Wait for the final commit while the cluster is still up: dropping the cluster first
    // left the close talking to a dead coordinator (this test used to hang there).
    let control = next_consumer.control();
    drop(next_consumer);
    timeout(WAIT, control.closed()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_unacked_bounds_outstanding_messages_and_shutdown_ends_a_waiting_stream() {
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let (topic, empty) = (unique_name("bound-"), unique_name("empty-"));
    let group = unique_name("g-");
    cluster.create_topic(&topic, 1);
    cluster.create_topic(&empty, 1);
    produce(&brokers, &topic, 0..10, 1).await;
    let subscribe = |topic: &str, group: &str| {
        ConsumerConfig::new(&brokers, group)
            .topics([topic])
            .max_unacked(3)
            .commit_interval(Duration::from_millis(100))
            .drain_timeout(Duration::from_secs(20))
            .subscribe()
            .unwrap()
    };
    let mut stream = subscribe(&topic, &group);
    let (m0, m1, m2) = (
        next(&mut stream).await,
        next(&mut stream).await,
        next(&mut stream).await,
    );
    assert_eq!([id(&m0), id(&m1), id(&m2)], [0, 1, 2]);
    // Three unacknowledged: a fourth waits for an acknowledgement.
    assert!(
        timeout(Duration::from_millis(700), stream.next())
            .await
            .is_err(),
        "a fourth message while three were unacknowledged"
    );
    m0.ack.ack();
    let m3 = next(&mut stream).await;
    assert_eq!(id(&m3), 3);
    // A dropped handle (a nack) frees room too, and keeps the commit point before it.
    drop(m1);
    let m4 = next(&mut stream).await;
    assert_eq!(id(&m4), 4);
    // Full again (2, 3, 4 out): shutdown ends the stream waiting for room.
    let control = stream.control();
    let ender = tokio::spawn(async move { stream.next().await.is_none() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    control.shutdown();
    assert!(
        timeout(WAIT, ender).await.unwrap().unwrap(),
        "the stream ended"
    );
    // The drain waits for the three outstanding messages.
    for m in [m2, m3, m4] {
        m.ack.ack();
    }
    timeout(WAIT, control.closed()).await.unwrap().unwrap();
    assert_eq!(committed(&brokers, &group, &topic, 1), vec![1]);

    // Shutdown also ends a stream waiting for messages that do not come.
    let mut idle = subscribe(&empty, &unique_name("g-"));
    let control = idle.control();
    let ender = tokio::spawn(async move { idle.next().await.is_none() });
    tokio::time::sleep(Duration::from_millis(500)).await;
    control.shutdown();
    assert!(
        timeout(WAIT, ender).await.unwrap().unwrap(),
        "the idle stream ended"
    );
    timeout(WAIT, control.closed()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_holds_at_most_max_in_flight_and_reports_a_failed_delivery() {
    let (cluster, brokers, topic) = cluster_led_by_broker_1("inflight-");
    let producer = ProducerConfig::new(&brokers)
        .set("linger.ms", "1")
        .max_in_flight(5)
        .create()
        .unwrap();
    // Acknowledged before the leader goes down (the producer knows the leader).
    let first = producer.send(&topic, &Record::new("0")).await.unwrap();
    timeout(WAIT, first).await.unwrap().unwrap();
    cluster.mock().broker_down(1).unwrap();
    let mut sink = producer.sink(&topic);
    for i in 1..6 {
        timeout(WAIT, sink.feed(Record::new(i.to_string())))
            .await
            .unwrap()
            .unwrap();
    }
    // Five unacknowledged: the sixth waits for room.
    assert!(
        timeout(Duration::from_millis(700), sink.feed(Record::new("6")))
            .await
            .is_err(),
        "a sixth message in flight"
    );
    cluster.mock().broker_up(1).unwrap();
    timeout(WAIT, sink.feed(Record::new("6")))
        .await
        .unwrap()
        .unwrap();
    timeout(WAIT, sink.close()).await.unwrap().unwrap();
    timeout(WAIT, producer.flush()).await.unwrap().unwrap();
    expect_in_order(&brokers, &topic, 7).await;

    // A delivery that fails (the leader stays down past message.timeout.ms) is reported.
    cluster.mock().broker_down(1).unwrap();
    let failing = ProducerConfig::new(&brokers)
        .set("message.timeout.ms", "500")
        .create()
        .unwrap();
    let mut sink = failing.sink(&topic);
    sink.feed(Record::new("lost")).await.unwrap();
    let err = timeout(WAIT, sink.close()).await.unwrap().unwrap_err();
    assert!(
        matches!(&err, kafka_seq::Error::Delivery { topic: t, .. } if *t == topic),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_waits_when_librdkafkas_queue_is_full_by_bytes_and_loses_nothing() {
    let (cluster, brokers, topic) = cluster_led_by_broker_1("bytes-");
    // librdkafka's queue holds 1 KiB: one 600-byte record fits, a second does not.
    let producer = ProducerConfig::new(&brokers)
        .set("linger.ms", "1")
        .set("queue.buffering.max.kbytes", "1")
        .create()
        .unwrap();
    let record = |i: usize| Record::new(format!("{i:<600}"));
    let first = producer.send(&topic, &record(0)).await.unwrap();
    timeout(WAIT, first).await.unwrap().unwrap();
    cluster.mock().broker_down(1).unwrap();
    let mut sink = producer.sink(&topic);
    timeout(WAIT, sink.feed(record(1))).await.unwrap().unwrap();
    // The queue is full: the sink keeps this record instead of failing it...
    timeout(WAIT, sink.feed(record(2))).await.unwrap().unwrap();
    // ...and waits before taking another.
    assert!(
        timeout(Duration::from_millis(700), sink.feed(record(3)))
            .await
            .is_err(),
        "a record taken while librdkafka's queue was full"
    );
    cluster.mock().broker_up(1).unwrap();
    timeout(WAIT, sink.feed(record(3))).await.unwrap().unwrap();
    timeout(WAIT, sink.close()).await.unwrap().unwrap();
    expect_in_order(&brokers, &topic, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_flush_waits_for_enqueued_messages_not_for_a_sinks_reserved_room() {
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let topic = unique_name("flush-");
    cluster.create_topic(&topic, 1);
    let producer = ProducerConfig::new(&brokers)
        .flush_timeout(Duration::from_secs(5))
        .create()
        .unwrap();
    // The sink reserves room for several messages at once and keeps what it has not used.
    let mut sink = producer.sink(&topic);
    sink.feed(Record::new("0")).await.unwrap();
    let single = producer.send(&topic, &Record::new("1")).await.unwrap();
    timeout(WAIT, producer.flush()).await.unwrap().unwrap();
    // Both messages were acknowledged by the time flush returned.
    use futures::FutureExt;
    assert!(single.now_or_never().is_some_and(|d| d.is_ok()));
    assert!(
        sink.flush().now_or_never().is_some_and(|r| r.is_ok()),
        "the sink's message was acknowledged before flush returned"
    );
    sink.close().await.unwrap();
}

#[test]
fn streams_messages_and_sinks_move_between_tasks() {
    fn send<T: Send + 'static>() {}
    fn shared<T: Send + Sync + 'static>() {}
    send::<KafkaStream>();
    send::<kafka_seq::KafkaSink>();
    shared::<KafkaMessage>();
    shared::<kafka_seq::ConsumerControl>();
    shared::<kafka_seq::KafkaProducer>();
    send::<kafka_seq::LaneSender>();
    send::<kafka_seq::LaneReports>();
    send::<kafka_seq::Ticket>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_senders_share_a_small_in_flight_bound_without_a_lost_wake_up() {
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let topic = unique_name("senders-");
    cluster.create_topic(&topic, 1);
    let producer = ProducerConfig::new(&brokers)
        .set("linger.ms", "0")
        .max_in_flight(3)
        .create()
        .unwrap();
    // 40 tasks (some through a sink, some through send) contend for 3 slots; every one of
    // their 800 messages must get through (a lost wake-up would hang a task).
    let mut tasks = Vec::new();
    for t in 0..40_usize {
        let (producer, topic) = (producer.clone(), topic.clone());
        tasks.push(tokio::spawn(async move {
            if t % 2 == 0 {
                let mut sink = producer.sink(&topic);
                for i in 0..20 {
                    sink.feed(Record::new((t * 20 + i).to_string()))
                        .await
                        .unwrap();
                }
                sink.close().await.unwrap();
            } else {
                for i in 0..20 {
                    let d = producer
                        .send(&topic, &Record::new((t * 20 + i).to_string()))
                        .await
                        .unwrap();
                    d.await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        timeout(WAIT, task).await.unwrap().unwrap();
    }
    let mut stream = consumer(&brokers, &unique_name("g-"), &topic);
    let mut seen = BTreeSet::new();
    while seen.len() < 800 {
        let m = next(&mut stream).await;
        assert!(seen.insert(id(&m)), "{} twice", id(&m));
        m.ack.ack();
    }
    assert_eq!(seen, (0..800).collect());
    let control = stream.control();
    drop(stream);
    timeout(WAIT, control.closed()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_restarts_a_partition_under_a_new_assignment_and_pause_holds_it() {
    use kafka_seq::SeekTo;
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let topic = unique_name("seek-");
    let group = unique_name("g-");
    cluster.create_topic(&topic, 1);
    produce(&brokers, &topic, 0..30, 1).await;

    let mut stream = consumer(&brokers, &group, &topic);
    let control = stream.control();
    let mut held = Vec::new();
    for i in 0..10 {
        let m = next(&mut stream).await;
        assert_eq!(m.offset, i);
        assert!(m.ack.is_current());
        held.push(m);
    }
    let before = held[0].ack.assignment();
    let sought = control
        .seek(&topic, 0, SeekTo::Offset(5), Duration::from_secs(5))
        .unwrap();
    assert!(
        held.iter().all(|m| !m.ack.is_current()),
        "the old assignment ended"
    );
    let m = next(&mut stream).await;
    assert_eq!(m.offset, 5, "the next message comes from the sought offset");
    assert_ne!(m.ack.assignment(), before);
    assert_eq!(m.ack.assignment(), sought);
    assert_eq!(control.assignment_ids()[0].2, sought);
    // Acks of the old assignment move nothing; the new one commits from 5 on.
    for old in held.drain(..) {
        old.ack.ack();
    }
    m.ack.ack();
    for i in 6..12 {
        let m = next(&mut stream).await;
        assert_eq!(m.offset, i);
        m.ack.ack();
    }
    wait_committed(&brokers, &group, &topic, &[12]).await;

    control.pause(&topic, 0).unwrap();
    // What was fetched before the pause may still come; then nothing.
    let mut after_pause = 0;
    while let Ok(Some(m)) = timeout(Duration::from_millis(1500), stream.next()).await {
        let m = m.unwrap();
        after_pause += 1;
        m.ack.ack();
        assert!(after_pause < 30, "a paused partition keeps coming");
    }
    let resumed_from = 12 + after_pause;
    control.resume(&topic, 0).unwrap();
    if resumed_from < 30 {
        let m = next(&mut stream).await;
        assert_eq!(
            m.offset, resumed_from,
            "resumes after the last message handed out"
        );
        m.ack.ack();
    }
    assert!(
        control
            .seek(&topic, 7, SeekTo::Beginning, Duration::from_secs(1))
            .is_err(),
        "not assigned"
    );
    drop(stream);
    timeout(WAIT, control.closed()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_reports_every_message_and_a_full_lane_waits() {
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let topic = unique_name("lane-");
    cluster.create_topic(&topic, 3);
    let producer = ProducerConfig::new(&brokers)
        .set("linger.ms", "2")
        .create()
        .unwrap();
    let (mut sender, mut reports) = producer.lane(64).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    // The reports side in another task, in the sender's order.
    let settler = tokio::spawn(async move {
        let mut delivered = 0usize;
        while let Some(ticket) = rx.recv().await {
            timeout(WAIT, reports.report(ticket))
                .await
                .unwrap()
                .unwrap();
            delivered += 1;
        }
        delivered
    });
    let n = 20_000usize;
    for i in 0..n {
        let p = i32::try_from(i % 3).unwrap();
        let ticket = timeout(
            WAIT,
            sender.send(&topic, &Record::new(i.to_string()).partition(p)),
        )
        .await
        .unwrap()
        .unwrap();
        tx.send(ticket).await.unwrap();
    }
    drop(tx);
    assert_eq!(timeout(WAIT, settler).await.unwrap().unwrap(), n);
    // Every message is in the topic exactly once.
    let mut stream = consumer(&brokers, &unique_name("g-"), &topic);
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let m = next(&mut stream).await;
        assert!(seen.insert(id(&m)), "message {} twice", id(&m));
        m.ack.ack();
    }
    assert_eq!(seen.len(), n);
    drop(stream);

    // A lane of 4 slots with the broker down: four messages go, the fifth waits for room.
    let (cluster, brokers, topic) = cluster_led_by_broker_1("lane-full-");
    let producer = ProducerConfig::new(&brokers)
        .set("linger.ms", "1")
        .create()
        .unwrap();
    let (mut sender, mut reports) = producer.lane(4).unwrap();
    let t0 = sender.send(&topic, &Record::new("0")).await.unwrap();
    timeout(WAIT, reports.report(t0)).await.unwrap().unwrap();
    cluster.mock().broker_down(1).unwrap();
    let mut tickets = Vec::new();
    for i in 1..5 {
        let t = timeout(WAIT, sender.send(&topic, &Record::new(i.to_string())))
            .await
            .unwrap()
            .unwrap();
        tickets.push(t);
    }
    assert!(!sender.has_room());
    assert!(
        timeout(
            Duration::from_millis(700),
            sender.send(&topic, &Record::new("5"))
        )
        .await
        .is_err(),
        "a fifth message in a lane of four"
    );
    // A report given up before it came: its slot is freed when it comes.
    {
        let abandoned = tickets.remove(0);
        let fut = reports.report(abandoned);
        drop(fut);
    }
    cluster.mock().broker_up(1).unwrap();
    let t5 = timeout(WAIT, sender.send(&topic, &Record::new("5")))
        .await
        .unwrap()
        .unwrap();
    tickets.push(t5);
    for t in tickets {
        timeout(WAIT, reports.report(t)).await.unwrap().unwrap();
    }
    expect_in_order(&brokers, &topic, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_reports_a_failed_delivery_and_lanes_closed_in_flight_are_harmless() {
    let (cluster, brokers, topic) = cluster_led_by_broker_1("lane-fail-");
    let producer = failing_fast(&brokers);
    let (mut sender, mut reports) = producer.lane(8).unwrap();
    let t = sender.send(&topic, &Record::new("ok")).await.unwrap();
    timeout(WAIT, reports.report(t)).await.unwrap().unwrap();
    cluster.mock().broker_down(1).unwrap();
    // A lane closed with messages in flight; their reports come to nobody.
    let (mut closed, closed_reports) = producer.lane(8).unwrap();
    for i in 0..3 {
        let _ = closed
            .send(&topic, &Record::new(format!("gone {i}")))
            .await
            .unwrap();
    }
    drop((closed, closed_reports));
    let t = sender.send(&topic, &Record::new("lost")).await.unwrap();
    let err = timeout(WAIT, reports.report(t)).await.unwrap().unwrap_err();
    assert!(
        matches!(&err, kafka_seq::Error::Delivery { topic: t, .. } if *t == topic),
        "{err}"
    );
    // Lanes opened since (numbers reused or not) get their own reports only.
    cluster.mock().broker_up(1).unwrap();
    for round in 0..20 {
        let (mut s, mut r) = producer.lane(2).unwrap();
        let t = s
            .send(&topic, &Record::new(format!("round {round}")))
            .await
            .unwrap();
        timeout(WAIT, r.report(t)).await.unwrap().unwrap();
    }
    timeout(WAIT, producer.flush()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_borrow_messages_ack_them_on_return_and_held_ones_stop_the_commit() {
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let topic = unique_name("batch-");
    let group = unique_name("g-");
    cluster.create_topic(&topic, 3);
    let n = 3000;
    produce(&brokers, &topic, 0..n, 3).await;

    let mut stream = consumer(&brokers, &group, &topic);
    let control = stream.control();
    // Per partition, the payloads seen in order; partition 1's offsets 100 and 200 are held
    // (batches and `next` mix: every eighth batch is followed by one `next`).
    let mut seen: Vec<Vec<usize>> = vec![Vec::new(); 3];
    let mut held = Vec::new();
    let mut owned = Vec::new();
    let mut batches = 0;
    let mut breaks = 0;
    let mut nexts = 0;
    while seen.iter().map(Vec::len).sum::<usize>() < n {
        assert!(batches < 100_000, "bounded");
        batches += 1;
        let got = timeout(
            WAIT,
            stream.next_batch(64, |m| {
                let p = usize::try_from(m.partition).unwrap();
                let v: usize = std::str::from_utf8(m.payload.unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(m.key, m.payload, "key and payload borrowed as produced");
                assert_eq!(v % 3, p);
                seen[p].push(v);
                // Inside a batch the client is taken: seek and pause refuse at once.
                if m.offset == 7 && m.partition == 2 {
                    assert!(control.pause(&topic, 2).is_err());
                }
                if m.partition == 1 && (m.offset == 100 || m.offset == 200) {
                    held.push(m.hold());
                } else if m.partition == 1 && m.offset == 150 {
                    owned.push(m.to_owned());
                    breaks += 1;
                    return std::ops::ControlFlow::Break(());
                }
                std::ops::ControlFlow::Continue(())
            }),
        )
        .await
        .expect("a batch within the time limit")
        .expect("the stream goes on")
        .expect("no consumer error");
        assert!((1..=64).contains(&got));
        if batches % 8 == 0 && seen.iter().map(Vec::len).sum::<usize>() < n {
            let m = next(&mut stream).await;
            let p = usize::try_from(m.partition).unwrap();
            seen[p].push(id(&m));
            nexts += 1;
            if m.partition == 1 && m.offset == 200 {
                held.push(m.ack);
            } else {
                m.ack.ack();
            }
        }
    }
    assert!(nexts > 0);
    assert_eq!(breaks, 1);
    for (p, values) in seen.iter().enumerate() {
        let want: Vec<usize> = (0..n).filter(|v| v % 3 == p).collect();
        assert_eq!(values, &want, "partition {p}: every message once, in order");
    }
    let copy = owned.pop().unwrap();
    assert_eq!((copy.offset, id(&copy)), (150, 451));
    copy.ack.ack();
    // Partitions 0 and 2 are committed to their end; 1 stops at the held offset 100.
    wait_committed(&brokers, &group, &topic, &[1000, 100, 1000]).await;
    let (first, second) = (held.remove(0), held.remove(0));
    assert_eq!(first.assignment(), second.assignment());
    first.ack();
    wait_committed(&brokers, &group, &topic, &[1000, 200, 1000]).await;
    second.ack();
    wait_committed(&brokers, &group, &topic, &[1000, 1000, 1000]).await;

    // A callback that panics acknowledges nothing: the commit stops before its message.
    produce(&brokers, &topic, n..n + 3, 3).await;
    let (mut panicked, mut passed) = (0, 0);
    for _ in 0..1000 {
        if panicked + passed == 3 {
            break;
        }
        let batch = stream.next_batch(1, |m| {
            assert!(m.partition != 0, "processing failed");
            std::ops::ControlFlow::Continue(())
        });
        match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(batch)).await {
            Ok(r) => passed += r.unwrap().unwrap(),
            Err(_) => panicked += 1,
        }
    }
    assert_eq!((panicked, passed), (1, 2));
    // The other partitions' new messages are acknowledged; partition 0 stays at 1000.
    wait_committed(&brokers, &group, &topic, &[1000, 1001, 1001]).await;
    control.shutdown();
    drop(stream);
    timeout(WAIT, control.closed()).await.unwrap().unwrap();
}

/// Headers travel with records produced through topic handles (a sink and `send`), in
/// order, repeated names, empty and non-UTF-8 values included; a record refused at once
/// (over `message.max.bytes`) with headers is an error naming the topic, and the producer
/// goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_arrive_in_order_and_a_refused_record_with_headers_is_an_error() {
    let (_cluster, brokers, topic) = cluster_led_by_broker_1("headers-");
    let producer = ProducerConfig::new(&brokers)
        .set("message.max.bytes", "10000")
        .create()
        .unwrap();
    let with = |i: usize| {
        Record::new(i.to_string())
            .header("a", format!("first {i}"))
            .header("b", Vec::new())
            .header("a", vec![0xff, 0x00, i as u8])
    };
    let mut sink = producer.sink(&topic);
    sink.feed(with(0)).await.unwrap();
    sink.feed(Record::new("1")).await.unwrap();
    timeout(WAIT, sink.close()).await.unwrap().unwrap();
    let report = producer.send(&topic, &with(2)).await.unwrap();
    timeout(WAIT, report).await.unwrap().unwrap();

    let big = Record::new(vec![b'x'; 20_000]).header("a", "too large");
    let err = producer.send(&topic, &big).await.unwrap_err();
    assert!(
        matches!(&err, kafka_seq::Error::Kafka { op, .. } if op.contains(&topic)),
        "{err}"
    );
    let report = producer.send(&topic, &with(3)).await.unwrap();
    timeout(WAIT, report).await.unwrap().unwrap();

    let mut stream = consumer(&brokers, &unique_name("g-"), &topic);
    for i in 0..4 {
        let m = next(&mut stream).await;
        assert_eq!(id(&m), i, "every message once, in order");
        let want: Vec<(String, Option<bytes::Bytes>)> = if i == 1 {
            Vec::new()
        } else {
            vec![
                ("a".into(), Some(format!("first {i}").into())),
                ("b".into(), Some(bytes::Bytes::new())),
                ("a".into(), Some(vec![0xff, 0x00, i as u8].into())),
            ]
        };
        assert_eq!(m.headers, want, "message {i}'s headers");
        m.ack.ack();
    }
    let control = stream.control();
    drop(stream);
    timeout(WAIT, control.closed()).await.unwrap().unwrap();
}

/// A topic name no topic can have is refused at once with librdkafka's reason and the
/// name: longer than 512 bytes (`InvalidArgument`, as producing by name says) or holding a
/// NUL byte; the producer goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_name_librdkafka_refuses_is_an_error_naming_it() {
    let (_cluster, brokers, topic) = cluster_led_by_broker_1("badname-");
    let producer = ProducerConfig::new(&brokers).create().unwrap();
    let long = "t".repeat(600);
    let err = producer.send(&long, &Record::new("x")).await.unwrap_err();
    assert!(
        matches!(
            &err,
            kafka_seq::Error::Kafka {
                op,
                source: rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::InvalidArgument
                ),
            } if op.contains(&long)
        ),
        "{err}"
    );
    let mut sink = producer.sink("bad\0name");
    let err = sink.feed(Record::new("x")).await.unwrap_err();
    assert!(
        matches!(
            &err,
            kafka_seq::Error::Kafka {
                source: rdkafka::error::KafkaError::Nul(_),
                ..
            }
        ),
        "{err}"
    );
    let report = producer.send(&topic, &Record::new("0")).await.unwrap();
    timeout(WAIT, report).await.unwrap().unwrap();
    expect_in_order(&brokers, &topic, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_lane_counts_deliveries_in_bulk_and_hands_back_failed_and_purged_messages() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let (cluster, brokers, topic) = cluster_led_by_broker_1("detached-");
    let producer = failing_fast(&brokers);
    let (messages, weight, calls) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let counted = (messages.clone(), weight.clone(), calls.clone());
    let (mut sender, mut returns) = producer
        .detached(1000, None, move |m, w| {
            counted.0.fetch_add(m, Ordering::SeqCst);
            counted.1.fetch_add(w, Ordering::SeqCst);
            counted.2.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    // Delivered: counted with their weights, in bulk (not once per message).
    let n = 5000;
    for i in 0..n {
        let record = Record::new(i.to_string()).key(i.to_string());
        if !sender.try_send(&topic, &record, 7).unwrap() {
            sender.send(&topic, &record, 7).await.unwrap();
        }
    }
    timeout(WAIT, producer.flush()).await.unwrap().unwrap();
    assert_eq!(returns.outstanding(), 0);
    assert_eq!(messages.load(Ordering::SeqCst), n);
    assert_eq!(weight.load(Ordering::SeqCst), 7 * n);
    let bulk = calls.load(Ordering::SeqCst);
    assert!(
        bulk >= 1 && bulk <= n / 100,
        "{bulk} calls for {n} messages"
    );
    expect_in_order(&brokers, &topic, usize::try_from(n).unwrap()).await;

    // Failed (the leader down past message.timeout.ms): handed back whole, not counted.
    cluster.mock().broker_down(1).unwrap();
    let failed = Record::new("lost")
        .key("k")
        .header("h", "v1")
        .header("h", "")
        .timestamp(1_700_000_000_123);
    sender.send(&topic, &failed, 11).await.unwrap();
    let r = timeout(WAIT, returns.next()).await.unwrap().unwrap();
    assert_eq!(r.topic, topic);
    assert_eq!(r.weight, 11);
    assert_eq!(r.record, failed);
    assert!(
        matches!(&r.error, kafka_seq::Error::Delivery { topic: t, .. } if *t == topic),
        "{}",
        r.error
    );
    assert_eq!(messages.load(Ordering::SeqCst), n);
    assert_eq!(weight.load(Ordering::SeqCst), 7 * n);

    // Purged (a shutdown deadline): everything librdkafka holds comes back.
    for i in 0..20 {
        sender
            .send(&topic, &Record::new(format!("held {i}")), 1)
            .await
            .unwrap();
    }
    assert_eq!(returns.outstanding(), 20);
    producer.purge().unwrap();
    drop(sender);
    let mut back = Vec::new();
    while let Some(r) = timeout(WAIT, returns.next()).await.unwrap() {
        assert!(r.error.to_string().contains("Purged"), "{}", r.error);
        back.push(r.record.payload.unwrap());
    }
    let want: Vec<_> = (0..20)
        .map(|i| bytes::Bytes::from(format!("held {i}")))
        .collect();
    assert_eq!(back, want, "every purged message back, in order");
    assert_eq!(messages.load(Ordering::SeqCst), n);
    cluster.mock().broker_up(1).unwrap();
}
