//! bifrost against Azure Blob Storage's emulator (`TEST_AZURE_BLOB`, Azurite in CI):
//! create-only puts (`If-None-Match: *`), the range in blob metadata, a conflict resolved.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_blobs_are_created_once_and_carry_their_range() {
    let Some(endpoint) =
        test_services::service_url(test_services::azure::AZURE_BLOB, "bifrost azure")
    else {
        return;
    };
    let container = test_services::azure::create_container(&endpoint, "bifrost-");
    objects_are_created_once_and_carry_their_range(
        format!("az://{container}/archive"),
        test_services::azure::store_options(&endpoint),
    )
    .await;
}
