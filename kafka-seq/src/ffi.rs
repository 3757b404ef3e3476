//! The librdkafka calls rust-rdkafka does not wrap: an asynchronous commit whose result
//! comes back to the consumer.
#![allow(unsafe_code)]

use rdkafka::ClientContext;
use rdkafka::TopicPartitionList;
use rdkafka::bindings as rdsys;
use rdkafka::client::Client;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;

/// Commits `offsets` asynchronously with the result posted to the consumer's queue, where
/// the next poll of the consumer hands it to `ConsumerContext::commit_callback` (and so
/// does the poll loop closing the client).
///
/// rust-rdkafka's `commit(.., CommitMode::Async)` (`rd_kafka_commit`) sends the result
/// nowhere: librdkafka reports a manual asynchronous commit only to a reply queue or to an
/// `offset_commit_cb` in the configuration, and rust-rdkafka sets neither (it uses the
/// event API).
pub(crate) fn commit_async<C: ClientContext>(
    client: &Client<C>,
    offsets: &TopicPartitionList,
) -> KafkaResult<()> {
    let rk = client.native_ptr();
    // SAFETY: `rk` is valid while `client` is borrowed. The queue handle is a new reference
    // to the consumer queue, released below; the commit's reply keeps its own reference.
    // `offsets` is copied by librdkafka before the call returns.
    let err = unsafe {
        let queue = rdsys::rd_kafka_queue_get_consumer(rk);
        if queue.is_null() {
            return Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::UnknownGroup));
        }
        let err =
            rdsys::rd_kafka_commit_queue(rk, offsets.ptr(), queue, None, std::ptr::null_mut());
        rdsys::rd_kafka_queue_destroy(queue);
        err
    };
    if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(())
    } else {
        Err(KafkaError::ConsumerCommit(err.into()))
    }
}
