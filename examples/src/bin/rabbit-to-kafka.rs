//! `rabbit-to-kafka`: RabbitMQ queue -> transform -> Kafka topic, acking each delivery after
//! Kafka acknowledged it. See `examples::rabbit_to_kafka`.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    examples::rabbit_to_kafka::main(&examples::rabbit_to_kafka::Args::parse()).map(drop)
}
