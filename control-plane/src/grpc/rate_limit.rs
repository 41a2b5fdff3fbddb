//! The tower layer that counts every authenticated call against its credential's request rate
//! (SPEC §13: per user or API key, sustained rate with bursts); beyond it the call is answered
//! `RESOURCE_EXHAUSTED` with `google.rpc.RetryInfo` (trailers only) and never reaches a handler.
//! It sits inside the auth layer and reads the [`Caller`] that layer attached.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::Status;
use tower::{Layer, Service};

use crate::{
    caller::Caller,
    domain::limits::{self, SharedLimiter},
};

/// Adds the per-credential request rate to a gRPC service.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: SharedLimiter,
}

impl RateLimitLayer {
    /// A layer counting calls on `limiter` (`None`: no limit).
    pub fn new(limiter: SharedLimiter) -> RateLimitLayer {
        RateLimitLayer { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// A service whose authenticated calls are counted first.
#[derive(Clone)]
pub struct RateLimited<S> {
    inner: S,
    limiter: SharedLimiter,
}

/// The key a caller is counted by.
fn key(caller: &Caller) -> String {
    match caller {
        Caller::User(u) => format!("u{}", u.user_id),
        Caller::ApiKey(k) => format!("k{}", k.key_id),
    }
}

impl<S, B, R> Service<http::Request<B>> for RateLimited<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let refused = match (&self.limiter, req.extensions().get::<Caller>()) {
            (Some(_), Some(caller)) => limits::check(
                &self.limiter,
                key(caller),
                "request rate of this credential",
            )
            .err(),
            _ => None,
        };
        if let Some(e) = refused {
            let status = Status::from(e);
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(req).await })
    }
}
