//! Logging set-up, and the layer that opens one tracing span per gRPC call naming its method.

use std::task::{Context, Poll};

use tower::{Layer, Service};
use tracing::{Instrument, instrument::Instrumented};

/// Installs the global subscriber: text or JSON, filtered by `RUST_LOG` (default `info`).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Wraps each call in a span with its gRPC method.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpanLayer;

impl<S> Layer<S> for SpanLayer {
    type Service = Spanned<S>;

    fn layer(&self, inner: S) -> Spanned<S> {
        Spanned { inner }
    }
}

/// A service whose calls run inside a span.
#[derive(Clone, Debug)]
pub struct Spanned<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Spanned<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let span = tracing::info_span!("grpc", method = %req.uri().path());
        self.inner.call(req).instrument(span)
    }
}
