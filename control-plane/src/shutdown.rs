//! The shutdown signal shared by every task, and the guard that ends open streams with `UNAVAILABLE`.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tonic::Status;

/// A stream of gRPC responses as the handlers return them.
pub type BoxStream<T> = std::pin::Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Fires once, when the server starts draining.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// The side that triggers a [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// A new trigger and its signal.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Starts the shutdown.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// A signal tied to this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Resolves when shutdown has started (at once if it already has).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }

    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }
}

/// Ends `stream` with `UNAVAILABLE` when the server shuts down. What the stream has ready goes
/// out first; the shutdown wait is registered once for the stream's life, not once per item.
pub fn guard<T, S>(stream: S, shutdown: Shutdown) -> BoxStream<T>
where
    T: Send + 'static,
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    let mut shutdown = shutdown;
    let stop: StopFuture = Box::pin(async move { shutdown.wait().await });
    Box::pin(Guarded {
        stream: Box::pin(stream),
        stop: Some(stop),
    })
}

type StopFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Guarded<T> {
    stream: BoxStream<T>,
    /// `None` once the stream has ended (either way).
    stop: Option<StopFuture>,
}

impl<T> Stream for Guarded<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(stop) = this.stop.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(item) = this.stream.poll_next_unpin(cx) {
            if item.is_none() {
                this.stop = None;
            }
            return Poll::Ready(item);
        }
        if stop.as_mut().poll(cx).is_ready() {
            this.stop = None;
            return Poll::Ready(Some(Err(Status::unavailable("server is shutting down"))));
        }
        Poll::Pending
    }
}
