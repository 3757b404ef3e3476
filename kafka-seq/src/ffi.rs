//! The librdkafka calls rust-rdkafka does not wrap: two reads of state librdkafka already
//! keeps, for metrics (no request to a broker, nothing that blocks), and an asynchronous
//! commit whose result comes back to the consumer.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::TopicPartitionList;
use rdkafka::bindings as rdsys;
use rdkafka::client::Client;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
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

/// How long a produced message took from being enqueued (`produce`) to its delivery
/// report, as librdkafka measured it (monotonic clock, microseconds); `None` when unknown.
pub(crate) fn delivery_latency(message: &BorrowedMessage<'_>) -> Option<Duration> {
    // SAFETY: `message` borrows a message librdkafka keeps alive while the delivery
    // callback runs; rd_kafka_message_latency only reads its enqueue time.
    let micros = unsafe { rdsys::rd_kafka_message_latency(message.ptr()) };
    u64::try_from(micros).ok().map(Duration::from_micros)
}

/// The high watermark of `topic`/`partition` as of the client's last fetch response
/// (librdkafka's cached value: no broker round trip); `None` when not known yet.
pub(crate) fn cached_high_watermark<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client pointer is valid while `client` is borrowed, `topic` is a valid
    // NUL-terminated string for the call, and the out-pointers point to locals.
    let err = unsafe {
        rdsys::rd_kafka_get_watermark_offsets(
            client.native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}
