//! An in-process Kafka cluster for tests (feature `kafka`): rdkafka's mock cluster speaks
//! the real Kafka protocol (produce, fetch, consumer groups, offset commits) and listens on
//! 127.0.0.1 ports, so a binary started as a child process can use it too.
//!
//! ```
//! let cluster = test_services::kafka::KafkaCluster::start(1);
//! let topic = test_services::unique_name("doc-");
//! cluster.create_topic(&topic, 2);
//! assert!(cluster.bootstrap_servers().contains("127.0.0.1"));
//! cluster.set_initial_rebalance_delay(std::time::Duration::from_millis(100));
//! ```

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, DefaultProducerContext, Producer};

/// A running mock Kafka cluster; dropping it stops the brokers.
pub struct KafkaCluster {
    /// The client that owns the mock cluster (librdkafka's `test.mock.num.brokers`), which
    /// also gives the raw handle for settings rdkafka does not wrap.
    owner: BaseProducer,
    bootstrap: String,
    brokers: i32,
}

impl KafkaCluster {
    /// Starts a cluster of `brokers` brokers (ids `1..=brokers`).
    ///
    /// # Panics
    /// When librdkafka cannot start the mock cluster (a test set-up failure; programs use
    /// [`try_start`](Self::try_start)).
    pub fn start(brokers: i32) -> Self {
        Self::try_start(brokers).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a cluster of `brokers` brokers, or says why it cannot.
    ///
    /// # Errors
    /// librdkafka cannot start the mock cluster.
    pub fn try_start(brokers: i32) -> Result<Self, String> {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", brokers.to_string())
            .create()
            .map_err(|e| {
                format!("cannot start the mock Kafka cluster with {brokers} brokers: {e}")
            })?;
        let bootstrap = owner
            .client()
            .mock_cluster()
            .map(|m| m.bootstrap_servers())
            .ok_or("librdkafka made no mock cluster for test.mock.num.brokers")?;
        Ok(Self {
            owner,
            bootstrap,
            brokers,
        })
    }

    /// The `bootstrap.servers` list of the cluster (`127.0.0.1:PORT,...`).
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates `topic` with `partitions` partitions, replicated on every broker.
    ///
    /// # Panics
    /// When the mock cluster refuses the topic (programs use
    /// [`try_create_topic`](Self::try_create_topic)).
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        self.try_create_topic(topic, partitions)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Creates `topic`, or says why it cannot.
    ///
    /// # Errors
    /// The mock cluster is gone or refuses the topic.
    pub fn try_create_topic(&self, topic: &str, partitions: i32) -> Result<(), String> {
        let mock = self
            .owner
            .client()
            .mock_cluster()
            .ok_or("the mock cluster is gone")?;
        mock.create_topic(topic, partitions, self.brokers)
            .map_err(|e| format!("cannot create topic {topic} ({partitions} partitions): {e}"))
    }

    /// How long the group coordinator waits for more members when the first one joins an
    /// empty group (like a broker's `group.initial.rebalance.delay.ms`; the mock's default
    /// is 3 s). Tests that restart consumers often shorten it.
    pub fn set_initial_rebalance_delay(&self, delay: Duration) {
        let ms = i32::try_from(delay.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the handle belongs to `owner`, alive as long as `self`; the setter only
        // stores the value in the mock cluster's defaults.
        unsafe {
            let mock =
                rdkafka::bindings::rd_kafka_handle_mock_cluster(self.owner.client().native_ptr());
            if !mock.is_null() {
                rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(mock, ms);
            }
        }
    }

    /// The underlying mock cluster, to take brokers down/up, inject errors, etc.
    ///
    /// # Panics
    /// Never in practice: the owning client was created with a mock cluster.
    pub fn mock(&self) -> MockCluster<'_, DefaultProducerContext> {
        match self.owner.client().mock_cluster() {
            Some(m) => m,
            None => panic!("the mock cluster is gone"),
        }
    }
}
