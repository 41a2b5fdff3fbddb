//! The tower layer that authenticates every call of every Veza service, unary and streaming,
//! and hands the handlers a typed [`Caller`] in the request extensions.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::Status;
use tower::{Layer, Service};

use super::{AuthFailure, Authenticator};

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

impl<S, B, R> Service<http::Request<B>> for Authenticated<S>
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

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            if is_public(req.uri().path()) {
                return inner.call(req).await;
            }
            match auth.authenticate(req.headers()).await {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                    inner.call(req).await
                }
                Err(failure) => Ok(status_of(failure).into_http()),
            }
        })
    }
}

fn status_of(failure: AuthFailure) -> Status {
    match failure {
        AuthFailure::Backend(e) => {
            tracing::error!(error = %e, "authentication backend failed");
            Status::unavailable("authentication backend unavailable")
        }
        other => Status::unauthenticated(other.to_string()),
    }
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
}
