#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use blueshift::{Args, Service};

pub fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn args(store: &str, warehouse: &str, history: &str) -> Args {
    Args {
        store: store.to_string(),
        warehouse: warehouse.to_string(),
        poll_interval: Duration::from_secs(1),
        once: true,
        history_table: history.to_string(),
        ..Args::default()
    }
}

/// The store a URL names (as the service opens it), with an S3 API endpoint for `s3://`.
pub fn store(url: &str, endpoint: Option<&str>) -> redshift_upsert::Store {
    let options: Vec<(String, String)> = endpoint
        .map(|e| ("aws_endpoint".to_string(), e.to_string()))
        .into_iter()
        .collect();
    let o = lifecycle::store::open(url, &options).unwrap();
    redshift_upsert::Store::new(o.store, o.prefix.as_ref(), o.s3_bucket.as_deref(), o.url)
}

/// The `--store-option` that points an `s3://` store at an S3 API server.
pub fn endpoint_option(endpoint: &str) -> lifecycle::store::StoreOptions {
    lifecycle::store::StoreOptions {
        store_options: vec![("aws_endpoint".into(), endpoint.into())],
    }
}

pub fn service(store: &str, warehouse: &str, history: &str) -> Service {
    Service::new(args(store, warehouse, history)).unwrap()
}

/// Runs one poll with a time limit.
pub async fn poll(s: &mut Service) -> blueshift::PollOutcome {
    tokio::time::timeout(Duration::from_secs(60), s.poll())
        .await
        .expect("poll timed out")
        .unwrap()
}

pub fn files_in(root: &Path, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join(dir))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
