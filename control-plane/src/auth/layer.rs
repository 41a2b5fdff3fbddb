//! The tower layer that authenticates every call of every Veza service, unary and streaming,
//! and hands the handlers a typed [`Caller`] in the request extensions. Streaming calls hold
//! their credentials for as long as they run (see [`lease`](super::lease)). Calls it
//! authenticated that fail at once, and streaming calls, carry a [`CallerTag`] in their response
//! extensions for the error log of the metrics layer outside.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{Status, body::Body};
use tower::{Layer, Service};

use crate::grpc::error_log::CallerTag;

use super::{
    Authenticator, Caller,
    lease::{Guarded, Lease, Role},
};

/// Calls that need no credentials.
const PUBLIC: &[&str] = &[
    "/veza.auth.AuthService/Authenticate",
    "/veza.auth.AuthService/RefreshToken",
    "/veza.auth.AuthService/Register",
];

/// Whether `path` may be called without credentials: the public Veza calls and every
/// non-Veza service (health, reflection).
pub fn is_public(path: &str) -> bool {
    !path.starts_with("/veza.") || PUBLIC.contains(&path)
}

/// Adds authentication to a gRPC service.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    /// A layer checking credentials with `auth`.
    pub fn new(auth: Arc<Authenticator>) -> AuthLayer {
        AuthLayer { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// A service whose calls are authenticated first.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S> Service<http::Request<Body>> for Authenticated<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let path = req.uri().path();
            if is_public(path) {
                return inner.call(req).await;
            }
            let streaming = crate::grpc::metrics_layer::is_streaming(path);
            let caller = match auth.authenticate(req.headers()).await {
                Ok(caller) => caller,
                Err(failure) => return Ok(Status::from(failure).into_http()),
            };
            let tag = CallerTag::from(&caller);
            if !streaming {
                req.extensions_mut().insert(caller);
                let mut resp = inner.call(req).await?;
                // Only failures: a successful unary call allocates nothing for the log.
                if failed_at_once(&resp) {
                    resp.extensions_mut().insert(tag);
                }
                return Ok(resp);
            }
            let mut resp = leased(inner, req, auth, caller).await?;
            resp.extensions_mut().insert(tag);
            Ok(resp)
        })
    }
}

/// Runs a streaming call under a [`Lease`]: when the credentials stop holding, the call ends
/// with `UNAUTHENTICATED` whether its response has started or not.
async fn leased<S>(
    mut inner: S,
    req: http::Request<Body>,
    auth: Arc<Authenticator>,
    caller: Caller,
) -> Result<http::Response<Body>, S::Error>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
{
    let lease = Lease::start(auth, caller.clone());
    let mut req = req.map(|b| Body::new(Guarded::new(b, lease.clone(), Role::Request)));
    req.extensions_mut().insert(caller);
    let mut call = std::pin::pin!(inner.call(req));
    let response = std::future::poll_fn(|cx| {
        if let Some(status) = lease.poll_ended(Role::Call, cx) {
            return Poll::Ready(Ok(status.into_http()));
        }
        call.as_mut().poll(cx)
    })
    .await?;
    Ok(response.map(|b| Body::new(Guarded::new(b, lease, Role::Response))))
}

/// Whether `resp` is a trailers-only answer with a non-OK status.
fn failed_at_once(resp: &http::Response<Body>) -> bool {
    resp.headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() != b"0")
}

#[cfg(test)]
mod tests {
    #[test]
    fn public_paths() {
        assert!(super::is_public("/veza.auth.AuthService/Authenticate"));
        assert!(super::is_public("/grpc.health.v1.Health/Check"));
        assert!(!super::is_public("/veza.auth.AuthService/GetUserInfo"));
        assert!(!super::is_public("/veza.chat.ChatService/ChatStream"));
    }

    /// The streaming calls (read from the descriptor set) are the ones watched.
    #[test]
    fn streaming_calls_come_from_the_descriptor_set() {
        use crate::grpc::metrics_layer::is_streaming;
        for path in [
            "/veza.chat.ChatService/ChatStream",
            "/veza.stream.StreamService/UploadAudioChunks",
            "/veza.stream.StreamService/StreamAudio",
            "/veza.notification.NotificationService/StreamNotifications",
        ] {
            assert!(is_streaming(path), "{path}");
        }
        assert!(!is_streaming("/veza.chat.ChatService/SendMessage"));
        assert!(!is_streaming("/veza.nope/Unknown"));
    }
}
