//! `rabbit-to-kafka`: RabbitMQ -> transform -> Kafka, acking after Kafka acknowledged (issue 4; not built yet).
