//! What this crate records through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! Handles are built once (per partition assignment, per topic, per client) and kept next to
//! the state they describe; the per-message path only increments them, with no label
//! building and no lock. Without a recorder installed every handle is a no-op.

use std::sync::Once;

use ::metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};

/// Describes (unit and help text) every metric this crate records, to the recorder current
/// on the calling thread (the global one unless a local one is set).
///
/// Creating a client calls it once per process by itself; call it again after installing a
/// recorder that was not there when the first client was created.
///
/// Consumer (labels `topic`, `partition`, unless said otherwise):
/// - `kafka_seq_consumer_received_total` (counter): messages handed out by the stream.
/// - `kafka_seq_consumer_acked_total` (counter): messages acknowledged ([`Ack::ack`](crate::Ack::ack)).
/// - `kafka_seq_consumer_nacked_total` (counter): messages nacked or whose `Ack` was dropped.
/// - `kafka_seq_consumer_committed_offset` (gauge): the offset last committed successfully
///   (the next offset the group will read).
/// - `kafka_seq_consumer_lag` (gauge): the partition's high watermark, as of librdkafka's
///   last fetch response, minus the next offset to hand out; sampled every commit interval
///   once a message of the partition was handed out, and 0 once the partition is revoked.
/// - `kafka_seq_consumer_unacked` (gauge, no labels): messages handed out and not acked,
///   nacked or dropped yet; sampled every commit interval, summed over the process's
///   consumers.
/// - `kafka_seq_consumer_commit_errors_total` (counter, no labels): offset commits that
///   failed (periodic ones are retried on the next tick; a failure on revoke or at shutdown
///   means the partition's uncommitted tail is redelivered).
///
/// Producer:
/// - `kafka_seq_producer_in_flight` (gauge, no labels): messages enqueued and not yet
///   acknowledged or failed (room a sink reserved ahead, at most 64 messages, counts too),
///   summed over the process's producers.
/// - `kafka_seq_producer_delivered_total{topic}` (counter): messages Kafka acknowledged.
/// - `kafka_seq_producer_delivery_errors_total{topic}` (counter): messages that finally failed.
/// - `kafka_seq_producer_delivery_seconds{topic}` (histogram): from enqueueing to Kafka's
///   acknowledgement (librdkafka's own measure), for acknowledged messages.
///
/// AMQP (feature `amqp`, label `queue`):
/// - `kafka_seq_amqp_received_total`, `kafka_seq_amqp_acked_total`,
///   `kafka_seq_amqp_nacked_total` (counters): deliveries received, and acks and nacks sent.
/// - `kafka_seq_amqp_reconnects_total` (counter): connections re-established after a loss.
pub fn describe_metrics() {
    describe_counter!(
        "kafka_seq_consumer_received_total",
        Unit::Count,
        "Kafka messages handed out by a kafka-seq consumer stream"
    );
    describe_counter!(
        "kafka_seq_consumer_acked_total",
        Unit::Count,
        "Kafka messages acknowledged as processed"
    );
    describe_counter!(
        "kafka_seq_consumer_nacked_total",
        Unit::Count,
        "Kafka messages nacked or whose ack handle was dropped (redelivered later)"
    );
    describe_gauge!(
        "kafka_seq_consumer_committed_offset",
        Unit::Count,
        "Offset last committed successfully (the next offset the group reads)"
    );
    describe_gauge!(
        "kafka_seq_consumer_lag",
        Unit::Count,
        "High watermark (as of the last fetch) minus the next offset to hand out, sampled every commit interval"
    );
    describe_gauge!(
        "kafka_seq_consumer_unacked",
        Unit::Count,
        "Kafka messages handed out and not yet acked, nacked or dropped, sampled every commit interval"
    );
    describe_counter!(
        "kafka_seq_consumer_commit_errors_total",
        Unit::Count,
        "Offset commits that failed"
    );
    describe_gauge!(
        "kafka_seq_producer_in_flight",
        Unit::Count,
        "Kafka messages enqueued and not yet acknowledged or failed"
    );
    describe_counter!(
        "kafka_seq_producer_delivered_total",
        Unit::Count,
        "Produced messages acknowledged by Kafka"
    );
    describe_counter!(
        "kafka_seq_producer_delivery_errors_total",
        Unit::Count,
        "Produced messages whose delivery finally failed"
    );
    describe_histogram!(
        "kafka_seq_producer_delivery_seconds",
        Unit::Seconds,
        "Time from enqueueing a message to Kafka's acknowledgement"
    );
    describe_counter!(
        "kafka_seq_amqp_received_total",
        Unit::Count,
        "AMQP deliveries received"
    );
    describe_counter!(
        "kafka_seq_amqp_acked_total",
        Unit::Count,
        "AMQP deliveries acknowledged (basic.ack sent)"
    );
    describe_counter!(
        "kafka_seq_amqp_nacked_total",
        Unit::Count,
        "AMQP deliveries negatively acknowledged (basic.nack sent)"
    );
    describe_counter!(
        "kafka_seq_amqp_reconnects_total",
        Unit::Count,
        "AMQP connections re-established after a loss"
    );
}

static DESCRIBED: Once = Once::new();

/// [`describe_metrics`] the first time a client is created.
pub(crate) fn describe_once() {
    DESCRIBED.call_once(describe_metrics);
}

/// The metrics of one assignment of one partition, kept in its `offsets::Part`.
#[derive(Debug)]
pub(crate) struct PartitionMetrics {
    pub received: Counter,
    pub acked: Counter,
    pub nacked: Counter,
    pub committed_offset: Gauge,
    pub lag: Gauge,
}

impl PartitionMetrics {
    pub(crate) fn new(topic: &str, partition: i32) -> Self {
        let labels = [
            ("topic", topic.to_string()),
            ("partition", partition.to_string()),
        ];
        Self {
            received: counter!("kafka_seq_consumer_received_total", &labels),
            acked: counter!("kafka_seq_consumer_acked_total", &labels),
            nacked: counter!("kafka_seq_consumer_nacked_total", &labels),
            committed_offset: gauge!("kafka_seq_consumer_committed_offset", &labels),
            lag: gauge!("kafka_seq_consumer_lag", &labels),
        }
    }
}

/// Consumer-wide metrics.
#[derive(Debug)]
pub(crate) struct ConsumerMetrics {
    pub unacked: Gauge,
    pub commit_errors: Counter,
}

impl ConsumerMetrics {
    pub(crate) fn new() -> Self {
        Self {
            unacked: gauge!("kafka_seq_consumer_unacked"),
            commit_errors: counter!("kafka_seq_consumer_commit_errors_total"),
        }
    }
}

/// The producer's in-flight gauge.
pub(crate) fn producer_in_flight() -> Gauge {
    gauge!("kafka_seq_producer_in_flight")
}

/// The delivery metrics of one topic a producer writes to.
#[derive(Debug)]
pub(crate) struct TopicMetrics {
    pub topic: Box<str>,
    pub delivered: Counter,
    pub errors: Counter,
    pub seconds: Histogram,
}

impl TopicMetrics {
    pub(crate) fn new(topic: &str) -> Self {
        let labels = [("topic", topic.to_string())];
        Self {
            topic: topic.into(),
            delivered: counter!("kafka_seq_producer_delivered_total", &labels),
            errors: counter!("kafka_seq_producer_delivery_errors_total", &labels),
            seconds: histogram!("kafka_seq_producer_delivery_seconds", &labels),
        }
    }
}

/// The metrics of one AMQP consumer stream.
#[cfg(feature = "amqp")]
#[derive(Debug)]
pub(crate) struct AmqpMetrics {
    pub received: Counter,
    pub acked: Counter,
    pub nacked: Counter,
    pub reconnects: Counter,
}

#[cfg(feature = "amqp")]
impl AmqpMetrics {
    pub(crate) fn new(queue: &str) -> Self {
        let labels = [("queue", queue.to_string())];
        Self {
            received: counter!("kafka_seq_amqp_received_total", &labels),
            acked: counter!("kafka_seq_amqp_acked_total", &labels),
            nacked: counter!("kafka_seq_amqp_nacked_total", &labels),
            reconnects: counter!("kafka_seq_amqp_reconnects_total", &labels),
        }
    }
}
