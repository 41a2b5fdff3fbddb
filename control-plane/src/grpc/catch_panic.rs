//! The tower layer that turns a panic in a handler (or a layer under it) into `INTERNAL`
//! (grpc-status 13, no details) for that call alone, instead of killing the connection and
//! every call on it. It catches panics when the call starts, while its future runs, and while a
//! streaming response body is polled (then the stream ends with `INTERNAL` trailers).

use std::{
    any::Any,
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::FutureExt;
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use super::trailers::{Polled, status_trailers};

/// Adds [`CatchPanic`] around a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic { inner }
    }
}

/// A service whose panics answer `INTERNAL`.
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for CatchPanic<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let fut = match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(fut) => fut,
            Err(panic) => {
                log(&path, panic.as_ref());
                return Box::pin(std::future::ready(Ok(internal())));
            }
        };
        Box::pin(async move {
            match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(resp) => Ok(resp?.map(|body| {
                    Body::new(CaughtBody {
                        inner: body,
                        path: Some(path),
                    })
                })),
                Err(panic) => {
                    log(&path, panic.as_ref());
                    Ok(internal())
                }
            }
        })
    }
}

/// A trailers-only `INTERNAL` response without details.
fn internal() -> http::Response<Body> {
    Status::internal("internal error").into_http()
}

fn log(path: &str, panic: &(dyn Any + Send)) {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(grpc_path = %path, panic = %what, "handler panicked; answered INTERNAL");
}

/// A response body that ends with `INTERNAL` trailers when polling it panics.
struct CaughtBody {
    inner: Body,
    /// The call's path; `None` once the body has ended after a panic.
    path: Option<String>,
}

impl http_body::Body for CaughtBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = &mut *self;
        let Some(path) = this.path.as_ref() else {
            return Poll::Ready(None);
        };
        let inner = &mut this.inner;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll_frame(cx))) {
            Ok(frame) => frame,
            Err(panic) => {
                log(path, panic.as_ref());
                this.path = None;
                status_trailers(&Status::internal("internal error"))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.path.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt;
    use tonic::{Code, server::NamedService};
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    use super::*;

    fn status_of(headers: &http::HeaderMap) -> Option<&str> {
        headers.get("grpc-status").and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn a_panicking_future_answers_internal_without_details() {
        let inner = tower::service_fn(|_req: http::Request<Body>| async move {
            if true {
                panic!("handler bug");
            }
            Ok::<_, Infallible>(http::Response::new(Body::default()))
        });
        let mut svc = CatchPanicLayer.layer(inner);
        let resp = svc.call(http::Request::new(Body::default())).await;
        let resp = resp.expect("answered");
        assert_eq!(status_of(resp.headers()), Some("13"));
        let message = resp.headers().get("grpc-message");
        assert!(message.is_none_or(|m| !m.to_str().unwrap_or("").contains("bug")));
    }

    /// A body that panics on its first poll.
    struct Bomb;

    impl http_body::Body for Bomb {
        type Data = Bytes;
        type Error = Status;
        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Polled {
            panic!("stream bug")
        }
    }

    #[tokio::test]
    async fn a_panicking_stream_ends_with_internal_trailers() {
        let inner = tower::service_fn(|_req: http::Request<Body>| async move {
            Ok::<_, Infallible>(http::Response::new(Body::new(Bomb)))
        });
        let mut svc = CatchPanicLayer.layer(inner);
        let resp = svc
            .call(http::Request::new(Body::default()))
            .await
            .expect("answered");
        let collected = resp.into_body().collect().await.expect("body ends cleanly");
        let trailers = collected.trailers().expect("trailers");
        assert_eq!(status_of(trailers), Some("13"));
    }

    /// A "Health" service whose handler always panics.
    #[derive(Clone)]
    struct PanickingHealth;

    impl NamedService for PanickingHealth {
        const NAME: &'static str = "grpc.health.v1.Health";
    }

    impl Service<http::Request<Body>> for PanickingHealth {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            Box::pin(async { panic!("handler bug") })
        }
    }

    #[tokio::test]
    async fn a_connection_keeps_serving_after_a_handler_panics() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(CatchPanicLayer)
                .add_service(PanickingHealth)
                .serve_with_incoming(incoming),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
            .expect("connects");
        let mut client = HealthClient::new(channel);
        for call in 0..3 {
            let err = client
                .check(HealthCheckRequest::default())
                .await
                .expect_err("the handler panics");
            assert_eq!(err.code(), Code::Internal, "call {call}: {err:?}");
            assert_eq!(err.message(), "internal error");
        }
    }
}
