//! bifrost against the S3 API server (`TEST_S3_ENDPOINT`, moto in CI): create-only puts
//! (`If-None-Match: *`), the range in object metadata, a conflict resolved.

mod common;

use common::*;
use lifecycle::CancellationToken;
use object_store::PutPayload;
use test_services::kafka::KafkaCluster;
use test_services::unique_name;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_objects_are_created_once_and_carry_their_range() {
    let Some(endpoint) = test_services::service_url(test_services::S3_ENDPOINT, "bifrost s3")
    else {
        return;
    };
    logging();
    let bucket = test_services::create_s3_bucket(&endpoint, "bifrost-");
    let url = format!("s3://{bucket}/archive");
    let options = vec![("aws_endpoint".to_string(), endpoint.clone())];
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
            .get(&object_store::Attribute::Metadata(name.to_string().into()))
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
