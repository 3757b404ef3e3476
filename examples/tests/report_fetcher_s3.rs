//! `report-fetcher` uploading to the S3 API server at `TEST_S3_ENDPOINT`.

use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::process::Command;

use examples::report_fetcher::convert::{Report, convert, object_key, raw_report};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_report-fetcher");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_uploads_every_converted_report_to_s3() {
    let Some(endpoint) =
        test_services::service_url(test_services::S3_ENDPOINT, "report_fetcher_s3")
    else {
        return;
    };
    let endpoint = endpoint.trim_end_matches('/').to_string();
    let bucket = test_services::create_s3_bucket(&endpoint, "sm-reports-");
    // The endpoint alone: plain HTTP and a placeholder key pair follow for a loopback
    // server (lifecycle::store).
    let options = [format!("aws_endpoint={endpoint}")];
    let out = format!("s3://{bucket}/daily");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--clients",
        "4",
        "--days",
        "3",
        "--concurrency",
        "6",
        "--failure-rate",
        "0.2",
        "--throttle-rate",
        "0.05",
        "--retry-after",
        "100ms",
        "--api-latency",
        "2ms",
        "--max-attempts",
        "30",
        "--out",
        &out,
    ])
    .env("RUST_LOG", "warn");
    for o in &options {
        cmd.arg("--store-option").arg(o);
    }
    // Killed if the time limit passes (the output future is dropped with the child).
    cmd.kill_on_drop(true);
    let output = tokio::time::timeout(std::time::Duration::from_secs(90), cmd.output())
        .await
        .expect("report-fetcher finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("completed=12 dead=0 attempts="),
        "{stdout}"
    );
    assert!(stdout.contains("verified=12"));

    // Read the bucket back independently of the program.
    let read_options = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
    ];
    let (store, prefix) =
        object_store::parse_url_opts(&url::Url::parse(&out).unwrap(), read_options).unwrap();
    let store: Arc<dyn ObjectStore> = Arc::from(store);
    let listed: BTreeSet<String> = store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    let expected: BTreeSet<String> = (0..4)
        .flat_map(|c| (0..3).map(move |d| format!("daily/{}", object_key(c, d))))
        .collect();
    assert_eq!(listed, expected);
    for c in 0..4 {
        for d in 0..3 {
            let location = Path::from(format!("daily/{}", object_key(c, d)));
            let bytes = store
                .get_opts(&location, object_store::GetOptions::default())
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let stored: Report = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(stored, convert(&raw_report(c, d)).unwrap());
        }
    }
}
