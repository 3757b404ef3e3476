//! RabbitMQ (AMQP 0-9-1) as a `Stream` of deliveries with ack/nack handles, and a publisher
//! with confirms (feature `amqp`, through lapin).
//!
//! The bound is the channel's prefetch: RabbitMQ never has more than
//! [`prefetch`](AmqpConfig::prefetch) deliveries unacknowledged on the consumer. When the
//! connection or the consumer is lost, the stream reconnects with exponential backoff
//! ([`backoff`](AmqpConfig::backoff), through `backon`'s `ExponentialBuilder`), forever;
//! deliveries not acknowledged before the loss are redelivered by RabbitMQ (their handles
//! then fail to ack, which is harmless). Dropping a delivery without acking leaves it
//! unacknowledged until the connection closes, when RabbitMQ redelivers it.
//!
//! ```no_run
//! # async fn run() -> Result<(), kafka_seq::Error> {
//! use futures::StreamExt;
//! use kafka_seq::amqp::AmqpConfig;
//!
//! let mut stream = AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f", "jobs")
//!     .prefetch(50)
//!     .consume()
//!     .await?;
//! while let Some(delivery) = stream.next().await {
//!     let delivery = delivery?;
//!     println!("{} bytes", delivery.data.len());
//!     delivery.ack().await?;
//! }
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use lapin::Acker;
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::metrics::{AmqpMetrics, describe_once};

/// Configuration of an AMQP consumer stream.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    url: String,
    queue: String,
    prefetch: u16,
    declare: bool,
    backoff_min: Duration,
    backoff_max: Duration,
    drain_timeout: Duration,
}

impl AmqpConfig {
    /// Consume `queue` on the broker at `url` (`amqp://user:pass@host:port/vhost`).
    pub fn new(url: impl Into<String>, queue: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            queue: queue.into(),
            prefetch: 100,
            declare: true,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
        }
    }

    /// At most this many unacknowledged deliveries (default 100, at least 1).
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// Whether to declare the queue (durable) before consuming (default true).
    pub fn declare_queue(mut self, declare: bool) -> Self {
        self.declare = declare;
        self
    }

    /// Reconnection backoff (defaults 100 ms, 10 s): after a loss the first wait is `min`,
    /// each failed attempt doubles it up to `max`, and each wait gets a random jitter of up
    /// to its own length on top (so waits at the cap are between `max` and twice `max`).
    /// Reconnecting never gives up; a successful connection starts over at `min`.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min.max(Duration::from_millis(1));
        self.backoff_max = max.max(self.backoff_min);
        self
    }

    /// The reconnect policy [`backoff`](Self::backoff) describes.
    fn backoff_policy(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(self.backoff_min)
            .with_factor(2.0)
            .with_max_delay(self.backoff_max)
            .with_jitter()
            .without_max_times()
    }

    /// At shutdown, how long to wait for outstanding deliveries to be acked before closing
    /// the connection (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Connects (the first connection's failure is returned, later ones are retried) and
    /// starts consuming.
    ///
    /// # Errors
    /// [`Error::Amqp`] when the first connection, the queue declaration or the consume fails;
    /// [`Error::NoRuntime`] outside a tokio runtime.
    pub async fn consume(self) -> Result<AmqpStream, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime {
            what: "kafka_seq::amqp::AmqpConfig::consume",
        })?;
        describe_once();
        let metrics = Arc::new(AmqpMetrics::new(&self.queue));
        let session = connect(&self).await?;
        let (tx, rx) = mpsc::channel(usize::from(self.prefetch));
        let (done_tx, done_rx) = watch::channel(false);
        let cancel = CancellationToken::new();
        let permits = Arc::new(Semaphore::new(usize::from(self.prefetch)));
        runtime.spawn(run(
            self,
            session,
            tx,
            permits,
            metrics,
            cancel.clone(),
            done_tx,
        ));
        Ok(AmqpStream {
            rx,
            control: AmqpControl {
                cancel,
                done: done_rx,
            },
        })
    }
}

struct Session {
    connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
}

fn amqp_err(op: &'static str, target: &str) -> impl FnOnce(lapin::Error) -> Error {
    let target = target.to_string();
    move |source| Error::Amqp { op, target, source }
}

async fn connect(c: &AmqpConfig) -> Result<Session, Error> {
    let connection = Connection::connect(&c.url, ConnectionProperties::default())
        .await
        .map_err(amqp_err("connect", &redact(&c.url)))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(amqp_err("create channel", &redact(&c.url)))?;
    channel
        .basic_qos(c.prefetch, BasicQosOptions::default())
        .await
        .map_err(amqp_err("basic.qos", &c.queue))?;
    if c.declare {
        channel
            .queue_declare(
                c.queue.as_str().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp_err("queue.declare", &c.queue))?;
    }
    let consumer = channel
        .basic_consume(
            c.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp_err("basic.consume", &c.queue))?;
    Ok(Session {
        connection,
        channel,
        consumer,
    })
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

async fn close(session: Session) {
    let _ = session.channel.close(200, "bye".into()).await;
    let _ = session.connection.close(200, "bye".into()).await;
}

async fn run(
    config: AmqpConfig,
    first: Session,
    tx: mpsc::Sender<Result<AmqpDelivery, Error>>,
    permits: Arc<Semaphore>,
    metrics: Arc<AmqpMetrics>,
    cancel: CancellationToken,
    done: watch::Sender<bool>,
) {
    let mut session = Some(first);
    // Endless (no maximum number of attempts): `unwrap_or`'s fallback is never used.
    let mut delays = config.backoff_policy().build();
    let mut last: Option<Session> = None;
    'outer: loop {
        let mut s = match session.take() {
            Some(s) => s,
            None => match connect(&config).await {
                Ok(s) => {
                    tracing::info!(queue = %config.queue, "amqp reconnected");
                    metrics.reconnects.increment(1);
                    delays = config.backoff_policy().build();
                    s
                }
                Err(e) => {
                    let wait = delays.next().unwrap_or(config.backoff_max);
                    tracing::warn!(error = %e, retry_in = ?wait, "amqp reconnect failed");
                    tokio::select! {
                        () = cancel.cancelled() => break 'outer,
                        () = tx.closed() => break 'outer,
                        () = tokio::time::sleep(wait) => {}
                    }
                    continue 'outer;
                }
            },
        };
        loop {
            let permit = tokio::select! {
                biased;
                () = cancel.cancelled() => { last = Some(s); break 'outer; }
                () = tx.closed() => { last = Some(s); break 'outer; }
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => { last = Some(s); break 'outer; }
                },
            };
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => { last = Some(s); break 'outer; }
                () = tx.closed() => { last = Some(s); break 'outer; }
                d = s.consumer.next() => d,
            };
            match next {
                Some(Ok(d)) => {
                    metrics.received.increment(1);
                    let delivery = AmqpDelivery {
                        data: Bytes::from(d.data),
                        routing_key: d.routing_key.into(),
                        exchange: d.exchange.into(),
                        redelivered: d.redelivered,
                        properties: d.properties,
                        delivery_tag: d.delivery_tag,
                        acker: d.acker,
                        metrics: metrics.clone(),
                        _permit: permit,
                    };
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => { last = Some(s); break 'outer; }
                        r = tx.send(Ok(delivery)) => if r.is_err() { last = Some(s); break 'outer; },
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(queue = %config.queue, error = %e, "amqp consumer failed; reconnecting");
                    close(s).await;
                    break;
                }
                None => {
                    tracing::warn!(queue = %config.queue, "amqp consumer cancelled by the broker; reconnecting");
                    close(s).await;
                    break;
                }
            }
        }
        let wait = delays.next().unwrap_or(config.backoff_max);
        tokio::select! {
            () = cancel.cancelled() => break 'outer,
            () = tx.closed() => break 'outer,
            () = tokio::time::sleep(wait) => {}
        }
    }
    drop(tx);
    if let Some(s) = last {
        // No new deliveries; those handed out can still be acked until the drain ends.
        let _ = s
            .channel
            .basic_cancel(s.consumer.tag(), BasicCancelOptions::default())
            .await;
        let all = u32::from(config.prefetch);
        if tokio::time::timeout(config.drain_timeout, permits.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(queue = %config.queue, "amqp shutdown: unacknowledged deliveries remain; RabbitMQ redelivers them");
        }
        close(s).await;
    }
    let _ = done.send(true);
}

/// One AMQP delivery with its acknowledgement handle.
#[derive(Debug)]
pub struct AmqpDelivery {
    /// The message body.
    pub data: Bytes,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The exchange it was published to (empty for the default exchange).
    pub exchange: String,
    /// Whether RabbitMQ delivered it before (to a consumer that did not ack it).
    pub redelivered: bool,
    /// Properties and headers.
    pub properties: BasicProperties,
    delivery_tag: u64,
    acker: Acker,
    metrics: Arc<AmqpMetrics>,
    _permit: OwnedSemaphorePermit,
}

impl AmqpDelivery {
    /// Acknowledges the delivery: RabbitMQ forgets the message.
    ///
    /// # Errors
    /// [`Error::AmqpChannelGone`] when the delivery's channel or connection is gone (the
    /// message will be redelivered); [`Error::Amqp`] when sending the ack failed.
    pub async fn ack(self) -> Result<(), Error> {
        let sent = self
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(amqp_err("basic.ack", &self.routing_key))?;
        self.sent("basic.ack", sent)?;
        self.metrics.acked.increment(1);
        Ok(())
    }

    /// `Ok` when lapin sent the ack or nack; it answers `false` when the channel was
    /// closed or errored (the acker is poisoned) and nothing went out.
    fn sent(&self, op: &'static str, sent: bool) -> Result<(), Error> {
        if sent {
            Ok(())
        } else {
            Err(Error::AmqpChannelGone {
                op,
                delivery_tag: self.delivery_tag,
                routing_key: self.routing_key.clone(),
            })
        }
    }

    /// Negatively acknowledges the delivery; `requeue` puts it back in the queue.
    ///
    /// # Errors
    /// [`Error::AmqpChannelGone`] when the delivery's channel or connection is gone (the
    /// message will be redelivered); [`Error::Amqp`] when sending the nack failed.
    pub async fn nack(self, requeue: bool) -> Result<(), Error> {
        let sent = self
            .acker
            .nack(BasicNackOptions {
                requeue,
                ..BasicNackOptions::default()
            })
            .await
            .map_err(amqp_err("basic.nack", &self.routing_key))?;
        self.sent("basic.nack", sent)?;
        self.metrics.nacked.increment(1);
        Ok(())
    }
}

/// The stream of an AMQP queue's deliveries; see the [module docs](self).
pub struct AmqpStream {
    rx: mpsc::Receiver<Result<AmqpDelivery, Error>>,
    control: AmqpControl,
}

impl std::fmt::Debug for AmqpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpStream").finish_non_exhaustive()
    }
}

impl AmqpStream {
    /// A handle to stop consuming and wait for the connection to close.
    pub fn control(&self) -> AmqpControl {
        self.control.clone()
    }
}

impl Stream for AmqpStream {
    type Item = Result<AmqpDelivery, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Stops an [`AmqpStream`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct AmqpControl {
    cancel: CancellationToken,
    done: watch::Receiver<bool>,
}

impl AmqpControl {
    /// Stops taking deliveries: the stream ends after those already received. The
    /// connection stays open (up to the drain timeout) until every delivery handed out was
    /// acked, nacked or dropped, then closes.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// Waits until the connection is closed (after [`shutdown`](Self::shutdown) or the
    /// stream being dropped).
    pub async fn closed(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }
}

/// Publishes to RabbitMQ with publisher confirms: a publish returns once the broker took
/// responsibility for the message.
pub struct AmqpPublisher {
    connection: Connection,
    channel: Channel,
}

impl std::fmt::Debug for AmqpPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpPublisher").finish_non_exhaustive()
    }
}

impl AmqpPublisher {
    /// Connects and enables confirms.
    ///
    /// # Errors
    /// [`Error::Amqp`] when the connection or `confirm.select` fails.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .map_err(amqp_err("connect", &redact(url)))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(amqp_err("create channel", &redact(url)))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp_err("confirm.select", &redact(url)))?;
        Ok(Self {
            connection,
            channel,
        })
    }

    /// Declares a durable queue named `queue`.
    ///
    /// # Errors
    /// [`Error::Amqp`] when the broker refuses.
    pub async fn declare_queue(&self, queue: &str) -> Result<(), Error> {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .map(|_| ())
            .map_err(amqp_err("queue.declare", queue))
    }

    /// How many messages of `queue` are ready for delivery (not counting those delivered
    /// and not yet acknowledged).
    ///
    /// # Errors
    /// [`Error::Amqp`] when the queue does not exist (the channel is then closed by the
    /// broker).
    pub async fn queue_len(&self, queue: &str) -> Result<u32, Error> {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::durable().passive(),
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .map_err(amqp_err("queue.declare (passive)", queue))
    }

    /// Deletes `queue` (and the messages in it).
    ///
    /// # Errors
    /// [`Error::Amqp`] when the broker refuses.
    pub async fn delete_queue(&self, queue: &str) -> Result<(), Error> {
        self.channel
            .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
            .await
            .map(|_| ())
            .map_err(amqp_err("queue.delete", queue))
    }

    /// Publishes one persistent message and waits for the broker's confirm.
    ///
    /// # Errors
    /// [`Error::Amqp`] when the channel fails, [`Error::AmqpNack`] when the broker nacks.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
    ) -> Result<(), Error> {
        self.publish_all(exchange, routing_key, std::iter::once(body))
            .await
    }

    /// Publishes persistent messages back to back, then waits for every confirm.
    ///
    /// # Errors
    /// As [`publish`](Self::publish), for the first message that failed.
    pub async fn publish_all<'a, I>(
        &self,
        exchange: &str,
        routing_key: &str,
        bodies: I,
    ) -> Result<(), Error>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let mut confirms = Vec::new();
        for body in bodies {
            let confirm = self
                .channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .map_err(amqp_err("basic.publish", routing_key))?;
            confirms.push(confirm);
            // Keep the number of outstanding confirms bounded.
            if confirms.len() >= 1024 {
                check_confirms(std::mem::take(&mut confirms), exchange, routing_key).await?;
            }
        }
        check_confirms(confirms, exchange, routing_key).await
    }

    /// Closes the channel and the connection.
    pub async fn close(self) {
        let _ = self.channel.close(200, "bye".into()).await;
        let _ = self.connection.close(200, "bye".into()).await;
    }
}

async fn check_confirms(
    confirms: Vec<lapin::PublisherConfirm>,
    exchange: &str,
    routing_key: &str,
) -> Result<(), Error> {
    for c in confirms {
        match c
            .await
            .map_err(amqp_err("publisher confirm", routing_key))?
        {
            Confirmation::Nack(_) => {
                return Err(Error::AmqpNack {
                    exchange: exchange.to_string(),
                    routing_key: routing_key.to_string(),
                });
            }
            Confirmation::Ack(_) | Confirmation::NotRequested => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use backon::BackoffBuilder;

    use super::AmqpConfig;

    #[test]
    fn reconnect_waits_start_at_min_double_up_to_max_with_jitter_and_never_end() {
        let ms = Duration::from_millis;
        let config = AmqpConfig::new("amqp://127.0.0.1", "q").backoff(ms(100), ms(400));
        let waits: Vec<Duration> = config.backoff_policy().build().take(1000).collect();
        assert_eq!(waits.len(), 1000, "reconnecting never gives up");
        // Each wait is its base (100, 200, 400, 400...) plus a jitter below the base.
        for (i, base) in [ms(100), ms(200), ms(400), ms(400)].into_iter().enumerate() {
            assert!(
                waits[i] >= base && waits[i] < base * 2,
                "wait {i} is {:?}, base {base:?}",
                waits[i]
            );
        }
        assert!(waits.iter().all(|w| *w < ms(800)), "capped at max + jitter");
        assert!(
            waits.iter().any(|w| *w != waits[3]),
            "jitter varies the waits at the cap"
        );
        // A bad range is made sane: at least 1 ms, max not below min.
        let odd = AmqpConfig::new("amqp://127.0.0.1", "q").backoff(Duration::ZERO, Duration::ZERO);
        let waits: Vec<Duration> = odd.backoff_policy().build().take(3).collect();
        assert!(waits.iter().all(|w| *w >= ms(1) && *w < ms(2)), "{waits:?}");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            super::redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://***@127.0.0.1:5672/%2f"
        );
        assert_eq!(super::redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
