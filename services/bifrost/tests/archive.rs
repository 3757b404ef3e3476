//! bifrost against librdkafka's in-process Kafka cluster, with a local directory store (and
//! the S3 API server in `s3.rs`).

mod common;

use std::time::Duration;

use common::*;
use lifecycle::CancellationToken;
use object_store::ObjectStoreExt;
use test_services::kafka::KafkaCluster;
use test_services::unique_name;
use tokio::time::timeout;

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<bifrost::Result<bifrost::Outcome>>,
}

impl Running {
    async fn stop(self) -> bifrost::Outcome {
        self.stop.cancel();
        timeout(WAIT, self.task).await.unwrap().unwrap().unwrap()
    }
}

fn start(args: bifrost::Args) -> Running {
    let stop = CancellationToken::new();
    let task = tokio::spawn(bifrost::run(args, stop.clone()));
    Running { stop, task }
}

fn start_on(args: bifrost::Args, opened: lifecycle::store::OpenedStore) -> Running {
    let stop = CancellationToken::new();
    let task = tokio::spawn(bifrost::run_with_store(args, opened, stop.clone()));
    Running { stop, task }
}

fn local(dir: &tempfile::TempDir) -> (String, lifecycle::store::OpenedStore) {
    let url = format!("file://{}/archive", dir.path().display());
    let opened = lifecycle::store::open(&url, &[]).unwrap();
    (url, opened)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_gets_the_exact_layout_and_values_exactly_once() {
    logging();
    let kafka = KafkaCluster::start(1);
    let brokers = kafka.bootstrap_servers().to_string();
    let topic = unique_name("events-");
    kafka.create_topic(&topic, 2);
    produce(&brokers, &topic, 2, 0..45).await;
    let dir = tempfile::tempdir().unwrap();
    let (url, opened) = local(&dir);
    let mut a = args(
        &brokers,
        "archiver",
        &topic,
        &url,
        &dir.path().join("spool"),
    );
    a.rotate_records = 10;
    let run = start(a);
    wait_records(&*opened.store, 90).await;
    let outcome = run.stop().await;
    assert_eq!(outcome.messages, 90);
    let archived = archive(&*opened.store).await;
    check_exactly_once(&archived, &topic, 2, 45);
    let names: Vec<String> = archived
        .values()
        .next()
        .unwrap()
        .iter()
        .map(|o| o.key.clone())
        .collect();
    assert_eq!(
        names,
        [
            "0000000000",
            "0000000010",
            "0000000020",
            "0000000030",
            "0000000040"
        ]
        .map(|f| format!("archiver/{topic}/partition=0/{f}.baldr.gz")),
        "keys are <group>/<topic>/partition=<p>/<first-offset %010d>.baldr.gz"
    );
    assert!(
        dir.path()
            .join(format!(
                "archive/archiver/{topic}/partition=1/0000000040.baldr.gz"
            ))
            .exists()
    );
    // Offsets were committed after upload: a new run of the group reads nothing again.
    // This run stores (gzip level 0): its objects hold their Baldr stream verbatim.
    produce(&brokers, &topic, 2, 45..50).await;
    let mut a = args(
        &brokers,
        "archiver",
        &topic,
        &url,
        &dir.path().join("spool"),
    );
    a.rotate_records = 5;
    a.compression_level = Some(0);
    let run = start(a);
    wait_records(&*opened.store, 100).await;
    let outcome = run.stop().await;
    assert_eq!(outcome.messages, 10, "only the new messages");
    let archived = archive(&*opened.store).await;
    check_exactly_once(&archived, &topic, 2, 50);
    let stored: Vec<&Object> = archived
        .values()
        .flatten()
        .filter(|o| o.range.first >= 45)
        .collect();
    assert_eq!(stored.len(), 2, "one object per partition");
    for o in stored {
        let mut stream = Vec::new();
        for r in &o.records {
            stream.extend_from_slice(&(r.len() as u64).to_be_bytes());
            stream.extend_from_slice(r);
        }
        assert_eq!(stream.len() as u64, o.range.bytes);
        let object = opened
            .store
            .get(&o.key.as_str().into())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(
            object.windows(stream.len()).any(|w| w == stream),
            "{}: the records are stored as they are",
            o.key
        );
    }
    let report = bifrost::verify(&bifrost::VerifyArgs {
        store: url,
        store_options: Default::default(),
        prefix: String::new(),
        deep: true,
    })
    .await
    .unwrap();
    assert!(report.ok(), "{}", report.text());
    assert_eq!(report.partitions.len(), 2);
    assert_eq!(report.partitions[0].covered, [(0, 49)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_tombstones_and_an_idle_partition_within_the_age_limit() {
    logging();
    let kafka = KafkaCluster::start(1);
    let brokers = kafka.bootstrap_servers().to_string();
    let topic = unique_name("idle-");
    kafka.create_topic(&topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let (url, opened) = local(&dir);
    let mut a = args(&brokers, "g", &topic, &url, &dir.path().join("spool"));
    a.compression = bifrost::Codec::Zstd;
    a.rotate_interval = Duration::from_secs(2);
    a.tombstones = bifrost::Tombstones::Skip;
    let run = start(a);
    let producer = kafka_seq::ProducerConfig::new(&brokers).create().unwrap();
    // Once the consumer is in the group, three messages, the middle one a tombstone; then
    // nothing more: the age limit alone must upload them.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sent_at = std::time::Instant::now();
    for r in [
        kafka_seq::Record::new("one"),
        kafka_seq::Record::default(),
        kafka_seq::Record::new("three"),
    ] {
        producer
            .send(&topic, &r.partition(0))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    wait_records(&*opened.store, 2).await;
    let took = sent_at.elapsed();
    run.stop().await;
    let archive = archive(&*opened.store).await;
    let objects: Vec<_> = archive.values().flatten().collect();
    assert_eq!(objects.len(), 1);
    assert!(
        objects[0].key.ends_with("/0000000000.baldr.zst"),
        "{}",
        objects[0].key
    );
    assert_eq!(objects[0].records, ["one", "three"]);
    assert_eq!(
        (objects[0].range.first, objects[0].range.last),
        (0, 2),
        "the tombstone's offset is covered"
    );
    // Kafka's own group join is not in it, but polling the archive is: generous bound.
    assert!(
        took < Duration::from_secs(6),
        "uploaded {took:?} after the last message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_partitions_and_a_rebalance_loses_and_duplicates_nothing() {
    logging();
    let kafka = KafkaCluster::start(1);
    let brokers = kafka.bootstrap_servers().to_string();
    let topic = unique_name("shared-");
    kafka.create_topic(&topic, 4);
    produce(&brokers, &topic, 4, 0..100).await;
    let dir = tempfile::tempdir().unwrap();
    let (url, opened) = local(&dir);
    let a_args = |name: &str, rotate: u64| {
        let mut a = args(&brokers, "shared", &topic, &url, &dir.path().join(name));
        a.rotate_records = rotate;
        a.rotate_interval = Duration::from_secs(3);
        a
    };
    let first = start(a_args("a", 13));
    // Let the first instance archive some, then the second joins: partitions are split,
    // open files of revoked partitions are dropped and read again by their new owner.
    wait_records(&*opened.store, 60).await;
    let second = start(a_args("b", 7));
    produce(&brokers, &topic, 4, 100..200).await;
    wait_records(&*opened.store, 800).await;
    let (one, two) = (first.stop().await, second.stop().await);
    assert!(
        one.messages > 0 && two.messages > 0,
        "both worked: {one:?} {two:?}"
    );
    check_exactly_once(&archive(&*opened.store).await, &topic, 4, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_finishing_its_upload_after_the_new_owner_duplicates_nothing() {
    logging();
    let kafka = KafkaCluster::start(1);
    let brokers = kafka.bootstrap_servers().to_string();
    let topic = unique_name("zombie-");
    kafka.create_topic(&topic, 2);
    produce(&brokers, &topic, 2, 0..60).await;
    let dir = tempfile::tempdir().unwrap();
    let (url, opened) = local(&dir);
    // The zombie: its puts hang (a stalled connection) while the group moves on.
    let faulty = FaultyStore::new(opened.store.clone());
    faulty.hold(true);
    let mut za = args(&brokers, "z", &topic, &url, &dir.path().join("zombie"));
    za.rotate_records = 25;
    let zombie = start_on(za, faulty.opened(&url));
    // It joins, reads and rotates files of both partitions (their puts are held).
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The new owner joins: one partition moves to it; it archives with other boundaries.
    let mut na = args(&brokers, "z", &topic, &url, &dir.path().join("new"));
    na.rotate_records = 7;
    na.rotate_interval = Duration::from_secs(2);
    let owner = start(na);
    // The new owner archives its partition completely (0..60) while the zombie is stuck.
    let mut moved = None;
    for _ in 0..300 {
        let a = archive(&*opened.store).await;
        moved = a
            .iter()
            .find(|(_, objs)| objs.iter().map(|o| o.records.len()).sum::<usize>() == 60)
            .map(|(d, _)| d.clone());
        if moved.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let moved = moved.expect("the new owner archived a partition");
    // Now the zombie's put goes through: its key exists (the new owner's 0..=6): it keeps
    // it and follows the existing objects, writing nothing twice.
    faulty.hold(false);
    produce(&brokers, &topic, 2, 60..80).await;
    wait_records(&*opened.store, 160).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    owner.stop().await;
    zombie.stop().await;
    let archive = archive(&*opened.store).await;
    check_exactly_once(&archive, &topic, 2, 80);
    assert!(
        archive[&moved]
            .iter()
            .any(|o| o.range.last - o.range.first == 6),
        "the new owner's boundaries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_after_start_is_archived() {
    logging();
    let kafka = KafkaCluster::start(1);
    let brokers = kafka.bootstrap_servers().to_string();
    let base = unique_name("logs");
    let (early, late, denied) = (
        format!("{base}-early"),
        format!("{base}-late"),
        format!("{base}-secret"),
    );
    kafka.create_topic(&early, 1);
    kafka.create_topic(&denied, 1);
    kafka.create_topic(&unique_name("other-"), 1);
    produce(&brokers, &early, 1, 0..5).await;
    produce(&brokers, &denied, 1, 0..5).await;
    let dir = tempfile::tempdir().unwrap();
    let (url, opened) = local(&dir);
    let mut a = args(
        &brokers,
        "g",
        &format!("{base}-.*"),
        &url,
        &dir.path().join("spool"),
    );
    a.rotate_records = 5;
    a.deny_topics = vec![".*-secret".into()];
    let run = start(a);
    wait_records(&*opened.store, 5).await;
    kafka.create_topic(&late, 1);
    produce(&brokers, &late, 1, 0..5).await;
    wait_records(&*opened.store, 10).await;
    run.stop().await;
    let archive = archive(&*opened.store).await;
    check_exactly_once(&archive, &early, 1, 5);
    check_exactly_once(&archive, &late, 1, 5);
    assert_eq!(
        archive.len(),
        2,
        "the denied and the unmatched topics are not archived: {:?}",
        archive.keys()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_outage_delays_commits_and_loses_nothing() {
    logging();
    let kafka = KafkaCluster::start(1);
    let brokers = kafka.bootstrap_servers().to_string();
    let topic = unique_name("outage-");
    kafka.create_topic(&topic, 2);
    let dir = tempfile::tempdir().unwrap();
    let (url, opened) = local(&dir);
    let faulty = FaultyStore::new(opened.store.clone());
    let mut a = args(&brokers, "out", &topic, &url, &dir.path().join("spool"));
    a.rotate_records = 10;
    let run = start_on(a, faulty.opened(&url));
    produce(&brokers, &topic, 2, 0..20).await;
    wait_records(&*opened.store, 40).await;
    faulty.fail(true);
    produce(&brokers, &topic, 2, 20..60).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        archived_records(&*opened.store).await,
        40,
        "nothing uploaded during the outage"
    );
    // The commit waited: a consumer of the group's committed offsets sees 20 per partition.
    let committed = committed(&brokers, "out", &topic, 2);
    assert_eq!(committed, [20, 20], "commits wait for uploads");
    faulty.fail(false);
    wait_records(&*opened.store, 120).await;
    run.stop().await;
    check_exactly_once(&archive(&*opened.store).await, &topic, 2, 60);
    assert_eq!(committed_after(&brokers, "out", &topic, 2).await, [60, 60]);
}

/// The group's committed offsets (-1: none).
fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    let out = (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(rdkafka::Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect();
    drop(got);
    drop(c);
    out
}

async fn committed_after(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let (b, g, t) = (brokers.to_string(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || committed(&b, &g, &t, partitions))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_token_replays_exactly_that_partition() {
    logging();
    let kafka = KafkaCluster::start(1);
    let brokers = kafka.bootstrap_servers().to_string();
    let topic = unique_name("tokens-");
    kafka.create_topic(&topic, 2);
    produce(&brokers, &topic, 2, 0..30).await;
    let dir = tempfile::tempdir().unwrap();
    let (url, opened) = local(&dir);
    let run_args = |rotate: u64| {
        let mut a = args(&brokers, "tok", &topic, &url, &dir.path().join("spool"));
        a.rotate_records = rotate;
        a.tokens = true;
        a
    };
    let run = start(run_args(10));
    wait_records(&*opened.store, 60).await;
    run.stop().await;
    let store = opened.store.clone();
    let token_key = |p: i32| {
        object_store::path::Path::from(format!("tok/{topic}/partition={p}/{}", bifrost::TOKEN_NAME))
    };
    for p in 0..2 {
        let t = store
            .get(&token_key(p))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&t), format!("{topic} {p} 30\n"));
    }
    let before = archive(&*store).await;
    let stamp = |p: i32| {
        let d = dir.path().join(format!(
            "archive/tok/{topic}/partition={p}/0000000000.baldr.gz"
        ));
        std::fs::metadata(d).unwrap().modified().unwrap()
    };
    let (p0, p1) = (stamp(0), stamp(1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Partition 1's token goes: that partition alone is archived again, its objects replaced
    // (cut at the existing objects' starts, though files now rotate every 4 messages).
    store.delete(&token_key(1)).await.unwrap();
    let run = start(run_args(4));
    for _ in 0..300 {
        if store.get(&token_key(1)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outcome = run.stop().await;
    assert_eq!(
        outcome.messages, 30,
        "partition 1 read again, partition 0 not"
    );
    assert_eq!(stamp(0), p0, "partition 0 untouched");
    assert_ne!(stamp(1), p1, "partition 1's first object replaced");
    let after = archive(&*store).await;
    check_exactly_once(&after, &topic, 2, 30);
    assert!(
        keys(&before).len() < keys(&after).len(),
        "new cuts inside the replaced objects' ranges"
    );
    let t = store
        .get(&token_key(1))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&t), format!("{topic} 1 30\n"));
    // bifrost replay from an offset inside an object: from that object's start.
    let said = bifrost::replay(&bifrost::ReplayArgs {
        store: url.clone(),
        store_options: Default::default(),
        prefix: String::new(),
        group: "tok".into(),
        topic: topic.clone(),
        partition: 0,
        from: 15,
    })
    .await
    .unwrap();
    assert!(said.contains("REPLACED"), "{said}");
    // One message per file: every piece is a single offset (cut at the old starts 10, 20).
    let mut replay_args = run_args(1);
    replay_args.rotate_interval = Duration::from_secs(2);
    let run = start(replay_args);
    for _ in 0..300 {
        let t = store
            .get(&token_key(0))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        if String::from_utf8_lossy(&t) == format!("{topic} 0 30\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outcome = run.stop().await;
    assert_eq!(
        outcome.messages, 20,
        "from offset 10 (the object holding 15) on"
    );
    check_exactly_once(&archive(&*store).await, &topic, 2, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_starting_inside_or_reaching_over_archived_objects_are_cut_around_them() {
    // The group has no committed offsets (they expired, or were reset) while objects of
    // another rotation exist: 5..=14 and 22..=24. Reading from 0 with files of 10 must
    // not archive a message twice.
    logging();
    let kafka = KafkaCluster::start(1);
    let brokers = kafka.bootstrap_servers().to_string();
    let topic = unique_name("survey-");
    kafka.create_topic(&topic, 1);
    produce(&brokers, &topic, 1, 0..30).await;
    let dir = tempfile::tempdir().unwrap();
    let (url, opened) = local(&dir);
    for (first, last) in [(5, 14), (22, 24)] {
        let key = opened.key(&format!(
            "g/{topic}/partition=0/{}",
            bifrost::object_name(first, bifrost::Codec::Gzip)
        ));
        put_object(&*opened.store, &key, &topic, 0, first, last).await;
    }
    let mut a = args(&brokers, "g", &topic, &url, &dir.path().join("spool"));
    a.rotate_records = 10;
    let running = start_on(a, opened.clone());
    wait_records(&*opened.store, 30).await;
    running.stop().await;
    let archive = archive(&*opened.store).await;
    check_exactly_once(&archive, &topic, 1, 30);
    let ranges: Vec<(i64, i64)> = archive
        .values()
        .flatten()
        .map(|o| (o.range.first, o.range.last))
        .collect();
    assert_eq!(
        ranges,
        [(0, 4), (5, 14), (15, 19), (20, 21), (22, 24), (25, 29)],
        "the existing objects kept, the new ones around them"
    );
}
