//! `rabbit-to-kafka`: consume JSON messages from a RabbitMQ queue, transform them with
//! ordinary stream combinators, produce them to a Kafka topic, and ack each RabbitMQ
//! delivery only after Kafka acknowledged the produced message.
//!
//! At least once: a delivery is acked after its Kafka acknowledgement, so a crash or restart
//! at any point leaves it in RabbitMQ to be redelivered (and produced again). On SIGTERM or
//! SIGINT it stops taking deliveries, finishes those in flight, flushes the producer and
//! exits 0.
//!
//! The transformation: each message must be a JSON object; it gets a `"_source"` field
//! naming the queue, and its `"id"` field (if any) becomes the Kafka key. A message that is
//! not a JSON object is rejected without requeue (RabbitMQ dead-letters it if the queue has
//! a dead-letter exchange) and counted as invalid.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use futures::TryStreamExt;
use kafka_seq::amqp::{AmqpConfig, AmqpDelivery};
use kafka_seq::{KafkaProducer, ProducerConfig, Record};
use lifecycle::{CancellationToken, Exit};

/// Flags of the `rabbit-to-kafka` program.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "rabbit-to-kafka",
    about = "Move JSON messages from a RabbitMQ queue to a Kafka topic, acking after Kafka did"
)]
pub struct Args {
    /// RabbitMQ URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2f
    #[arg(long, value_name = "URL")]
    pub amqp: String,
    /// Queue to consume (declared durable if missing).
    #[arg(long, value_name = "NAME")]
    pub queue: String,
    /// Kafka bootstrap servers, host:port[,host:port...]
    #[arg(long, value_name = "LIST")]
    pub brokers: String,
    /// Kafka topic to produce to.
    #[arg(long, value_name = "NAME")]
    pub topic: String,
    /// librdkafka producer property, repeatable: -X linger.ms=5
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_property)]
    pub property: Vec<(String, String)>,
    /// Deliveries in flight at most (RabbitMQ prefetch; also the produce concurrency).
    #[arg(long, default_value_t = 256)]
    pub prefetch: u16,
    /// The process (`--config`, `--log-format`, `--drain-timeout`, metrics).
    #[command(flatten)]
    pub process: lifecycle::ProcessArgs,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    kafka_seq::parse_property(s).map_err(|e| e.to_string())
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages produced to Kafka and acked in RabbitMQ.
    pub moved: u64,
    /// Messages rejected because they were not JSON objects.
    pub invalid: u64,
}

/// The Kafka record for one RabbitMQ message body, or `None` when it is not a JSON object.
pub fn transform(queue: &str, body: &[u8]) -> Option<Record> {
    let serde_json::Value::Object(mut object) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    let key = match object.get("id") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    object.insert("_source".into(), serde_json::Value::String(queue.into()));
    let payload = serde_json::to_vec(&object).ok()?;
    let record = Record::new(payload);
    Some(match key {
        Some(k) => record.key(k),
        None => record,
    })
}

/// Moves one delivery: produce, wait for Kafka's acknowledgement, then ack in RabbitMQ.
async fn move_one(
    args: &Args,
    producer: &KafkaProducer,
    delivery: AmqpDelivery,
    summary: &Counters,
) -> anyhow::Result<()> {
    let Some(record) = transform(&args.queue, &delivery.data) else {
        tracing::warn!(queue = %args.queue, bytes = delivery.data.len(), "not a JSON object; rejected");
        if settled(delivery.nack(false).await)? {
            summary.invalid.fetch_add(1, Ordering::Relaxed);
        }
        return Ok(());
    };
    let delivered = producer
        .send(&args.topic, &record)
        .await?
        .await
        .with_context(|| format!("producing to topic {}", args.topic))?;
    tracing::trace!(
        partition = delivered.partition,
        offset = delivered.offset,
        "produced"
    );
    if settled(delivery.ack().await)? {
        summary.moved.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Whether an ack or nack reached RabbitMQ. One lost with its connection is not an error
/// for the run: the stream reconnects and RabbitMQ delivers the message again (a produced
/// message is then produced twice: at least once, never lost).
fn settled(result: Result<(), kafka_seq::Error>) -> anyhow::Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(e @ kafka_seq::Error::AmqpChannelGone { .. }) => {
            tracing::warn!(error = %e, "acknowledgement lost with the connection");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Default)]
struct Counters {
    moved: AtomicU64,
    invalid: AtomicU64,
}

/// Runs until `shutdown` is cancelled (or the queue's stream fails), then drains: deliveries
/// in flight are finished, the producer flushed, the AMQP connection closed.
///
/// # Errors
/// When RabbitMQ or Kafka cannot be reached at start, or a message cannot be produced
/// (unacked deliveries stay in RabbitMQ).
pub async fn run(args: &Args, shutdown: CancellationToken) -> anyhow::Result<Summary> {
    let producer = ProducerConfig::new(&args.brokers)
        .set_all(args.property.iter().cloned())
        .max_in_flight(usize::from(args.prefetch).max(1))
        .create()
        .context("creating the Kafka producer")?;
    let stream = AmqpConfig::new(&args.amqp, &args.queue)
        .prefetch(args.prefetch)
        .consume()
        .await
        .with_context(|| format!("consuming queue {}", args.queue))?;
    let control = stream.control();
    let counters = Arc::new(Counters::default());
    tracing::info!(queue = %args.queue, topic = %args.topic, "moving messages");

    let work = stream
        .map_err(anyhow::Error::from)
        .map_ok(|delivery| move_one(args, &producer, delivery, &counters))
        .try_buffer_unordered(usize::from(args.prefetch).max(1))
        .try_for_each(|()| std::future::ready(Ok(())));
    tokio::pin!(work);
    let result = tokio::select! {
        r = &mut work => r,
        () = shutdown.cancelled() => {
            tracing::info!("shutting down: draining deliveries in flight");
            control.shutdown();
            // The stream ends after the deliveries already received; finish them.
            work.await
        }
    };
    control.shutdown();
    producer
        .flush()
        .await
        .context("flushing the Kafka producer")?;
    control.closed().await;
    result?;
    let summary = Summary {
        moved: counters.moved.load(Ordering::Relaxed),
        invalid: counters.invalid.load(Ordering::Relaxed),
    };
    tracing::info!(moved = summary.moved, invalid = summary.invalid, "stopped");
    Ok(summary)
}

/// The program, with the process lifecycle of `service-lifecycle` (flags, variables
/// `RABBIT_TO_KAFKA_*`, `--config`, logging, metrics): [`run`] until SIGTERM or SIGINT, then
/// a drain; exit 0 after a clean stop, 1 when moving failed, 2 on bad configuration.
pub fn main(args: Args) -> ExitCode {
    let process = args.process.clone();
    lifecycle::run("rabbit-to-kafka", &process, move |stop| async move {
        run(&args, stop).await.map(|_| Exit::Done)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_get_a_source_and_their_id_as_key() {
        let r = transform("q", br#"{"id": 7, "msg": "hi"}"#).unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"7"[..]));
        let v: serde_json::Value = serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
        assert_eq!(v["_source"], "q");
        assert_eq!(v["msg"], "hi");
        let r = transform("q", br#"{"id": "a-1"}"#).unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"a-1"[..]));
        assert!(transform("q", br#"{"x": 1}"#).unwrap().key.is_none());
    }

    #[test]
    fn non_objects_are_refused() {
        assert!(transform("q", b"[1, 2]").is_none());
        assert!(transform("q", b"not json").is_none());
    }

    #[test]
    fn flags_parse_with_properties() {
        let a: Args = lifecycle::try_parse_from(
            "rabbit-to-kafka",
            [
                "rabbit-to-kafka",
                "--amqp",
                "amqp://h",
                "--queue",
                "q",
                "--brokers",
                "b:9092",
                "--topic",
                "t",
                "-X",
                "linger.ms=5",
                "-X",
                "acks=all",
            ],
        )
        .unwrap();
        assert_eq!(
            a.property,
            vec![
                ("linger.ms".into(), "5".into()),
                ("acks".into(), "all".into())
            ]
        );
        assert!(
            lifecycle::try_parse_from::<Args, _, _>(
                "rabbit-to-kafka",
                [
                    "rabbit-to-kafka",
                    "--amqp",
                    "a",
                    "--queue",
                    "q",
                    "--brokers",
                    "b",
                    "--topic",
                    "t",
                    "-X",
                    "oops"
                ]
            )
            .is_err()
        );
    }
}
