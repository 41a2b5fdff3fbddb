//! The shutdown signal shared by every task, and the guard that ends open streams with `UNAVAILABLE`.

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

/// Ends `stream` with `UNAVAILABLE` when the server shuts down.
pub fn guard<T, S>(stream: S, shutdown: Shutdown) -> BoxStream<T>
where
    T: Send + 'static,
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    let state = (Box::pin(stream), shutdown, false);
    Box::pin(futures::stream::unfold(
        state,
        |(mut s, mut sd, done)| async move {
            if done {
                return None;
            }
            tokio::select! {
                biased;
                // What is ready already (a final status update, say) still goes out first.
                item = s.next() => item.map(|i| (i, (s, sd, false))),
                _ = sd.wait() => Some((Err(Status::unavailable("server is shutting down")), (s, sd, true))),
            }
        },
    ))
}
