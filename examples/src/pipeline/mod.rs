//! `pipeline`: the whole system in one command — syslog → Kafka → object storage →
//! warehouse — on embedded defaults, or pointed at real services.
//!
//! 1. Kafka: an in-process Kafka-protocol cluster (librdkafka's mock cluster, a topic of 4
//!    partitions), or `--brokers` (a fresh topic per run, created with 4 partitions);
//! 2. `syslogger` (the library) on loopback ports, and a client sending a mix of RFC 5424
//!    and RFC 3164 messages over several TCP connections (octet-counted and LF) and a RELP
//!    session ([`client`]);
//! 3. `bifrost` archiving the topic under `archive/` of the store (a local directory, or
//!    `--store s3://...`) in the standard layout;
//! 4. the transform ([`transform`]) on the `state-machine` executor: each archived object is
//!    a unit (read → transform → write `loads/.../events.csv` and a `manifest.edn`); rows are
//!    keyed by Kafka topic/partition/offset;
//! 5. `blueshift` loading those directories into the warehouse (a SQLite file, or
//!    `--warehouse postgres://...`/`redshift://...`) with a merge upsert;
//! 6. the counts of every stage, messages per host and severity from the warehouse, and last
//!    `sent=N kafka=N archived=N loaded=N`; exit 0 only when the four agree.
//!
//! Every stage is its library's own code, running concurrently; the run stops each service
//! through its cancellation token.

pub mod client;
pub mod transform;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use lifecycle::{CancellationToken, Exit};
use object_store::ObjectStore;
use redshift_upsert::sqlx::{self, Connection};
use redshift_upsert::{ConnectOptions, WarehouseUrl};
use state_machine::{Executor, RetryPolicy, Unit};

use self::transform::{Counts, Step, TABLE, Transformer};

/// Flags of the `pipeline` program.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "pipeline",
    about = "Run syslog -> Kafka -> object storage -> warehouse end to end (embedded defaults, or real services)"
)]
pub struct Args {
    /// Messages to send.
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
    /// TCP connections (half octet-counted, half LF); a RELP session comes on top.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Kafka bootstrap servers; an in-process cluster when omitted.
    #[arg(long, value_name = "LIST")]
    pub brokers: Option<String>,
    /// The topic (default: `syslog` in the in-process cluster, `pipeline-<time>` with
    /// `--brokers`).
    #[arg(long, value_name = "NAME")]
    pub topic: Option<String>,
    /// The object store for the archive and the load directories (`s3://BUCKET/PREFIX`,
    /// `file:///DIR`); a directory under the work directory when omitted.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Options of the store (`--store-option aws_endpoint=http://...`).
    #[command(flatten)]
    pub store_options: lifecycle::store::StoreOptions,
    /// The warehouse (`postgres://`, `redshift://`, `sqlite://PATH`); a SQLite file under the
    /// work directory when omitted.
    #[arg(long, value_name = "URL")]
    pub warehouse: Option<String>,
    /// Redshift: the IAM role COPY uses.
    #[arg(long, value_name = "ARN")]
    pub iam_role: Option<String>,
    /// Keep the work directory here (a temporary one otherwise).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Give up when the counts do not agree within this time.
    #[arg(long, value_name = "DURATION", default_value = "3m", value_parser = lifecycle::duration::positive)]
    pub timeout: Duration,
    /// Crash test: abort the bifrost stage (no upload, no commit) once this many objects
    /// are archived, and start it again.
    #[arg(long, value_name = "OBJECTS", hide = true)]
    pub restart_bifrost_after: Option<u64>,
    /// The process (`--log-format`, metrics, ...).
    #[command(flatten)]
    pub process: lifecycle::ProcessArgs,
}

/// What a run counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages the client sent (TCP: written; RELP: acknowledged).
    pub sent: u64,
    /// Messages in the topic (its high watermarks, less what was there before).
    pub kafka: u64,
    /// Records in archived objects (their range headers, by `bifrost verify`).
    pub archived: u64,
    /// Rows of the topic in the warehouse.
    pub loaded: u64,
}

impl Summary {
    /// Whether the four counts agree.
    pub fn agrees(&self) -> bool {
        self.sent == self.kafka && self.kafka == self.archived && self.archived == self.loaded
    }
}

/// The program under `service-lifecycle` (logging, metrics, signals): exit 0 when the counts
/// agree, 1 otherwise.
pub fn main(args: Args) -> std::process::ExitCode {
    let process = args.process.clone();
    lifecycle::run("pipeline", &process, move |stop| async move {
        let summary = run(&args, stop).await?;
        Ok(if summary.agrees() {
            Exit::Done
        } else {
            Exit::WorkFailed
        })
    })
}

/// The in-process cluster, or the brokers given.
enum Kafka {
    Embedded(test_services::kafka::KafkaCluster),
    External(String),
}

impl Kafka {
    fn brokers(&self) -> String {
        match self {
            Kafka::Embedded(c) => c.bootstrap_servers().to_string(),
            Kafka::External(b) => b.clone(),
        }
    }
}

const PARTITIONS: i32 = 4;

/// The sum of the topic's high watermarks (blocking librdkafka calls on the blocking pool,
/// each bounded).
async fn watermarks(brokers: &str, topic: &str) -> anyhow::Result<u64> {
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "pipeline-watermarks")
            .create()
            .context("a consumer for the watermarks")?;
        let mut total = 0u64;
        for p in 0..PARTITIONS {
            let (_, high) = c
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .with_context(|| format!("watermarks of {topic}/{p}"))?;
            total += u64::try_from(high).unwrap_or(0);
        }
        Ok(total)
    })
    .await?
}

/// Creates the topic on external brokers (4 partitions; an existing one is kept).
async fn create_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("a Kafka admin client")?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .with_context(|| format!("creating topic {topic}"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("creating topic {t}: {e}"),
        }
    }
    Ok(())
}

/// The warehouse connection the pipeline uses for its own statements (the table, counts).
enum Warehouse {
    Pg(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl Warehouse {
    async fn open(url: &WarehouseUrl) -> anyhow::Result<Warehouse> {
        Ok(match url.connect_options()? {
            ConnectOptions::Pg(o) => Warehouse::Pg(
                sqlx::PgConnection::connect_with(&o)
                    .await
                    .with_context(|| format!("connecting to {}", url.redacted()))?,
            ),
            ConnectOptions::Sqlite(o) => Warehouse::Sqlite(
                sqlx::SqliteConnection::connect_with(&o.create_if_missing(true))
                    .await
                    .with_context(|| format!("opening {}", url.redacted()))?,
            ),
        })
    }

    async fn exec(&mut self, sql: String) -> anyhow::Result<()> {
        let q = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()));
        match self {
            Warehouse::Pg(c) => q.execute(c).await.map(drop),
            Warehouse::Sqlite(c) => q.execute(c).await.map(drop),
        }
        .with_context(|| sql)
    }

    async fn count(&mut self, topic: &str) -> anyhow::Result<u64> {
        let sql = format!(
            "SELECT COUNT(*) FROM {TABLE} WHERE topic = '{}'",
            topic.replace('\'', "''")
        );
        let n: i64 = match self {
            Warehouse::Pg(c) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(c)
                    .await?
            }
            Warehouse::Sqlite(c) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(c)
                    .await?
            }
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Messages per host and severity.
    async fn per_host_and_severity(
        &mut self,
        topic: &str,
    ) -> anyhow::Result<Vec<(String, String, i64)>> {
        let sql = format!(
            "SELECT COALESCE(host, '-'), COALESCE(severity, '-'), COUNT(*) FROM {TABLE} \
             WHERE topic = '{}' GROUP BY 1, 2 ORDER BY 1, 2",
            topic.replace('\'', "''")
        );
        Ok(match self {
            Warehouse::Pg(c) => {
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .fetch_all(c)
                    .await?
            }
            Warehouse::Sqlite(c) => {
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .fetch_all(c)
                    .await?
            }
        })
    }

    async fn close(self) {
        let _ = match self {
            Warehouse::Pg(c) => c.close().await,
            Warehouse::Sqlite(c) => c.close().await,
        };
    }
}

/// The progress display: one bar per stage on a terminal, a log line every few seconds
/// otherwise.
struct Progress {
    bars: Option<(indicatif::MultiProgress, [indicatif::ProgressBar; 4])>,
    last_log: Instant,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let bars = std::io::stderr().is_terminal().then(|| {
            let multi = indicatif::MultiProgress::new();
            let style = indicatif::ProgressStyle::with_template(
                "{prefix:>9} [{bar:40}] {pos}/{len} {per_sec}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            let bar = |name: &'static str| {
                let b = multi.add(indicatif::ProgressBar::new(total));
                b.set_style(style.clone());
                b.set_prefix(name);
                b
            };
            let bars = [bar("sent"), bar("kafka"), bar("archived"), bar("loaded")];
            (multi, bars)
        });
        Progress {
            bars,
            last_log: Instant::now(),
        }
    }

    fn show(&mut self, s: &Summary) {
        match &self.bars {
            Some((_, bars)) => {
                for (b, n) in bars.iter().zip([s.sent, s.kafka, s.archived, s.loaded]) {
                    b.set_position(n);
                }
            }
            None if self.last_log.elapsed() >= Duration::from_secs(2) => {
                self.last_log = Instant::now();
                tracing::info!(
                    sent = s.sent,
                    kafka = s.kafka,
                    archived = s.archived,
                    loaded = s.loaded,
                    "progress"
                );
            }
            None => {}
        }
    }

    fn finish(self) {
        if let Some((_, bars)) = self.bars {
            for b in bars {
                b.finish();
            }
        }
    }
}

/// Sends every message: `connections` TCP connections (even ones octet-counted, odd ones
/// LF) and one RELP session, concurrently; returns the messages sent.
async fn send_all(
    bound: &syslogger::Bound,
    messages: u64,
    connections: usize,
) -> anyhow::Result<u64> {
    let tcp = *bound.tcp.first().context("syslogger has no TCP listener")?;
    let relp = *bound
        .relp
        .first()
        .context("syslogger has no RELP listener")?;
    let streams = connections as u64 + 1;
    let share = |i: u64| messages / streams + u64::from(i < messages % streams);
    let mut tasks = tokio::task::JoinSet::new();
    for conn in 0..connections {
        let n = share(conn as u64);
        tasks.spawn(client::send_tcp(tcp, conn, n, conn % 2 == 0));
    }
    tasks.spawn(client::send_relp(
        relp,
        connections,
        share(connections as u64),
        256,
    ));
    let mut sent = 0;
    while let Some(r) = tasks.join_next().await {
        sent += r??;
    }
    Ok(sent)
}

fn bifrost_args(
    args: &Args,
    brokers: &str,
    topic: &str,
    store: &str,
    work: &std::path::Path,
) -> bifrost::Args {
    let mut b = bifrost::Args::new(
        brokers,
        "pipeline",
        format!("^{}$", regex::escape(topic)),
        store,
    );
    b.store_options = args.store_options.clone();
    b.prefix = "archive".into();
    b.rotate_records = 2_000;
    b.rotate_interval = Duration::from_secs(1);
    b.spool_dir = Some(work.join("spool"));
    // A stage that crashes leaves the group quickly; the first join waits little.
    b.kafka_properties = vec![
        ("session.timeout.ms".into(), "6000".into()),
        ("heartbeat.interval.ms".into(), "500".into()),
    ];
    b
}

/// Runs the pipeline until the counts agree (or `--timeout`, or `stop`), then stops every
/// stage and prints what each counted; the last line is `sent=N kafka=N archived=N
/// loaded=N`.
///
/// # Errors
/// A stage cannot start (a port, the store, the warehouse), or a stage failed.
pub async fn run(args: &Args, stop: CancellationToken) -> anyhow::Result<Summary> {
    ensure!(
        args.messages > 0 && args.connections > 0,
        "--messages and --connections must be positive"
    );
    let started = Instant::now();
    let tmp;
    let work = match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.clone()
        }
        None => {
            tmp = tempfile::tempdir().context("cannot create a work directory")?;
            tmp.path().to_path_buf()
        }
    };

    // 1. Kafka.
    let kafka = match &args.brokers {
        Some(b) => Kafka::External(b.clone()),
        None => {
            let c = test_services::kafka::KafkaCluster::try_start(1)
                .map_err(|e| anyhow::anyhow!("the in-process Kafka cluster: {e}"))?;
            c.set_initial_rebalance_delay(Duration::from_millis(100));
            Kafka::Embedded(c)
        }
    };
    let topic = match (&args.topic, &kafka) {
        (Some(t), _) => t.clone(),
        (None, Kafka::Embedded(_)) => "syslog".to_string(),
        (None, Kafka::External(_)) => format!(
            "pipeline-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        ),
    };
    match &kafka {
        Kafka::Embedded(c) => c
            .try_create_topic(&topic, PARTITIONS)
            .map_err(|e| anyhow::anyhow!("creating topic {topic}: {e}"))?,
        Kafka::External(b) => create_topic(b, &topic).await?,
    }
    let brokers = kafka.brokers();
    let before = watermarks(&brokers, &topic).await?;

    // The store and the warehouse.
    let store_url = args
        .store
        .clone()
        .unwrap_or_else(|| format!("file://{}/store", work.display()));
    let opened = lifecycle::store::open(&store_url, &args.store_options.store_options)
        .map_err(lifecycle::BadConfig::wrap)?;
    let wh_url = args
        .warehouse
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}/warehouse.db", work.display()));
    let wh = WarehouseUrl::parse(&wh_url).map_err(lifecycle::BadConfig::wrap)?;
    let mut warehouse = Warehouse::open(&wh).await?;
    warehouse.exec(transform::create_table_sql()).await?;
    println!(
        "pipeline: kafka {} topic {topic}, store {store_url}, warehouse {}, work {}",
        match kafka {
            Kafka::Embedded(_) => "in-process",
            Kafka::External(_) => brokers.as_str(),
        },
        wh.redacted(),
        work.display()
    );

    // 2. syslogger.
    let syslogger_stop = CancellationToken::new();
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let syslogger_args = syslogger::Args {
        listen: vec!["127.0.0.1:0".into()],
        relp_listen: vec!["127.0.0.1:0".into()],
        brokers: brokers.clone(),
        topic: topic.clone(),
        topic_fallback: topic.clone(),
        key: "host".into(),
        format: syslogger::Format::Json,
        spill_dir: Some(work.join("spill")),
        ..syslogger::Args::default()
    };
    let syslogger_task = tokio::spawn(syslogger::run_with(
        syslogger_args,
        syslogger_stop.clone(),
        move |b| {
            let _ = bound_tx.send(b.clone());
        },
    ));
    let bound = tokio::time::timeout(Duration::from_secs(30), bound_rx)
        .await
        .context("syslogger did not listen within 30 s")?
        .context("syslogger stopped before listening")?;

    // 3. bifrost.
    let mut bifrost_stop = CancellationToken::new();
    let mut bifrost_task = tokio::spawn(bifrost::run_with_store(
        bifrost_args(args, &brokers, &topic, &store_url, &work),
        opened.clone(),
        bifrost_stop.clone(),
    ));

    // 4. The transform: new archive objects become units of the executor.
    let counts = Arc::new(Counts::default());
    let transformer = Transformer {
        store: opened.store.clone(),
        loads: opened.key("loads").to_string(),
        counts: counts.clone(),
    };
    let (units, input) = tokio::sync::mpsc::channel::<Unit<Step>>(1024);
    let executor = Executor::new(transformer)
        .concurrency(4)
        .retry_policy(RetryPolicy {
            max_attempts: 20,
            ..RetryPolicy::default()
        });
    let executor_task = tokio::spawn(
        executor.run(futures::stream::unfold(input, |mut rx| async move {
            rx.recv().await.map(|u| (u, rx))
        })),
    );
    let lister_stop = CancellationToken::new();
    let lister_task = tokio::spawn(list_new_objects(
        opened.store.clone(),
        opened.key("archive"),
        units,
        lister_stop.clone(),
    ));

    // 5. blueshift.
    let blueshift_stop = CancellationToken::new();
    let blueshift_args = blueshift::Args {
        store: store_url.clone(),
        store_options: args.store_options.clone(),
        warehouse: wh_url.clone(),
        key_pattern: "(^|/)loads/".into(),
        poll_interval: Duration::from_millis(500),
        iam_role: args.iam_role.clone(),
        concurrency: 2,
        ..blueshift::Args::default()
    };
    let blueshift_task = tokio::spawn(blueshift::run(blueshift_args, blueshift_stop.clone()));

    // The client, then watching the counts meet.
    let client = tokio::spawn({
        let bound = bound.clone();
        let (messages, connections) = (args.messages, args.connections);
        async move { send_all(&bound, messages, connections).await }
    });
    let mut client = Some(client);
    let mut summary = Summary::default();
    let mut progress = Progress::new(args.messages);
    let verify = bifrost::VerifyArgs {
        store: store_url.clone(),
        store_options: args.store_options.clone(),
        prefix: "archive".into(),
        deep: false,
    };
    let deadline = started + args.timeout;
    let mut restarted = args.restart_bifrost_after.is_none();
    let outcome: anyhow::Result<()> = async {
        loop {
            if let Some(c) = &client
                && c.is_finished()
                && let Some(c) = client.take()
            {
                summary.sent = c.await??;
            }
            summary.kafka = watermarks(&brokers, &topic).await?.saturating_sub(before);
            let report = bifrost::verify(&verify).await?;
            ensure!(
                report.ok(),
                "the archive is inconsistent:\n{}",
                report.text()
            );
            summary.archived = report.partitions.iter().map(|p| p.records).sum();
            summary.loaded = warehouse.count(&topic).await?;
            if client.is_none() {
                progress.show(&summary);
            } else {
                progress.show(&Summary {
                    sent: summary.kafka,
                    ..summary
                });
            }
            if !restarted
                && let Some(after) = args.restart_bifrost_after
                && report
                    .partitions
                    .iter()
                    .map(|p| p.objects as u64)
                    .sum::<u64>()
                    >= after
            {
                // A crash: no upload, no commit of what is in flight; a new instance takes
                // the partitions over from the group's committed offsets.
                bifrost_task.abort();
                let _ = (&mut bifrost_task).await;
                tracing::warn!("bifrost stage aborted; starting it again");
                bifrost_stop = CancellationToken::new();
                bifrost_task = tokio::spawn(bifrost::run_with_store(
                    bifrost_args(args, &brokers, &topic, &store_url, &work),
                    opened.clone(),
                    bifrost_stop.clone(),
                ));
                restarted = true;
            }
            if client.is_none() && restarted && summary.agrees() {
                return Ok(());
            }
            if bifrost_task.is_finished() || syslogger_task.is_finished() {
                bail!("a stage stopped early (see the log)");
            }
            if Instant::now() >= deadline {
                bail!("the counts did not agree within {:?}", args.timeout);
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(300)) => {}
                () = stop.cancelled() => bail!("interrupted"),
            }
        }
    }
    .await;
    progress.finish();

    // Stop every stage through its token, upstream first.
    syslogger_stop.cancel();
    let syslogged = syslogger_task.await?;
    bifrost_stop.cancel();
    let archived = bifrost_task.await;
    lister_stop.cancel();
    let _ = lister_task.await;
    let report = executor_task.await?;
    blueshift_stop.cancel();
    let loaded = blueshift_task.await?;

    match &syslogged {
        Ok(o) => println!(
            "syslogger: received={} delivered={} dead_lettered={} spilled={}",
            o.received, o.delivered, o.dead_lettered, o.spilled
        ),
        Err(e) => println!("syslogger: failed: {e}"),
    }
    match &archived {
        Ok(Ok(o)) => println!(
            "bifrost: messages={} files={} abandoned={}",
            o.messages, o.files, o.abandoned
        ),
        Ok(Err(e)) => println!("bifrost: failed: {e}"),
        Err(e) => println!("bifrost: {e}"),
    }
    println!(
        "transform: objects={} rows={} dead={}",
        counts.objects.load(Ordering::Relaxed),
        counts.rows.load(Ordering::Relaxed),
        report.dead.len()
    );
    for d in &report.dead {
        println!("transform: dead letter {}: {}", d.id, d.error);
    }
    match &loaded {
        Ok(o) => println!(
            "blueshift: polls={} directories_loaded={} failed={}",
            o.polls, o.loaded, o.failed
        ),
        Err(e) => println!("blueshift: failed: {e}"),
    }
    println!("warehouse: messages per host and severity");
    for (host, severity, n) in warehouse.per_host_and_severity(&topic).await? {
        println!("  {host:<10} {severity:<8} {n}");
    }
    warehouse.close().await;
    println!("elapsed: {:.1} s", started.elapsed().as_secs_f64());
    println!(
        "sent={} kafka={} archived={} loaded={}",
        summary.sent, summary.kafka, summary.archived, summary.loaded
    );
    outcome?;
    syslogged?;
    archived??;
    loaded?;
    Ok(summary)
}

/// Lists the archive every 250 ms and feeds each new object to the executor, until `stop`.
async fn list_new_objects(
    store: Arc<dyn ObjectStore>,
    prefix: object_store::path::Path,
    units: tokio::sync::mpsc::Sender<Unit<Step>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    loop {
        let mut listing = store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let key = meta?.location.to_string();
            if (key.ends_with(".baldr.gz") || key.ends_with(".baldr.zst"))
                && seen.insert(key.clone())
            {
                units
                    .send(Unit::new(key.clone(), Step::Archived { key }))
                    .await
                    .context("the executor stopped")?;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}
