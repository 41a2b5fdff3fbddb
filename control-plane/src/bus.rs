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

    /// Connects to NATS at `url` (one URL or a comma-separated list). Credentials in the URL
    /// (`nats://user:pass@host`, `nats://token@host`) are taken out and sent only in the
    /// protocol's CONNECT, so neither the client library's logs nor any error carries them.
    pub async fn nats(url: &str) -> Result<Bus, BusError> {
        let target = NatsTarget::parse(url);
        let mut opts = async_nats::ConnectOptions::new()
            .name("veza")
            .subscription_capacity(LOCAL_CAPACITY);
        opts = match target.credentials {
            Some(NatsCredentials::UserPassword(user, pass)) => opts.user_and_password(user, pass),
            Some(NatsCredentials::Token(token)) => opts.token(token),
            None => opts,
        };
        let client = opts.connect(target.servers.as_str()).await?;
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

/// A NATS URL list split into the server addresses (without credentials) and the credentials.
#[derive(Debug, PartialEq, Eq)]
struct NatsTarget {
    servers: String,
    credentials: Option<NatsCredentials>,
}

#[derive(Debug, PartialEq, Eq)]
enum NatsCredentials {
    UserPassword(String, String),
    Token(String),
}

impl NatsTarget {
    /// Takes the user info out of every URL in the list; the first one found is used.
    fn parse(urls: &str) -> NatsTarget {
        let mut credentials = None;
        let servers: Vec<String> = urls
            .split(',')
            .map(|u| {
                let (clean, info) = split_userinfo(u.trim());
                if credentials.is_none() {
                    credentials = info.map(|i| match i.split_once(':') {
                        Some((user, pass)) => NatsCredentials::UserPassword(
                            percent_decode(user),
                            percent_decode(pass),
                        ),
                        None => NatsCredentials::Token(percent_decode(i)),
                    });
                }
                clean
            })
            .collect();
        NatsTarget {
            servers: servers.join(","),
            credentials,
        }
    }
}

/// `url` without its user info (`scheme://user:pass@host` → `scheme://***@host`), for logs and
/// error messages.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|u| match split_userinfo(u.trim()) {
            (clean, Some(_)) => match clean.split_once("://") {
                Some((scheme, rest)) => format!("{scheme}://***@{rest}"),
                None => format!("***@{clean}"),
            },
            (clean, None) => clean,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Splits `scheme://userinfo@host…` into the URL without user info and the user info.
fn split_userinfo(url: &str) -> (String, Option<&str>) {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_string(), None);
    };
    let host = &rest[at + 1..];
    let clean = match scheme {
        Some(s) => format!("{s}://{host}"),
        None => host.to_string(),
    };
    (clean, Some(&rest[..at]))
}

/// Decodes `%XX` escapes (as URL user info carries them); anything else is kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        });
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url() {
        let t = NatsTarget::parse("nats://veza:s%40cret@127.0.0.1:4222");
        assert_eq!(t.servers, "nats://127.0.0.1:4222");
        assert_eq!(
            t.credentials,
            Some(NatsCredentials::UserPassword(
                "veza".into(),
                "s@cret".into()
            ))
        );
        let t = NatsTarget::parse("tok3n@a:4222, nats://b:4222");
        assert_eq!(t.servers, "a:4222,nats://b:4222");
        assert_eq!(t.credentials, Some(NatsCredentials::Token("tok3n".into())));
        assert_eq!(NatsTarget::parse("nats://a:4222").credentials, None);
    }

    #[test]
    fn redacted_urls_keep_the_host() {
        assert_eq!(
            redact_url("nats://u:p@h:4222,nats://h2"),
            "nats://***@h:4222,nats://h2"
        );
        assert_eq!(redact_url("nats://h:4222/x@y"), "nats://h:4222/x@y");
        assert_eq!(redact_url("u:p@h"), "***@h");
    }
}
