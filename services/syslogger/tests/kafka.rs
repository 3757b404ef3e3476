//! The service against librdkafka's in-process mock cluster: volume and order, backpressure
//! during an outage, RELP acknowledgements after Kafka's, dead letters, spill and replay.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Relp, WAIT, args, init_logs, read, start};
use test_services::kafka::KafkaCluster;
use test_services::unique_name;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// 100 000 messages over 8 connections (half octet-counted, half LF-framed) arrive
/// complete and, per connection (one host each, keyed by host), in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_messages_over_8_connections_arrive_complete_and_in_order() {
    init_logs();
    const CONNECTIONS: usize = 8;
    const PER: usize = 12_500;
    let cluster = KafkaCluster::start(1);
    let topic = unique_name("volume-");
    cluster.create_topic(&topic, 4);
    let svc = start(args(cluster.bootstrap_servers(), &topic)).await;
    let addr = svc.tcp();
    let mut senders = Vec::new();
    for c in 0..CONNECTIONS {
        senders.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut buf = Vec::with_capacity(PER * 64);
            for i in 0..PER {
                let msg = format!("<13>Oct 11 22:14:15 host{c} app[1]: seq={i}");
                if c % 2 == 0 {
                    buf.extend_from_slice(format!("{} {msg}", msg.len()).as_bytes());
                } else {
                    buf.extend_from_slice(msg.as_bytes());
                    buf.push(b'\n');
                }
            }
            // Odd-sized writes: frames cross write boundaries.
            for chunk in buf.chunks(1337) {
                s.write_all(chunk).await.unwrap();
            }
            s.shutdown().await.unwrap();
        }));
    }
    for s in senders {
        tokio::time::timeout(WAIT, s).await.unwrap().unwrap();
    }
    let got = read(
        cluster.bootstrap_servers(),
        &topic,
        4,
        CONNECTIONS * PER,
        WAIT,
    )
    .await;
    assert_eq!(got.len(), CONNECTIONS * PER, "every message arrived");
    let mut next: HashMap<String, usize> = HashMap::new();
    for g in &got {
        let text = g.text();
        let host = text.split(' ').nth(3).unwrap().to_string();
        assert_eq!(g.key.as_deref(), Some(host.as_bytes()), "keyed by host");
        let seq: usize = text.rsplit("seq=").next().unwrap().parse().unwrap();
        let want = next.entry(host.clone()).or_insert(0);
        assert_eq!(seq, *want, "{host}: in order, none missing or repeated");
        *want += 1;
    }
    assert_eq!(next.len(), CONNECTIONS);
    let outcome = svc.stop().await;
    assert_eq!(outcome.delivered, (CONNECTIONS * PER) as u64);
    assert!(outcome.succeeded());
}

/// The only broker goes down: reading pauses once the in-flight budget is full (the
/// sender's writes block), nothing expires, and when it comes back everything arrives in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_pauses_reading_and_loses_nothing() {
    init_logs();
    let cluster = KafkaCluster::start(1);
    let topic = unique_name("outage-");
    cluster.create_topic(&topic, 1);
    let mut a = args(cluster.bootstrap_servers(), &topic);
    a.max_in_flight_bytes = 64 * 1024;
    a.max_frame = 1024;
    let svc = start(a).await;
    // One message through first (metadata known). The client's send buffer is small (no
    // autotuning), so what the service does not read stays with the client.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_send_buffer_size(8 * 1024).unwrap();
    let mut s = sock.connect(svc.tcp()).await.unwrap();
    deliver_one_then_broker_down(
        &cluster,
        &topic,
        &mut s,
        b"<13>Oct 11 22:14:15 h app: seq=0\n",
    )
    .await;
    // 12 000 messages of ~300 bytes: 3.6 MB, far more than the 64 KiB budget plus socket
    // buffers hold while Kafka is down (and less than the mock cluster keeps per
    // partition, 5 MB).
    const N: usize = 12_000;
    let pad = "x".repeat(260);
    let writer = tokio::spawn(async move {
        for i in 1..=N {
            let line = format!("<13>Oct 11 22:14:15 h app: seq={i} {pad}\n");
            s.write_all(line.as_bytes()).await.unwrap();
        }
        s
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !writer.is_finished(),
        "the sender is pushed back while Kafka is down"
    );
    cluster.mock().broker_up(1).unwrap();
    let mut s = tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
    s.shutdown().await.unwrap();
    let got = read(cluster.bootstrap_servers(), &topic, 1, N + 1, WAIT).await;
    let seqs: Vec<usize> = got
        .iter()
        .map(|g| {
            g.text()
                .split("seq=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_in_order(&seqs, N + 1);
    let outcome = svc.stop().await;
    assert!(outcome.succeeded(), "{outcome:?}");
}

/// The case as it is: the broker down for longer than librdkafka's default message
/// timeout (300 s). It takes over five minutes, asleep: the other tests of this file run
/// beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_librdkafkas_default_message_timeout_loses_nothing() {
    init_logs();
    let cluster = KafkaCluster::start(1);
    let topic = unique_name("long-outage-");
    cluster.create_topic(&topic, 1);
    let svc = start(args(cluster.bootstrap_servers(), &topic)).await;
    let mut s = TcpStream::connect(svc.tcp()).await.unwrap();
    deliver_one_then_broker_down(
        &cluster,
        &topic,
        &mut s,
        b"<13>Oct 11 22:14:15 h app: seq=0\n",
    )
    .await;
    for i in 1..=100 {
        s.write_all(format!("<13>Oct 11 22:14:15 h app: seq={i}\n").as_bytes())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(310)).await;
    cluster.mock().broker_up(1).unwrap();
    s.shutdown().await.unwrap();
    let got = read(cluster.bootstrap_servers(), &topic, 1, 101, WAIT).await;
    let seqs: Vec<usize> = got
        .iter()
        .map(|g| g.text().rsplit("seq=").next().unwrap().parse().unwrap())
        .collect();
    assert_in_order(&seqs, 101);
    let outcome = svc.stop().await;
    assert!(outcome.succeeded(), "{outcome:?}");
}

/// `seqs` is `0..n` (the first difference is reported, not the whole list).
fn assert_in_order(seqs: &[usize], n: usize) {
    if let Some(i) = (0..n.min(seqs.len())).find(|&i| seqs[i] != i) {
        panic!(
            "{} messages; first out of order at {i}: {:?}",
            seqs.len(),
            &seqs[i.saturating_sub(3)..(i + 3).min(seqs.len())]
        );
    }
    assert_eq!(seqs.len(), n, "every message once");
}

/// With a finite `message.timeout.ms` set by the operator, messages that expire during an
/// outage are produced again (never dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_produced_again() {
    init_logs();
    let cluster = KafkaCluster::start(1);
    let topic = unique_name("expire-");
    cluster.create_topic(&topic, 1);
    let mut a = args(cluster.bootstrap_servers(), &topic);
    a.kafka_properties = vec!["message.timeout.ms=1000".into()];
    let svc = start(a).await;
    let mut s = TcpStream::connect(svc.tcp()).await.unwrap();
    deliver_one_then_broker_down(
        &cluster,
        &topic,
        &mut s,
        b"<13>Oct 11 22:14:15 h app: first\n",
    )
    .await;
    for i in 0..20 {
        s.write_all(format!("<13>Oct 11 22:14:15 h app: during {i}\n").as_bytes())
            .await
            .unwrap();
    }
    // Longer than the message timeout: they expire inside librdkafka at least once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.mock().broker_up(1).unwrap();
    s.shutdown().await.unwrap();
    let got = read(cluster.bootstrap_servers(), &topic, 1, 21, WAIT).await;
    let mut texts: Vec<String> = got.iter().map(common::Got::text).collect();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), 21, "every message arrived: {texts:?}");
    let outcome = svc.stop().await;
    assert!(outcome.succeeded(), "{outcome:?}");
}

/// RELP: a `syslog` transaction is answered only after Kafka acknowledged its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relp_answers_only_after_kafka_acknowledged() {
    init_logs();
    let cluster = KafkaCluster::start(1);
    let topic = unique_name("relp-");
    cluster.create_topic(&topic, 1);
    let svc = start(args(cluster.bootstrap_servers(), &topic)).await;
    let mut c = Relp::connect(svc.relp()).await.unwrap();
    let t = c.syslog(b"<13>Oct 11 22:14:15 h app: one").await.unwrap();
    let (txnr, rsp) = tokio::time::timeout(WAIT, c.response())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((txnr, rsp.as_str()), (t, "200 OK"));
    cluster.mock().broker_down(1).unwrap();
    let t2 = c.syslog(b"<13>Oct 11 22:14:15 h app: two").await.unwrap();
    let t3 = c.syslog(b"<13>Oct 11 22:14:15 h app: three").await.unwrap();
    let early = tokio::time::timeout(Duration::from_secs(2), c.response()).await;
    assert!(early.is_err(), "no answer while Kafka is down: {early:?}");
    cluster.mock().broker_up(1).unwrap();
    let a2 = tokio::time::timeout(WAIT, c.response())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let a3 = tokio::time::timeout(WAIT, c.response())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((a2.0, a3.0), (t2, t3), "answers in transaction order");
    let got = read(cluster.bootstrap_servers(), &topic, 1, 3, WAIT).await;
    assert_eq!(got.len(), 3);
    c.close().await.unwrap();
    let outcome = svc.stop().await;
    assert_eq!(outcome.delivered, 3);
}

/// Messages Kafka refuses for good (larger than `message.max.bytes`) go to the dead-letter
/// file with their reason; RELP answers them (they are settled); the others are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_messages_go_to_the_dead_letter_file() {
    init_logs();
    let cluster = KafkaCluster::start(1);
    let topic = unique_name("dead-");
    cluster.create_topic(&topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.baldr");
    let mut a = args(cluster.bootstrap_servers(), &topic);
    a.kafka_properties = vec!["message.max.bytes=2000".into()];
    a.dead_letter = Some(format!("file://{}", dead.display()));
    let svc = start(a).await;
    let big = format!("<13>Oct 11 22:14:15 h app: {}", "y".repeat(5000));
    let mut c = Relp::connect(svc.relp()).await.unwrap();
    c.syslog(b"<13>Oct 11 22:14:15 h app: small").await.unwrap();
    c.syslog(big.as_bytes()).await.unwrap();
    c.syslog(b"<13>Oct 11 22:14:15 h app: small again")
        .await
        .unwrap();
    for _ in 0..3 {
        let (_, rsp) = tokio::time::timeout(WAIT, c.response())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(rsp, "200 OK");
    }
    c.close().await.unwrap();
    let outcome = svc.stop().await;
    assert_eq!(
        (outcome.delivered, outcome.dead_lettered),
        (2, 1),
        "{outcome:?}"
    );
    let letters = syslogger::read_envelopes(&dead).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].payload, big.as_bytes());
    assert_eq!(letters[0].topic, topic);
    assert!(
        letters[0]
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("too large"),
        "{:?}",
        letters[0].reason
    );
}

/// The dead-letter topic gets refused messages with the reason in a header; oversized
/// frames can be sent there instead of truncated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_can_go_to_the_dead_letter_topic() {
    let (cluster, topic, dlq) = with_dead_letter_topic("big-");
    let mut a = args(cluster.bootstrap_servers(), &topic);
    a.max_frame = 100;
    a.oversize = syslogger::Oversize::DeadLetter;
    a.dead_letter = Some(dlq.clone());
    let svc = start(a).await;
    let mut s = TcpStream::connect(svc.tcp()).await.unwrap();
    let long = format!("<13>Oct 11 22:14:15 h app: {}", "z".repeat(300));
    s.write_all(format!("{long}\n<13>Oct 11 22:14:15 h app: ok\n").as_bytes())
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let ok = read(cluster.bootstrap_servers(), &topic, 1, 1, WAIT).await;
    assert_eq!(ok.len(), 1);
    assert!(ok[0].text().ends_with("app: ok"));
    let dead = read(cluster.bootstrap_servers(), &dlq, 1, 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload, long.as_bytes()[..100].to_vec());
    let reason = String::from_utf8_lossy(&dead[0].headers["syslogger.reason"]).into_owned();
    assert!(reason.contains("oversize"), "{reason}");
    let outcome = svc.stop().await;
    assert_eq!((outcome.delivered, outcome.dead_lettered), (1, 1));
}

/// A TCP stream keeps nothing of a produced message: one the broker refuses for good after
/// taking the request comes back from librdkafka whole (payload, key) and goes
/// to the dead-letter topic with the broker's reason; the messages around it are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_broker_refuses_comes_back_whole_to_the_dead_letter_topic() {
    use rdkafka::bindings::rd_kafka_resp_err_t as Err;
    use rdkafka::types::RDKafkaApiKey;
    let (cluster, topic, dlq) = with_dead_letter_topic("refused-");
    let mut a = args(cluster.bootstrap_servers(), &topic);
    a.dead_letter = Some(dlq.clone());
    let svc = start(a).await;
    let mut s = TcpStream::connect(svc.tcp()).await.unwrap();
    s.write_all(b"<13>Oct 11 22:14:15 h1 app: first\n")
        .await
        .unwrap();
    assert_eq!(
        read(cluster.bootstrap_servers(), &topic, 1, 1, WAIT)
            .await
            .len(),
        1
    );
    // The broker answers the next produce request with a permanent error.
    cluster.mock().request_errors(
        RDKafkaApiKey::Produce,
        &[Err::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let before = chrono::Utc::now().timestamp_millis();
    s.write_all(b"<13>Oct 11 22:14:15 h2 app: refused\n")
        .await
        .unwrap();
    let dead = read(cluster.bootstrap_servers(), &dlq, 1, 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].text(), "<13>Oct 11 22:14:15 h2 app: refused");
    assert_eq!(
        dead[0].key.as_deref(),
        Some(&b"h2"[..]),
        "its key came back"
    );
    let ts = dead[0].timestamp.expect("a timestamp");
    assert!(
        ts >= before - 1000,
        "a timestamp of this run: {ts} vs {before}"
    );
    let reason = String::from_utf8_lossy(&dead[0].headers["syslogger.reason"]).into_owned();
    assert!(reason.contains("MessageSizeTooLarge"), "{reason}");
    assert_eq!(dead[0].headers["syslogger.topic"], topic.as_bytes());
    s.write_all(b"<13>Oct 11 22:14:15 h1 app: last\n")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let got = read(cluster.bootstrap_servers(), &topic, 1, 2, WAIT).await;
    let texts: Vec<String> = got.iter().map(common::Got::text).collect();
    assert_eq!(
        texts,
        [
            "<13>Oct 11 22:14:15 h1 app: first",
            "<13>Oct 11 22:14:15 h1 app: last"
        ]
    );
    let outcome = svc.stop().await;
    assert_eq!(
        (outcome.received, outcome.delivered, outcome.dead_lettered),
        (3, 2, 1),
        "{outcome:?}"
    );
    assert!(outcome.succeeded(), "{outcome:?}");
}

/// Kafka down through the whole shutdown: what was received is spilled (exit outcome says
/// how many); the next start sends the spill first and removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_messages_are_spilled_and_sent_by_the_next_start() {
    init_logs();
    let cluster = KafkaCluster::start(1);
    let topic = unique_name("spill-");
    cluster.create_topic(&topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(cluster.bootstrap_servers(), &topic);
    a.spill_dir = Some(dir.path().to_path_buf());
    a.drain_timeout = Duration::from_secs(3);
    let svc = start(a.clone()).await;
    let mut s = TcpStream::connect(svc.tcp()).await.unwrap();
    deliver_one_then_broker_down(
        &cluster,
        &topic,
        &mut s,
        b"<13>Oct 11 22:14:15 h app: before\n",
    )
    .await;
    for i in 0..50 {
        s.write_all(format!("<13>Oct 11 22:14:15 h app: spilled {i}\n").as_bytes())
            .await
            .unwrap();
    }
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outcome = svc.stop().await;
    let stopped = chrono::Utc::now().timestamp_millis();
    assert_eq!(outcome.spilled, 50, "{outcome:?}");
    assert!(!outcome.succeeded());
    let file = outcome.spill_file.clone().unwrap();
    assert_eq!(syslogger::read_envelopes(&file).unwrap().len(), 50);
    drop(s);

    cluster.mock().broker_up(1).unwrap();
    let svc = start(a).await;
    let got = read(cluster.bootstrap_servers(), &topic, 1, 51, WAIT).await;
    let texts: Vec<String> = got.iter().map(common::Got::text).collect();
    assert_eq!(texts.len(), 51, "{texts:?}");
    for (i, t) in texts[1..].iter().enumerate() {
        assert!(t.ends_with(&format!("spilled {i}")), "in order: {t}");
    }
    // Sent again, each keeps the Kafka timestamp of its first receipt (before the stop).
    for g in &got[1..] {
        let ts = g.timestamp.expect("a Kafka timestamp");
        assert!(
            ts <= stopped,
            "{ts} is the first receipt's, before {stopped}"
        );
    }
    let outcome = svc.stop().await;
    assert_eq!(
        (outcome.replayed, outcome.delivered),
        (50, 50),
        "{outcome:?}"
    );
    assert!(outcome.succeeded());
    assert!(!file.exists(), "the delivered spill is removed");
}

/// UDP datagrams arrive; JSON payloads and headers carry the parsed fields; the topic
/// template routes by app name with a fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_json_headers_and_topic_templates() {
    init_logs();
    let cluster = KafkaCluster::start(1);
    let prefix = unique_name("t");
    let nginx = format!("{prefix}-nginx");
    let fallback = format!("{prefix}-other");
    cluster.create_topic(&nginx, 1);
    cluster.create_topic(&fallback, 1);
    let mut a = args(
        cluster.bootstrap_servers(),
        &format!("{prefix}-{{appname}}"),
    );
    a.topic_fallback = fallback.clone();
    a.udp_listen = vec!["127.0.0.1:0".into()];
    a.format = syslogger::Format::Json;
    a.headers = true;
    let svc = start(a).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sent = chrono::Utc::now().timestamp_millis();
    udp.send_to(
        b"<165>1 2003-10-11T22:14:15.003Z web1 nginx 42 ID7 - GET /\n",
        svc.bound.udp[0],
    )
    .await
    .unwrap();
    udp.send_to(b"no syslog here", svc.bound.udp[0])
        .await
        .unwrap();
    let got = read(cluster.bootstrap_servers(), &nginx, 1, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    let v: serde_json::Value = serde_json::from_slice(&got[0].payload).unwrap();
    assert_eq!(v["host"], "web1");
    assert_eq!(v["appname"], "nginx");
    assert_eq!(v["procid"], "42");
    assert_eq!(v["msgid"], "ID7");
    assert_eq!(v["facility"], "local4");
    assert_eq!(v["severity"], "notice");
    assert_eq!(v["timestamp"], "2003-10-11T22:14:15.003Z");
    assert_eq!(v["message"], "GET /");
    assert_eq!(got[0].headers["syslog.host"], b"web1");
    assert_eq!(got[0].key.as_deref(), Some(&b"web1"[..]));
    // The Kafka timestamp is when syslogger received it (not the message's own time).
    let ts = got[0].timestamp.expect("a Kafka timestamp");
    let now = chrono::Utc::now().timestamp_millis();
    assert!((sent..=now).contains(&ts), "{sent} <= {ts} <= {now}");
    let other = read(cluster.bootstrap_servers(), &fallback, 1, 1, WAIT).await;
    assert_eq!(other.len(), 1);
    let v: serde_json::Value = serde_json::from_slice(&other[0].payload).unwrap();
    assert_eq!(v["message"], "no syslog here");
    assert_eq!(v["protocol"], serde_json::Value::Null);
    let outcome = svc.stop().await;
    assert_eq!(outcome.delivered, 2);
}

/// UDP cannot push back: while the in-flight budget is full (Kafka down), datagrams are
/// dropped and counted; every datagram is either delivered or counted as dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_drops_are_counted_when_the_budget_is_full() {
    init_logs();
    let cluster = KafkaCluster::start(1);
    let topic = unique_name("udp-drop-");
    cluster.create_topic(&topic, 1);
    let mut a = args(cluster.bootstrap_servers(), &topic);
    a.udp_listen = vec!["127.0.0.1:0".into()];
    a.max_frame = 1024;
    // Room for about two messages (each counts its bytes and 512 bytes of bookkeeping).
    a.max_in_flight_bytes = 1200;
    let svc = start(a).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = svc.bound.udp[0];
    udp.send_to(b"<13>Oct 11 22:14:15 h app: first", to)
        .await
        .unwrap();
    assert_eq!(
        read(cluster.bootstrap_servers(), &topic, 1, 1, WAIT)
            .await
            .len(),
        1
    );
    cluster.mock().broker_down(1).unwrap();
    const N: usize = 50;
    for i in 0..N {
        udp.send_to(format!("<13>Oct 11 22:14:15 h app: {i}").as_bytes(), to)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.mock().broker_up(1).unwrap();
    let outcome = svc.stop().await;
    assert!(outcome.udp_dropped > 0, "{outcome:?}");
    assert_eq!(
        outcome.delivered + outcome.udp_dropped,
        (N + 1) as u64,
        "every datagram delivered or counted as dropped: {outcome:?}"
    );
    assert!(outcome.succeeded());
}

/// Sends `line` on `s`, waits until it is in Kafka (the producer knows the partition's
/// leader), then takes the broker down.
/// A cluster with a one-partition topic (`prefix`...) and a dead-letter topic (`dlq-`...).
fn with_dead_letter_topic(prefix: &str) -> (KafkaCluster, String, String) {
    init_logs();
    let cluster = KafkaCluster::start(1);
    let topic = unique_name(prefix);
    let dlq = unique_name("dlq-");
    cluster.create_topic(&topic, 1);
    cluster.create_topic(&dlq, 1);
    (cluster, topic, dlq)
}

async fn deliver_one_then_broker_down(
    cluster: &KafkaCluster,
    topic: &str,
    s: &mut (impl tokio::io::AsyncWrite + Unpin),
    line: &[u8],
) {
    s.write_all(line).await.unwrap();
    assert_eq!(
        read(cluster.bootstrap_servers(), topic, 1, 1, WAIT)
            .await
            .len(),
        1
    );
    cluster.mock().broker_down(1).unwrap();
}
