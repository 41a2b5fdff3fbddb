//! Credentials held for the whole life of a streaming call: a [`Lease`] ends when the caller's
//! access token expires or its session, token or API key is revoked, and the bodies it guards
//! then end the call with `UNAUTHENTICATED` (the request stream fails, the response stream gets
//! `grpc-status: 16` trailers).

use std::{
    pin::Pin,
    sync::{
        Arc, Weak,
        atomic::{AtomicU8, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::task::AtomicWaker;
use http_body::{Body as HttpBody, SizeHint};
use tokio::task::AbortHandle;
use tonic::{Status, body::Body};

use super::{AuthFailure, Authenticator, Caller};
use crate::grpc::trailers::{Polled, status_trailers};

/// Who waits on a lease: the call's future, its request body, its response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Call = 0,
    Request = 1,
    Response = 2,
}

/// How long a stream runs on after its credentials were revoked, so that the events published
/// with the revocation are delivered first.
const REVOKED_GRACE: Duration = Duration::from_millis(500);

const VALID: u8 = 0;
const EXPIRED: u8 = 1;
const REVOKED: u8 = 2;

/// The shared state of one call's credentials, watched by a task that ends it.
pub struct Lease {
    ended: AtomicU8,
    wakers: [AtomicWaker; 3],
    watcher: AbortHandle,
}

impl Lease {
    /// Starts watching `caller`'s credentials.
    pub fn start(auth: Arc<Authenticator>, caller: Caller) -> Arc<Lease> {
        Arc::new_cyclic(|weak: &Weak<Lease>| {
            let task = tokio::spawn(watch(weak.clone(), auth, caller));
            Lease {
                ended: AtomicU8::new(VALID),
                wakers: Default::default(),
                watcher: task.abort_handle(),
            }
        })
    }

    /// The status to end the call with once the credentials no longer hold; otherwise `role`'s
    /// task is woken when they stop holding.
    pub fn poll_ended(&self, role: Role, cx: &mut Context<'_>) -> Option<Status> {
        self.wakers[role as usize].register(cx.waker());
        match self.ended.load(Ordering::Acquire) {
            VALID => None,
            EXPIRED => Some(Status::unauthenticated("access token expired")),
            _ => Some(Status::unauthenticated("credentials revoked")),
        }
    }

    fn end(&self, why: &AuthFailure) {
        let code = match why {
            AuthFailure::Expired => EXPIRED,
            _ => REVOKED,
        };
        self.ended.store(code, Ordering::Release);
        for w in &self.wakers {
            w.wake();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Ends `lease` when `caller`'s token expires or something of it is revoked.
async fn watch(lease: Weak<Lease>, auth: Arc<Authenticator>, caller: Caller) {
    let mut changes = auth.revocations.subscribe();
    let expiry = match &caller {
        Caller::User(u) => {
            let left_ms = u
                .exp
                .saturating_mul(1000)
                .saturating_sub(veza_storage::now_ms());
            Some(tokio::time::Instant::now() + Duration::from_millis(left_ms.max(0) as u64))
        }
        Caller::ApiKey(_) => None,
    };
    loop {
        if let Err(why) = auth.still_valid(&caller) {
            if !matches!(why, AuthFailure::Expired) {
                // What was published with the revocation (a session's own `revoked` event)
                // still reaches the stream before it ends.
                tokio::time::sleep(REVOKED_GRACE).await;
            }
            if let Some(lease) = lease.upgrade() {
                lease.end(&why);
            }
            return;
        }
        tokio::select! {
            _ = sleep_until(expiry) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    // The revocations are gone (shutdown): only expiry is left to watch.
                    sleep_until(expiry).await;
                }
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        // A second past `exp`, so the check that follows sees the token expired.
        Some(at) => tokio::time::sleep_until(at + Duration::from_millis(1000)).await,
        None => std::future::pending().await,
    }
}

/// A request or response body that ends with `UNAUTHENTICATED` when its lease does.
pub struct Guarded {
    inner: Option<Body>,
    lease: Arc<Lease>,
    role: Role,
    finished: bool,
}

impl Guarded {
    /// `body`, ended when `lease` is.
    pub fn new(body: Body, lease: Arc<Lease>, role: Role) -> Guarded {
        Guarded {
            inner: Some(body),
            lease,
            role,
            finished: false,
        }
    }
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        if self.finished {
            return Poll::Ready(None);
        }
        if let Some(status) = self.lease.poll_ended(self.role, cx) {
            // The inner body goes first (a direct live listener gives its stream back to hyper).
            self.inner = None;
            self.finished = true;
            return match self.role {
                Role::Response => status_trailers(&status),
                _ => Poll::Ready(Some(Err(status))),
            };
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finished = true,
            Poll::Ready(Some(Ok(f))) if f.is_trailers() => self.finished = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(b) if !self.finished => {
                // Trailers may still replace the rest, so only the upper bound is kept.
                let mut h = SizeHint::new();
                if let Some(upper) = b.size_hint().upper() {
                    h.set_upper(upper);
                }
                h
            }
            _ => SizeHint::with_exact(0),
        }
    }
}
