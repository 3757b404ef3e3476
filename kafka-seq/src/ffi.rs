//! The librdkafka calls rust-rdkafka does not wrap: two reads of state librdkafka already
//! keeps, for metrics (no request to a broker, nothing that blocks), an asynchronous
//! commit whose result comes back to the consumer, and producing through a topic handle
//! (rust-rdkafka produces by name: a C copy of the name and a locked lookup per message),
//! headers included.
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

/// The timestamp (CreateTime, milliseconds) a message whose delivery failed was produced
/// with. librdkafka reports no timestamp for a message with an error, though it keeps it:
/// the error is set aside for the one call that reads it.
pub(crate) fn failed_timestamp(message: &BorrowedMessage<'_>) -> Option<i64> {
    let p = message.ptr();
    let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
    // SAFETY: librdkafka hands the reported message to the delivery callback, on this
    // (the polling) thread, and frees it only after the callback returns; no other thread
    // reads it meanwhile. `err` is a public field of `rd_kafka_message_t`, restored before
    // returning; rd_kafka_message_timestamp only reads the message.
    let ts = unsafe {
        let err = (*p).err;
        (*p).err = rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
        let ts = rdsys::rd_kafka_message_timestamp(p, &mut kind);
        (*p).err = err;
        ts
    };
    (kind == rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_CREATE_TIME).then_some(ts)
}

/// Milliseconds since the epoch from the kernel's coarse clock (a memory read, no time
/// source read: ticks of a few milliseconds), for per-message ages on the delivery thread.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn coarse_now_millis() -> i64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write; CLOCK_REALTIME_COARSE exists on Linux.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut t) };
    if r != 0 {
        return 0;
    }
    // `time_t` and `c_long` are `i64` on 64-bit targets, narrower on some others.
    #[allow(clippy::useless_conversion)]
    let (secs, nanos) = (i64::from(t.tv_sec), i64::from(t.tv_nsec));
    secs * 1000 + nanos / 1_000_000
}

/// Milliseconds since the epoch (no coarse clock to read here).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn coarse_now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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

/// A librdkafka topic handle (`rd_kafka_topic_t`), one reference, released when dropped.
/// Producing through it skips what producing by name costs per message: a C copy of the
/// name and a lookup of the topic under the client's lock.
#[derive(Debug)]
pub(crate) struct TopicHandle(std::ptr::NonNull<rdsys::rd_kafka_topic_t>);

// SAFETY: librdkafka topic handles are reference-counted and safe to use from any thread.
unsafe impl Send for TopicHandle {}
// SAFETY: as above; producing through a shared handle is thread-safe in librdkafka.
unsafe impl Sync for TopicHandle {}

impl TopicHandle {
    /// A handle on `topic` for `client` (default topic configuration).
    ///
    /// # Errors
    /// The name holds a NUL byte ([`KafkaError::Nul`]), or librdkafka refuses it (longer
    /// than 512 bytes: `InvalidArgument`), as producing by name would fail.
    ///
    /// # Safety
    /// The handle must be dropped before `client` is destroyed.
    pub(crate) unsafe fn new<C: ClientContext>(
        client: &Client<C>,
        topic: &str,
    ) -> KafkaResult<Self> {
        let name = CString::new(topic)?;
        // SAFETY: the client pointer is valid while borrowed, `name` is NUL-terminated for
        // the call, and a null configuration means the defaults. The result is a new
        // reference (or null), released in `drop`.
        let rkt = unsafe {
            rdsys::rd_kafka_topic_new(client.native_ptr(), name.as_ptr(), std::ptr::null_mut())
        };
        match std::ptr::NonNull::new(rkt) {
            Some(rkt) => Ok(TopicHandle(rkt)),
            // SAFETY: reads this thread's last librdkafka error, set by the refusal above.
            None => Err(KafkaError::MessageProduction(
                unsafe { rdsys::rd_kafka_last_error() }.into(),
            )),
        }
    }

    /// The raw handle.
    pub(crate) fn ptr(&self) -> std::ptr::NonNull<rdsys::rd_kafka_topic_t> {
        self.0
    }
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: the one reference `new` took, released once; the client outlives it (the
        // contract of `new`).
        unsafe { rdsys::rd_kafka_topic_destroy(self.0.as_ptr()) }
    }
}

/// What to produce: `rd_kafka_producev` arguments (payload, key and headers are copied by
/// librdkafka before the call returns).
pub(crate) struct Produce<'a> {
    pub partition: i32,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// Name and value of each header, in order.
    pub headers: &'a [(String, bytes::Bytes)],
    /// Milliseconds since the epoch; 0 lets librdkafka stamp the message.
    pub timestamp: i64,
}

/// Enqueues a message through a topic handle, as rust-rdkafka's `BaseProducer::send` does
/// through the topic's name (same flags: payload, key and headers copied). On success
/// librdkafka owns `opaque`; on an error it stays the caller's.
///
/// # Safety
/// `rkt` must be a live handle of `client`'s; `opaque` what the client's delivery context
/// expects.
pub(crate) unsafe fn produce<C: ClientContext>(
    client: &Client<C>,
    rkt: *mut rdsys::rd_kafka_topic_t,
    m: &Produce<'_>,
    opaque: *mut std::ffi::c_void,
) -> rdsys::rd_kafka_resp_err_t {
    use rdsys::rd_kafka_vtype_t::*;
    let bytes = |b: Option<&[u8]>| match b {
        Some(b) => (b.as_ptr() as *mut std::ffi::c_void, b.len()),
        None => (std::ptr::null_mut(), 0),
    };
    let (payload, payload_len) = bytes(m.payload);
    let (key, key_len) = bytes(m.key);
    // A header list of the message's own (null when it has none: producev then adds none).
    let headers = if m.headers.is_empty() {
        std::ptr::null_mut()
    } else {
        // SAFETY: a new, empty list (freed below or owned by the message); each name and
        // value is valid for the call and copied into it; lengths fit `isize` as slices'.
        // `rd_kafka_header_add` fails only on a read-only list, which this is not.
        unsafe {
            let h = rdsys::rd_kafka_headers_new(m.headers.len());
            for (name, value) in m.headers {
                rdsys::rd_kafka_header_add(
                    h,
                    name.as_ptr().cast(),
                    name.len() as isize,
                    value.as_ptr().cast(),
                    value.len() as isize,
                );
            }
            h
        }
    };
    // SAFETY: the caller's contract for `rkt` and `opaque`; payload and key are
    // valid for the call and copied (RD_KAFKA_MSG_F_COPY); the argument list is the one
    // rust-rdkafka passes, with the topic handle in place of the name. A header list is
    // the message's on success and still ours on an error (librdkafka's contract for
    // RD_KAFKA_V_HEADERS), destroyed then.
    let err = unsafe {
        rdsys::rd_kafka_producev(
            client.native_ptr(),
            RD_KAFKA_VTYPE_RKT,
            rkt,
            RD_KAFKA_VTYPE_PARTITION,
            m.partition,
            RD_KAFKA_VTYPE_MSGFLAGS,
            rdsys::RD_KAFKA_MSG_F_COPY,
            RD_KAFKA_VTYPE_VALUE,
            payload,
            payload_len,
            RD_KAFKA_VTYPE_KEY,
            key,
            key_len,
            RD_KAFKA_VTYPE_OPAQUE,
            opaque,
            RD_KAFKA_VTYPE_TIMESTAMP,
            m.timestamp,
            RD_KAFKA_VTYPE_HEADERS,
            headers,
            RD_KAFKA_VTYPE_END,
        )
    };
    if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && !headers.is_null() {
        // SAFETY: refused, so the list is still ours; destroyed once, here.
        unsafe { rdsys::rd_kafka_headers_destroy(headers) }
    }
    err
}
