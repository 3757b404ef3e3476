//! bifrost against the S3 API server (`TEST_S3_ENDPOINT`, moto in CI): create-only puts
//! (`If-None-Match: *`), the range in object metadata, a conflict resolved.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_objects_are_created_once_and_carry_their_range() {
    let Some(endpoint) = test_services::service_url(test_services::S3_ENDPOINT, "bifrost s3")
    else {
        return;
    };
    let bucket = test_services::create_s3_bucket(&endpoint, "bifrost-");
    let options = vec![("aws_endpoint".to_string(), endpoint.clone())];
    objects_are_created_once_and_carry_their_range(format!("s3://{bucket}/archive"), options).await;
}
