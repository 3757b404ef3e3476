//! [`pipe`]: a bounded bridge from callback code (sync or async, any thread) to a `Stream`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use futures::task::AtomicWaker;
use tokio::sync::mpsc;

use crate::Error;

struct Shared {
    closed: AtomicBool,
    waker: AtomicWaker,
}

/// Creates a pipe holding at most `capacity` items (at least 1) between a [`PipeSender`]
/// and a [`PipeStream`].
///
/// - [`PipeSender::put`] awaits and [`PipeSender::put_blocking`] blocks while the pipe is
///   full: a slow consumer slows the producer, nothing is dropped and memory stays bounded.
/// - [`PipeSender::close`] (or dropping every sender) ends the stream after the items already
///   put.
/// - Dropping the stream makes every later put fail with [`Error::PipeClosed`], so the
///   callback side can stop.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use futures::StreamExt;
/// let (tx, stream) = kafka_seq::pipe::<u32>(2);
/// // A callback API running on its own thread pushes into the pipe.
/// let producer = std::thread::spawn(move || {
///     for i in 0..5 {
///         tx.put_blocking(i).unwrap();
///     }
///     tx.close();
/// });
/// let doubled: Vec<u32> = stream.map(|i| i * 2).collect().await;
/// assert_eq!(doubled, vec![0, 2, 4, 6, 8]);
/// producer.join().unwrap();
/// # });
/// ```
pub fn pipe<T>(capacity: usize) -> (PipeSender<T>, PipeStream<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let shared = Arc::new(Shared {
        closed: AtomicBool::new(false),
        waker: AtomicWaker::new(),
    });
    (
        PipeSender {
            tx,
            shared: shared.clone(),
        },
        PipeStream {
            rx,
            shared,
            closing: false,
        },
    )
}

/// The putting side of a [`pipe`]; cheap to clone, usable from any thread.
pub struct PipeSender<T> {
    tx: mpsc::Sender<T>,
    shared: Arc<Shared>,
}

impl<T> Clone for PipeSender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<T> std::fmt::Debug for PipeSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeSender")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<T> PipeSender<T> {
    /// Puts `item`, waiting while the pipe is full.
    ///
    /// # Errors
    /// [`Error::PipeClosed`] when the pipe was closed or its stream dropped (the item is
    /// dropped).
    pub async fn put(&self, item: T) -> Result<(), Error> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::PipeClosed);
        }
        self.tx.send(item).await.map_err(|_| Error::PipeClosed)
    }

    /// Puts `item`, blocking the calling thread while the pipe is full: for callbacks that
    /// run on threads of their own (a C library's, a `std::thread`).
    ///
    /// # Errors
    /// [`Error::PipeClosed`] when the pipe was closed or its stream dropped;
    /// [`Error::BlockingInAsyncContext`] when called on a tokio runtime thread, where
    /// blocking could stall the stream's own consumer (use [`put`](Self::put) there).
    pub fn put_blocking(&self, item: T) -> Result<(), Error> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::BlockingInAsyncContext);
        }
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::PipeClosed);
        }
        futures::executor::block_on(self.tx.send(item)).map_err(|_| Error::PipeClosed)
    }

    /// Puts `item` only if there is room right now.
    ///
    /// # Errors
    /// [`Error::PipeFull`] when the pipe is full, [`Error::PipeClosed`] when it was closed or
    /// its stream dropped.
    pub fn try_put(&self, item: T) -> Result<(), Error> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::PipeClosed);
        }
        self.tx.try_send(item).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::PipeFull,
            mpsc::error::TrySendError::Closed(_) => Error::PipeClosed,
        })
    }

    /// Closes the pipe for every sender: later puts fail and the stream ends after the items
    /// already put.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.waker.wake();
    }

    /// Whether the pipe was closed or its stream dropped.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire) || self.tx.is_closed()
    }
}

/// The consuming side of a [`pipe`]: a `Stream` of the items put, in order.
pub struct PipeStream<T> {
    rx: mpsc::Receiver<T>,
    shared: Arc<Shared>,
    closing: bool,
}

impl<T> std::fmt::Debug for PipeStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeStream")
            .field("buffered", &self.rx.len())
            .finish()
    }
}

impl<T> Stream for PipeStream<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        if !this.closing {
            this.shared.waker.register(cx.waker());
            if this.shared.closed.load(Ordering::Acquire) {
                // Refuse further sends, then hand out what was already put.
                this.closing = true;
                this.rx.close();
            }
        }
        this.rx.poll_recv(cx)
    }
}

impl<T> Drop for PipeStream<T> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::time::Duration;

    #[tokio::test]
    async fn full_pipe_makes_put_wait_until_an_item_is_taken() {
        let (tx, mut rx) = pipe::<u32>(1);
        tx.put(1).await.unwrap();
        assert!(matches!(tx.try_put(2), Err(Error::PipeFull)));
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.put(2).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(rx.next().await, Some(1));
        waiting.await.unwrap().unwrap();
        assert_eq!(rx.next().await, Some(2));
    }

    #[tokio::test]
    async fn close_ends_the_stream_after_the_items_put() {
        let (tx, rx) = pipe::<u32>(4);
        let other = tx.clone();
        tx.put(1).await.unwrap();
        other.put(2).await.unwrap();
        tx.close();
        assert!(matches!(other.put(3).await, Err(Error::PipeClosed)));
        // `other` is still alive, yet the stream ends.
        let got = tokio::time::timeout(Duration::from_secs(5), rx.collect::<Vec<_>>())
            .await
            .unwrap();
        assert_eq!(got, vec![1, 2]);
    }

    #[tokio::test]
    async fn close_wakes_a_waiting_stream() {
        let (tx, mut rx) = pipe::<u32>(4);
        let next = tokio::spawn(async move { rx.next().await });
        tokio::task::yield_now().await;
        tx.close();
        let got = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, None);
    }

    #[tokio::test]
    async fn dropping_the_stream_fails_puts_including_waiting_ones() {
        let (tx, rx) = pipe::<u32>(1);
        tx.put(1).await.unwrap();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.put(2).await }
        });
        tokio::task::yield_now().await;
        drop(rx);
        assert!(matches!(waiting.await.unwrap(), Err(Error::PipeClosed)));
        assert!(tx.is_closed());
        assert!(matches!(tx.try_put(3), Err(Error::PipeClosed)));
    }

    #[tokio::test]
    async fn blocking_put_from_threads_with_backpressure() {
        let (tx, rx) = pipe::<usize>(3);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..250 {
                        tx.put_blocking(t * 1000 + i).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let mut got = tokio::time::timeout(Duration::from_secs(20), rx.collect::<Vec<_>>())
            .await
            .unwrap();
        for t in threads {
            t.join().unwrap();
        }
        got.sort_unstable();
        let want: Vec<usize> = (0..4)
            .flat_map(|t| (0..250).map(move |i| t * 1000 + i))
            .collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn blocking_put_on_a_runtime_thread_is_refused() {
        let (tx, _rx) = pipe::<u32>(1);
        assert!(matches!(
            tx.put_blocking(1),
            Err(Error::BlockingInAsyncContext)
        ));
    }
}
