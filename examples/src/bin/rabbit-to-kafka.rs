//! `rabbit-to-kafka`: RabbitMQ queue -> transform -> Kafka topic, acking each delivery after
//! Kafka acknowledged it. See `examples::rabbit_to_kafka`.

fn main() -> std::process::ExitCode {
    examples::rabbit_to_kafka::main(lifecycle::parse("rabbit-to-kafka"))
}
