//! Shared by bifrost's tests: a mock Kafka cluster, producing, running the service, reading
//! the archive back, and a store wrapper that can hold or fail puts.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use futures::TryStreamExt;
use futures::stream::BoxStream;
use kafka_seq::{ProducerConfig, Record};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio::sync::watch;

pub const WAIT: Duration = Duration::from_secs(60);

pub fn logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,bifrost=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The value of message `i` of partition `p` of `topic`.
pub fn value(topic: &str, p: i32, i: usize) -> String {
    format!("{topic}/{p}/{i}")
}

/// Produces messages `range` to each of `partitions` partitions (value [`value`]).
pub async fn produce(brokers: &str, topic: &str, partitions: i32, range: std::ops::Range<usize>) {
    let producer = ProducerConfig::new(brokers).create().unwrap();
    let mut sink = producer.sink(topic);
    for i in range {
        for p in 0..partitions {
            sink.feed(Record::new(value(topic, p, i)).partition(p))
                .await
                .unwrap();
        }
    }
    tokio::time::timeout(WAIT, sink.close())
        .await
        .unwrap()
        .unwrap();
}

/// Service flags for tests: quick group membership and metadata refresh.
pub fn args(
    brokers: &str,
    group: &str,
    topics: &str,
    store: &str,
    spool: &std::path::Path,
) -> bifrost::Args {
    let mut a = bifrost::Args::new(brokers, group, topics, store);
    a.spool_dir = Some(spool.to_path_buf());
    a.memory_budget = 64 << 20;
    a.rotate_bytes = 1 << 20;
    a.finish_timeout = Duration::from_secs(10);
    a.rotate_interval = Duration::from_secs(1);
    a.kafka_properties = vec![
        ("session.timeout.ms".into(), "6000".into()),
        ("heartbeat.interval.ms".into(), "500".into()),
        ("max.poll.interval.ms".into(), "7000".into()),
        ("topic.metadata.refresh.interval.ms".into(), "500".into()),
    ];
    a
}

/// Writes an object as another writer would have: messages `first..=last` of `topic`
/// partition `p` (values [`value`]) under `key`, gzip, with its range in the header.
pub async fn put_object(
    store: &dyn ObjectStore,
    key: &Path,
    topic: &str,
    p: i32,
    first: i64,
    last: i64,
) {
    use std::io::Write;
    let mut gz = flate2::GzBuilder::new()
        .extra(bifrost::ObjectRange::gzip_extra())
        .write(Vec::new(), flate2::Compression::new(1));
    let mut bytes = 0;
    for i in first..=last {
        let v = value(topic, p, i as usize);
        gz.write_all(&(v.len() as u64).to_be_bytes()).unwrap();
        gz.write_all(v.as_bytes()).unwrap();
        bytes += 8 + v.len() as u64;
    }
    let mut object = gz.finish().unwrap();
    bifrost::ObjectRange {
        first,
        last,
        records: (last - first + 1) as u64,
        bytes,
    }
    .fill(&mut object, false);
    store.put(key, PutPayload::from(object)).await.unwrap();
}

/// One archived object, decoded.
#[derive(Debug, Clone)]
pub struct Object {
    pub key: String,
    pub range: bifrost::ObjectRange,
    pub records: Vec<Bytes>,
}

/// Every bifrost object under the store, per partition directory, in offset order.
pub async fn archive(store: &dyn ObjectStore) -> BTreeMap<String, Vec<Object>> {
    let listed: Vec<ObjectMeta> = store.list(None).try_collect().await.unwrap();
    let mut out: BTreeMap<String, Vec<Object>> = BTreeMap::new();
    for m in listed {
        let Some(k) = bifrost::parse_key(m.location.as_ref()) else {
            continue;
        };
        let data = store.get(&m.location).await.unwrap().bytes().await.unwrap();
        let range = bifrost::ObjectRange::parse(&data[..data.len().min(512)]).unwrap();
        assert_eq!(range.first, k.first, "{}: key and header agree", m.location);
        let records: Vec<Bytes> = baldr::open_reader(&data[..])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(records.len() as u64, range.records, "{}", m.location);
        out.entry(k.dir).or_default().push(Object {
            key: m.location.to_string(),
            range,
            records,
        });
    }
    for v in out.values_mut() {
        v.sort_by_key(|o| o.range.first);
    }
    out
}

/// How many records the archive holds.
pub async fn archived_records(store: &dyn ObjectStore) -> usize {
    archive(store)
        .await
        .values()
        .flatten()
        .map(|o| o.records.len())
        .sum()
}

/// Waits until the archive holds `n` records (bounded by [`WAIT`]).
pub async fn wait_records(store: &dyn ObjectStore, n: usize) {
    let mut got = 0;
    for _ in 0..(WAIT.as_millis() / 200) {
        got = archived_records(store).await;
        if got >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the archive holds {got} records, expected {n}");
}

/// Checks that every partition's objects hold exactly messages `0..n` of it, each once, in
/// offset order, with ranges that neither overlap nor leave gaps.
pub fn check_exactly_once(
    archive: &BTreeMap<String, Vec<Object>>,
    topic: &str,
    partitions: i32,
    n: usize,
) {
    for p in 0..partitions {
        let dir = archive
            .keys()
            .find(|d| d.ends_with(&format!("/{topic}/partition={p}")))
            .unwrap_or_else(|| panic!("no objects of {topic} [{p}]: {:?}", archive.keys()));
        let objects = &archive[dir];
        let mut next_offset = 0;
        let mut values = Vec::new();
        for o in objects {
            assert_eq!(
                o.range.first, next_offset,
                "{}: contiguous ranges, no overlap",
                o.key
            );
            next_offset = o.range.last + 1;
            values.extend(
                o.records
                    .iter()
                    .map(|r| String::from_utf8(r.to_vec()).unwrap()),
            );
        }
        let want: Vec<String> = (0..n).map(|i| value(topic, p, i)).collect();
        assert_eq!(values, want, "{topic} [{p}]: every message once, in order");
    }
}

/// The set of object keys.
pub fn keys(archive: &BTreeMap<String, Vec<Object>>) -> BTreeSet<String> {
    archive.values().flatten().map(|o| o.key.clone()).collect()
}

/// A store that can hold puts (until released) or fail them (an outage).
#[derive(Debug)]
pub struct FaultyStore {
    pub inner: Arc<dyn ObjectStore>,
    pub held: watch::Sender<bool>,
    pub failing: AtomicBool,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<FaultyStore> {
        Arc::new(FaultyStore {
            inner,
            held: watch::channel(false).0,
            failing: AtomicBool::new(false),
        })
    }

    pub fn hold(&self, on: bool) {
        self.held.send_replace(on);
    }

    pub fn fail(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    pub fn opened(self: &Arc<Self>, url: &str) -> lifecycle::store::OpenedStore {
        lifecycle::store::OpenedStore {
            store: self.clone(),
            prefix: Path::default(),
            s3_bucket: None,
            kind: lifecycle::store::StoreKind::Memory,
            url: url.to_string(),
        }
    }

    fn outage(&self) -> object_store::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: "simulated outage".into(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let mut held = self.held.subscribe();
        let _ = held.wait_for(|h| !*h).await;
        self.outage()?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.outage()?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.outage()?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.outage()?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.outage()?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// The store behaviour bifrost relies on, against a real store at `url` (S3 API server,
/// Azurite): an object already at a key is kept and archiving goes on after it, objects
/// carry their range in metadata, a second create of a key is refused, `verify --deep` is
/// clean.
pub async fn objects_are_created_once_and_carry_their_range(
    url: String,
    options: Vec<(String, String)>,
) {
    use lifecycle::CancellationToken;
    use test_services::kafka::KafkaCluster;
    use test_services::unique_name;
    logging();
    let opened = lifecycle::store::open(&url, &options).unwrap();
    let kafka = KafkaCluster::start(1);
    let brokers = kafka.bootstrap_servers().to_string();
    let topic = unique_name("s3-");
    kafka.create_topic(&topic, 2);
    produce(&brokers, &topic, 2, 0..30).await;

    // Partition 0's range 0..=14 is archived already, with other boundaries (an earlier run
    // whose offsets were not committed): its key is taken, so bifrost goes on after it.
    let key = opened.key(&format!("g/{topic}/partition=0/0000000000.baldr.gz"));
    put_object(&*opened.store, &key, &topic, 0, 0, 14).await;

    let dir = tempfile::tempdir().unwrap();
    let mut a = args(&brokers, "g", &topic, &url, dir.path());
    a.store_options.store_options = options.clone();
    a.rotate_records = 10;
    let stop = CancellationToken::new();
    let task = tokio::spawn(bifrost::run(a, stop.clone()));
    wait_records(&*opened.store, 60).await;
    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let archive = archive(&*opened.store).await;
    check_exactly_once(&archive, &topic, 2, 30);
    let p0: Vec<(i64, i64)> = archive
        .values()
        .find(|v| v[0].key.contains("partition=0"))
        .unwrap()
        .iter()
        .map(|o| (o.range.first, o.range.last))
        .collect();
    assert_eq!(
        p0,
        [(0, 14), (15, 19), (20, 29)],
        "the existing object was kept"
    );
    // Objects carry their range as metadata too.
    let k = opened.key(&format!("g/{topic}/partition=1/0000000010.baldr.gz"));
    let got = opened
        .store
        .get_opts(
            &k,
            object_store::GetOptions {
                head: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let meta = |name: &str| {
        got.attributes
            .get(&object_store::Attribute::Metadata(
                opened.kind.metadata_name(name).into(),
            ))
            .map(|v| v.to_string())
    };
    assert_eq!(meta("bifrost-first-offset").as_deref(), Some("10"));
    assert_eq!(meta("bifrost-last-offset").as_deref(), Some("19"));
    assert_eq!(meta("bifrost-records").as_deref(), Some("10"));
    // The S3 API server refuses a second create of the key (If-None-Match: *).
    let again = opened
        .store
        .put_opts(
            &k,
            PutPayload::from_static(b"x"),
            object_store::PutOptions {
                mode: object_store::PutMode::Create,
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
    let report = bifrost::verify(&bifrost::VerifyArgs {
        store: url,
        store_options: lifecycle::store::StoreOptions {
            store_options: options,
        },
        prefix: String::new(),
        deep: true,
    })
    .await
    .unwrap();
    assert!(report.ok(), "{}", report.text());
}
