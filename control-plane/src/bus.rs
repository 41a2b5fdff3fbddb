//! Publish/subscribe between the parts of one instance and across instances: in-process or NATS.
//!
//! Subjects are dot-separated tokens with NATS wildcards (`*` one token, `>` the rest); the scheme
//! is listed in `docs/ARCHITECTURE.md`.

use std::{pin::Pin, sync::Arc, task::Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

/// How many messages the in-process bus holds for its slowest subscriber.
const LOCAL_CAPACITY: usize = 4096;

/// A published message.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub subject: Arc<str>,
    pub payload: Bytes,
}

/// What a subscription yields.
#[derive(Clone, Debug)]
pub enum BusEvent {
    Message(Envelope),
    /// The subscriber fell behind and this many messages were lost to it.
    Lagged(u64),
}

/// Bus failures.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("connecting to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
    #[error("publishing to NATS: {0}")]
    Publish(#[from] async_nats::PublishError),
    #[error("subscribing to NATS: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// The message bus of one instance.
#[derive(Clone, Debug)]
pub enum Bus {
    Local(broadcast::Sender<Envelope>),
    Nats(async_nats::Client),
}

/// A stream of [`BusEvent`]s for one subject pattern.
pub type Subscription = Pin<Box<dyn Stream<Item = BusEvent> + Send>>;

impl Bus {
    /// The in-process bus of the embedded mode.
    pub fn local() -> Bus {
        Bus::Local(broadcast::channel(LOCAL_CAPACITY).0)
    }

    /// Connects to NATS at `url`.
    pub async fn nats(url: &str) -> Result<Bus, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("veza")
            .subscription_capacity(LOCAL_CAPACITY)
            .connect(url)
            .await?;
        Ok(Bus::Nats(client))
    }

    /// Publishes `payload` on `subject`; with no subscriber it is dropped.
    pub async fn publish(&self, subject: String, payload: Bytes) -> Result<(), BusError> {
        match self {
            Bus::Local(tx) => {
                let _ = tx.send(Envelope {
                    subject: subject.into(),
                    payload,
                });
                Ok(())
            }
            Bus::Nats(client) => Ok(client.publish(subject, payload).await?),
        }
    }

    /// Subscribes to `pattern`. Messages published after this returns are delivered in order.
    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        match self {
            Bus::Local(tx) => Ok(local_subscription(tx.subscribe(), pattern.to_string())),
            Bus::Nats(client) => {
                let sub = client.subscribe(pattern.to_string()).await?;
                Ok(Box::pin(sub.map(|m| {
                    BusEvent::Message(Envelope {
                        subject: Arc::from(m.subject.as_str()),
                        payload: m.payload,
                    })
                })))
            }
        }
    }

    /// Waits until what was published has left this instance.
    pub async fn flush(&self) {
        if let Bus::Nats(client) = self {
            let _ = client.flush().await;
        }
    }
}

fn local_subscription(rx: broadcast::Receiver<Envelope>, pattern: String) -> Subscription {
    let mut inner = BroadcastStream::new(rx);
    Box::pin(futures::stream::poll_fn(move |cx| {
        loop {
            match inner.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(env))) if subject_matches(&pattern, &env.subject) => {
                    return Poll::Ready(Some(BusEvent::Message(env)));
                }
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(n)))) => {
                    return Poll::Ready(Some(BusEvent::Lagged(n)));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }))
}

/// NATS subject matching: `*` matches one token, a final `>` one or more.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => continue,
            (p, Some(s)) if p == s => continue,
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_nats() {
        assert!(subject_matches(
            "veza.auth.session.*",
            "veza.auth.session.7"
        ));
        assert!(!subject_matches(
            "veza.auth.session.*",
            "veza.auth.session.7.x"
        ));
        assert!(subject_matches("veza.>", "veza.auth.session.7"));
        assert!(!subject_matches("veza.>", "veza"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.c"));
        assert!(!subject_matches("a.b.c", "a.b"));
    }

    #[tokio::test]
    async fn local_bus_delivers_matching_subjects_in_order() {
        let bus = Bus::local();
        let mut sub = bus.subscribe("x.*").await.unwrap();
        for (s, p) in [("x.1", "a"), ("y.1", "skip"), ("x.2", "b")] {
            bus.publish(s.into(), Bytes::from(p)).await.unwrap();
        }
        let mut got = vec![];
        for _ in 0..2 {
            if let Some(BusEvent::Message(e)) = sub.next().await {
                got.push(e.payload);
            }
        }
        assert_eq!(got, vec![Bytes::from("a"), Bytes::from("b")]);
    }
}
