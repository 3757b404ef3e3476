//! `store::open` against a real S3 API server (TEST_S3_ENDPOINT, e.g. moto): the endpoint as
//! a `--store-option`, the prefix applied, what is written is read back by a second opening.

#![cfg(feature = "store")]

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

#[tokio::test]
async fn s3_url_with_endpoint_option_reads_and_writes() {
    let Some(endpoint) = test_services::service_url(test_services::S3_ENDPOINT, "store_s3") else {
        return;
    };
    let bucket = test_services::create_s3_bucket(&endpoint, "lifecycle-");
    let url = format!("s3://{bucket}/archive/");
    let options = vec![("aws_endpoint".to_string(), endpoint.clone())];
    let a = lifecycle::store::open(&url, &options).unwrap();
    assert_eq!(a.s3_bucket.as_deref(), Some(bucket.as_str()));
    a.store
        .put(&a.key("t/one.txt"), "one".into())
        .await
        .unwrap();
    let b = lifecycle::store::open(&url, &options).unwrap();
    let got = b
        .store
        .get(&b.key("t/one.txt"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], b"one");
    let keys: Vec<String> = b
        .store
        .list(Some(&b.prefix))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(keys, vec!["archive/t/one.txt".to_string()]);
    let missing = b.store.get(&b.key("t/none")).await;
    assert!(matches!(missing, Err(object_store::Error::NotFound { .. })));
}
