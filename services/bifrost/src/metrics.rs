//! The service's metrics (`bifrost_*`), labelled by topic and partition where per partition.

use metrics::{Counter, Gauge, Histogram};

/// Describes every metric of the service (once per process is enough).
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "bifrost_records_archived_total",
        "Records archived in uploaded objects."
    );
    describe_counter!(
        "bifrost_bytes_archived_total",
        Unit::Bytes,
        "Uncompressed record bytes (8-byte headers included) archived in uploaded objects."
    );
    describe_counter!("bifrost_objects_uploaded_total", "Objects uploaded.");
    describe_counter!(
        "bifrost_conflicts_resolved_total",
        "Uploads whose key existed (a restart re-read the range, or another instance wrote it): the existing object was kept and archiving went on after its range."
    );
    describe_counter!(
        "bifrost_objects_replaced_total",
        "Objects replaced by a replay (a deleted token or bifrost replay)."
    );
    describe_counter!(
        "bifrost_upload_errors_total",
        "Failed object-store requests (retried with backoff; the commit waits)."
    );
    describe_counter!(
        "bifrost_tombstones_total",
        "Messages without a value (tombstones) consumed."
    );
    describe_counter!(
        "bifrost_messages_received_total",
        "Messages consumed into spool files."
    );
    describe_histogram!(
        "bifrost_upload_duration_seconds",
        Unit::Seconds,
        "From the start of a file's upload (compression, puts, retries, conflicts) to its acknowledgement."
    );
    describe_histogram!(
        "bifrost_put_duration_seconds",
        Unit::Seconds,
        "One successful object put."
    );
    describe_gauge!(
        "bifrost_commit_lag_records",
        "Offsets consumed but not archived yet (the commit waits for them), per partition."
    );
    describe_gauge!(
        "bifrost_oldest_unuploaded_seconds",
        Unit::Seconds,
        "Age of the oldest record not uploaded yet, per partition (0 when all are)."
    );
    describe_gauge!(
        "bifrost_spool_bytes",
        Unit::Bytes,
        "Bytes in local spool files."
    );
    describe_gauge!(
        "bifrost_paused_partitions",
        "Partitions paused because their uploads lag (or denied topics)."
    );
}

/// One partition's metric handles, built once.
#[derive(Debug, Clone)]
pub struct PartitionMetrics {
    /// Records archived.
    pub records: Counter,
    /// Record bytes archived.
    pub bytes: Counter,
    /// Objects uploaded.
    pub objects: Counter,
    /// Conflicts resolved.
    pub conflicts: Counter,
    /// Objects replaced by a replay.
    pub replaced: Counter,
    /// Failed requests.
    pub upload_errors: Counter,
    /// Tombstones.
    pub tombstones: Counter,
    /// Messages received.
    pub received: Counter,
    /// Upload of a file, end to end.
    pub upload_seconds: Histogram,
    /// One put.
    pub put_seconds: Histogram,
    /// Offsets consumed, not archived.
    pub commit_lag: Gauge,
    /// Age of the oldest unarchived record.
    pub oldest: Gauge,
}

impl PartitionMetrics {
    /// The handles of `topic` / `partition`.
    pub fn new(topic: &str, partition: i32) -> PartitionMetrics {
        let labels = [
            ("topic", topic.to_string()),
            ("partition", partition.to_string()),
        ];
        PartitionMetrics {
            records: metrics::counter!("bifrost_records_archived_total", &labels),
            bytes: metrics::counter!("bifrost_bytes_archived_total", &labels),
            objects: metrics::counter!("bifrost_objects_uploaded_total", &labels),
            conflicts: metrics::counter!("bifrost_conflicts_resolved_total", &labels),
            replaced: metrics::counter!("bifrost_objects_replaced_total", &labels),
            upload_errors: metrics::counter!("bifrost_upload_errors_total", &labels),
            tombstones: metrics::counter!("bifrost_tombstones_total", &labels),
            received: metrics::counter!("bifrost_messages_received_total", &labels),
            // Histograms are not per partition: each costs ~16 KiB in the telemetry recorder.
            upload_seconds: metrics::histogram!("bifrost_upload_duration_seconds"),
            put_seconds: metrics::histogram!("bifrost_put_duration_seconds"),
            commit_lag: metrics::gauge!("bifrost_commit_lag_records", &labels),
            oldest: metrics::gauge!("bifrost_oldest_unuploaded_seconds", &labels),
        }
    }
}
