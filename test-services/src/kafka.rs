//! An in-process Kafka cluster for tests (feature `kafka`): rdkafka's mock cluster speaks
//! the real Kafka protocol (produce, fetch, consumer groups, offset commits) and listens on
//! 127.0.0.1 ports, so a binary started as a child process can use it too.
//!
//! ```
//! let cluster = test_services::kafka::KafkaCluster::start(1);
//! let topic = test_services::unique_name("doc-");
//! cluster.create_topic(&topic, 2);
//! assert!(cluster.bootstrap_servers().contains("127.0.0.1"));
//! ```

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// A running mock Kafka cluster; dropping it stops the brokers.
pub struct KafkaCluster {
    cluster: MockCluster<'static, DefaultProducerContext>,
    bootstrap: String,
    brokers: i32,
}

impl KafkaCluster {
    /// Starts a cluster of `brokers` brokers (ids `1..=brokers`).
    ///
    /// # Panics
    /// When librdkafka cannot start the mock cluster (a test set-up failure).
    pub fn start(brokers: i32) -> Self {
        let cluster = match MockCluster::new(brokers) {
            Ok(c) => c,
            Err(e) => panic!("cannot start the mock Kafka cluster with {brokers} brokers: {e}"),
        };
        let bootstrap = cluster.bootstrap_servers();
        Self {
            cluster,
            bootstrap,
            brokers,
        }
    }

    /// The `bootstrap.servers` list of the cluster (`127.0.0.1:PORT,...`).
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates `topic` with `partitions` partitions, replicated on every broker.
    ///
    /// # Panics
    /// When the mock cluster refuses the topic.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        if let Err(e) = self.cluster.create_topic(topic, partitions, self.brokers) {
            panic!("cannot create topic {topic} ({partitions} partitions): {e}");
        }
    }

    /// The underlying mock cluster, to take brokers down/up, inject errors, etc.
    pub fn mock(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }
}
