//! `kafka-seq`: broker callbacks turned into `Stream`s you compose with ordinary combinators,
//! bounded everywhere and never acknowledging ahead of processing.
//!
//! - [`pipe`]: a bounded bridge from callback code (sync or async, any thread) to a
//!   `Stream`, with backpressure both ways.
//! - [`consumer`]: a Kafka consumer group as a `Stream` of [`KafkaMessage`]s, each with an
//!   [`Ack`] handle. Offsets are committed per partition only up to the highest
//!   *contiguously* acknowledged offset + 1: periodically, when a partition is revoked, and
//!   on shutdown. At least once, never "committed but not processed".
//! - [`producer`]: a Kafka producer with bounded in-flight messages, a [`DeliveryReport`]
//!   per message (a future resolving to [`Delivered`]: where Kafka stored it) and a `Sink`
//!   that flushes on close; idempotent by default.
//! - [`lane`]: many messages and each one's report in the sender's order, without an
//!   allocation or a wake-up per message ([`KafkaProducer::lane`]): for forwarders that
//!   must know every message's fate at a bare producer's rate.
//! - `amqp` (feature `amqp`): a RabbitMQ consumer stream (prefetch as the bound, ack/nack
//!   handles, reconnect forever with exponential backoff and jitter) and a publisher with
//!   confirms.
//!
//! Every client takes librdkafka properties as `key=value` pairs ([`parse_property`]).
//!
//! # Metrics
//!
//! Recorded through the [`metrics`](https://docs.rs/metrics) facade (no-ops until a recorder
//! is installed), named `kafka_seq_<what>[_unit]`, labelled only by `topic`, `partition` and
//! (AMQP) `queue`. [`describe_metrics`] lists and describes them all:
//! - consumer: `kafka_seq_consumer_received_total`, `_acked_total`, `_nacked_total`,
//!   `_committed_offset` and `_lag` per topic and partition; `kafka_seq_consumer_unacked` and
//!   `kafka_seq_consumer_commit_errors_total`;
//! - producer: `kafka_seq_producer_in_flight`; `kafka_seq_producer_delivered_total`,
//!   `_delivery_errors_total` and `_delivery_seconds` (histogram) per topic;
//! - AMQP: `kafka_seq_amqp_received_total`, `_acked_total`, `_nacked_total`,
//!   `_reconnects_total` per queue.
//!
//! Handles are built once per partition assignment, topic or client; the per-message path
//! only increments them.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use futures::StreamExt;
//! // A callback-style API feeding a bounded pipe, consumed as a stream.
//! let (tx, stream) = kafka_seq::pipe::<String>(16);
//! tokio::spawn(async move {
//!     for word in ["a", "bb", "ccc"] {
//!         tx.put(word.to_string()).await.unwrap();
//!     }
//! });
//! let lengths: Vec<usize> = stream.map(|w| w.len()).filter(|n| std::future::ready(*n > 1)).collect().await;
//! assert_eq!(lengths, vec![2, 3]);
//! # });
//! ```
#![warn(missing_docs)]
// Only `ffi` (two reads of librdkafka state for metrics) may use `unsafe`.
#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod consumer;
pub mod detached;
mod ffi;
mod in_flight;
pub mod lane;
mod metrics;
mod offsets;
mod opaque;
mod pipe;
pub mod producer;
mod registry;

pub use crate::metrics::describe_metrics;
pub use consumer::{
    Ack, ConsumerConfig, ConsumerControl, KafkaMessage, KafkaStream, MessageRef, SeekTo,
};
pub use detached::{DetachedSender, Returned, Returns};
pub use lane::{LaneReport, LaneReports, LaneSender, Ticket};
pub use pipe::{PipeSender, PipeStream, pipe};
pub use producer::{Delivered, DeliveryReport, KafkaProducer, KafkaSink, ProducerConfig, Record};

/// Everything that can go wrong in this crate.
///
/// Non-exhaustive: new kinds of failure may be added, so a `match` needs a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pipe was closed or its stream dropped.
    #[error("pipe closed: the pipe was closed or its stream dropped")]
    PipeClosed,
    /// `try_put` found the pipe full.
    #[error("pipe full")]
    PipeFull,
    /// A blocking put was called on an async runtime thread.
    #[error("blocking put on an async runtime thread: use `put().await` there")]
    BlockingInAsyncContext,
    /// A client that spawns tasks was started outside a tokio runtime.
    #[error("{what} must be started from within a tokio runtime")]
    NoRuntime {
        /// What was being started.
        what: &'static str,
    },
    /// A `key=value` property did not parse.
    #[error("invalid property {property:?}: expected key=value")]
    InvalidProperty {
        /// The text given.
        property: String,
    },
    /// A Kafka client operation failed.
    #[error("kafka {op} failed: {source}")]
    Kafka {
        /// What was being done, naming topics/groups where known.
        op: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A produced message was not acknowledged by Kafka.
    #[error("delivery to topic {topic} failed: {source}")]
    Delivery {
        /// The topic the message was for.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The producer went away before reporting a message's delivery.
    #[error("delivery report lost: the producer was dropped before Kafka answered")]
    DeliveryLost,
    /// A producer has as many delivery lanes open as it can number.
    #[error("cannot open a delivery lane: {max} are open on this producer")]
    TooManyLanes {
        /// The most lanes a producer may have open.
        max: usize,
    },
    /// An AMQP operation failed.
    #[cfg(feature = "amqp")]
    #[error("amqp {op} on {target} failed: {source}")]
    Amqp {
        /// What was being done.
        op: &'static str,
        /// The queue, exchange or URL concerned.
        target: String,
        /// lapin's error.
        #[source]
        source: lapin::Error,
    },
    /// An AMQP ack or nack could not be sent: the delivery's channel or connection is gone
    /// (RabbitMQ requeues the message and delivers it again).
    #[cfg(feature = "amqp")]
    #[error(
        "amqp {op} of delivery {delivery_tag} (routing key {routing_key:?}) not sent: its channel is gone; RabbitMQ redelivers the message"
    )]
    AmqpChannelGone {
        /// `basic.ack` or `basic.nack`.
        op: &'static str,
        /// The delivery's tag on its (former) channel.
        delivery_tag: u64,
        /// The routing key the message was published with.
        routing_key: String,
    },
    /// A published AMQP message was negatively confirmed by the broker.
    #[cfg(feature = "amqp")]
    #[error(
        "amqp publish to exchange {exchange:?} routing key {routing_key:?} was nacked by the broker"
    )]
    AmqpNack {
        /// The exchange published to.
        exchange: String,
        /// The routing key used.
        routing_key: String,
    },
}

/// Parses one librdkafka property given as `key=value` (as `-X key=value` on command lines).
///
/// ```
/// assert_eq!(
///     kafka_seq::parse_property("fetch.min.bytes=1024").unwrap(),
///     ("fetch.min.bytes".to_string(), "1024".to_string())
/// );
/// assert!(kafka_seq::parse_property("no-equals-sign").is_err());
/// ```
///
/// # Errors
/// [`Error::InvalidProperty`] when there is no `=` or the key is empty.
pub fn parse_property(text: &str) -> Result<(String, String), Error> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(Error::InvalidProperty {
            property: text.to_string(),
        }),
    }
}

pub(crate) fn kafka_err(op: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> Error {
    let op = op.into();
    move |source| Error::Kafka { op, source }
}
