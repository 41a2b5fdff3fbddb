//! The transport's limits: the connection caps of [`crate::conn_caps`] on accept,
//! unauthenticated streams per client IP ([`PublicStreamsLayer`]), the default
//! deadline of unary calls ([`UnaryDeadlineLayer`]), and the HTTP port's accept loop with its
//! request-head and idle timeouts ([`serve_http`]).

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::Sleep,
};
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use crate::{
    conn_caps::{ConnLimits, Slot},
    grpc::trailers::Polled,
    shutdown::Shutdown,
};

/// The streams anyone may open without credentials.
const PUBLIC_STREAMS: [&str; 3] = [
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Caps the unauthenticated streams (health `Watch`, reflection) open per client IP; the excess
/// is refused with `RESOURCE_EXHAUSTED`. Also marks each connection as having made a request
/// (which ends the preface deadline of a TLS connection).
#[derive(Clone)]
pub struct PublicStreamsLayer {
    counts: Arc<PublicCounts>,
}

struct PublicCounts {
    max: u32,
    by_ip: Mutex<HashMap<IpAddr, u32>>,
}

impl PublicStreamsLayer {
    pub fn new(max: u32) -> PublicStreamsLayer {
        PublicStreamsLayer {
            counts: Arc::new(PublicCounts {
                max,
                by_ip: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl<S> Layer<S> for PublicStreamsLayer {
    type Service = PublicStreams<S>;

    fn layer(&self, inner: S) -> PublicStreams<S> {
        PublicStreams {
            inner,
            counts: self.counts.clone(),
        }
    }
}

#[derive(Clone)]
pub struct PublicStreams<S> {
    inner: S,
    counts: Arc<PublicCounts>,
}

/// One public stream's place, given back when its response body is dropped.
struct PublicPermit {
    counts: Arc<PublicCounts>,
    ip: IpAddr,
}

impl PublicCounts {
    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<PublicPermit> {
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = by_ip.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PublicPermit {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for PublicPermit {
    fn drop(&mut self) {
        let mut by_ip = self.counts.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// The services the wrappers here go around.
pub trait Wrapped:
    Service<http::Request<Body>, Response = http::Response<Body>, Future: Send + 'static>
    + Send
    + 'static
{
}

impl<S> Wrapped for S where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Future: Send + 'static>
        + Send
        + 'static
{
}

/// `Service` for a wrapper `$ty<S>`: ready when its `inner` is, calls go to its `answer`.
macro_rules! wrapper_service {
    ($ty:ident) => {
        impl<S: Wrapped> Service<http::Request<Body>> for $ty<S> {
            type Response = http::Response<Body>;
            type Error = S::Error;
            type Future = BoxFuture<http::Response<Body>, S::Error>;

            fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
                self.inner.poll_ready(cx)
            }

            fn call(&mut self, req: http::Request<Body>) -> Self::Future {
                self.answer(req)
            }
        }
    };
}

wrapper_service!(PublicStreams);
wrapper_service!(UnaryDeadline);

impl<S: Wrapped> PublicStreams<S> {
    fn answer(&mut self, req: http::Request<Body>) -> BoxFuture<http::Response<Body>, S::Error> {
        let info = crate::grpc::conn_info(req.extensions());
        if let Some(c) = info {
            c.requested
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if !PUBLIC_STREAMS.contains(&req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        let permit = match info.and_then(|c| c.tcp.remote_addr).map(|a| a.ip()) {
            Some(ip) => match self.counts.acquire(ip) {
                Some(p) => Some(p),
                None => {
                    let max = self.counts.max;
                    return Box::pin(async move {
                        Ok(Status::resource_exhausted(format!(
                            "at most {max} unauthenticated streams per client address"
                        ))
                        .into_http())
                    });
                }
            },
            None => None,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|b| {
                Body::new(Permitted {
                    inner: b,
                    _permit: permit,
                })
            }))
        })
    }
}

/// A response body holding a place until it is dropped.
struct Permitted {
    inner: Body,
    _permit: Option<PublicPermit>,
}

impl http_body::Body for Permitted {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Gives unary calls that carry no `grpc-timeout` a deadline; answers `DEADLINE_EXCEEDED` when
/// it passes. Streaming calls are left alone: their handlers may rightly run for hours (tonic's
/// own `Server::timeout` would also cut client-streaming calls such as live publishing).
#[derive(Clone)]
pub struct UnaryDeadlineLayer {
    timeout: Duration,
}

impl UnaryDeadlineLayer {
    pub fn new(timeout: Duration) -> UnaryDeadlineLayer {
        UnaryDeadlineLayer { timeout }
    }
}

impl<S> Layer<S> for UnaryDeadlineLayer {
    type Service = UnaryDeadline<S>;

    fn layer(&self, inner: S) -> UnaryDeadline<S> {
        UnaryDeadline {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Clone)]
pub struct UnaryDeadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S: Wrapped> UnaryDeadline<S> {
    fn answer(&mut self, req: http::Request<Body>) -> BoxFuture<http::Response<Body>, S::Error> {
        let applies = !req.headers().contains_key("grpc-timeout")
            && crate::grpc::metrics_layer::is_unary(req.uri().path());
        let fut = self.inner.call(req);
        if !applies {
            return Box::pin(fut);
        }
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "no answer within the server's default deadline of {timeout:?}"
                ))
                .into_http()),
            }
        })
    }
}

/// Serves the HTTP port: each connection must send its request heads within `header_timeout`
/// (hyper's `header_read_timeout`, which also ends a keep-alive connection waiting that long
/// for its next request) and is closed after `idle` without a byte either way; connections
/// over the caps are closed on accept. Ends once `shutdown` fires and the open requests finish.
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    live: crate::http::icecast::LiveHttp,
    limits: Arc<ConnLimits>,
    opts: HttpOptions,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // HTTP/1.1 for browsers, curl and the media URLs; HTTP/2 (prior knowledge) for gRPC
    // clients pointed at this port.
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout);
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(opts.max_streams)
        .keep_alive_interval(opts.keepalive_interval)
        .keep_alive_timeout(opts.keepalive_timeout);
    let hyper = Arc::new(HyperConn {
        http,
        app,
        idle: opts.idle,
        header_timeout: opts.header_timeout,
    });
    loop {
        let (sock, peer) = tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting on the HTTP port");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = limits.admit(peer.ip(), "http") else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        let (hyper, live, watcher) = (hyper.clone(), live.clone(), graceful.watcher());
        // Small until it knows what the connection is: a live listener then keeps only its
        // own small task (a `Keeper`), and hyper's connection state is made only for the rest.
        tokio::spawn(async move {
            use crate::http::icecast::{Opening, opening, serve};
            match opening(&sock, hyper.header_timeout, live.direct).await {
                Opening::Live => {
                    if let Some(keeper) = Box::pin(serve(sock, live)).await {
                        tokio::spawn(keeper.holding(slot));
                    }
                }
                Opening::Silent => {}
                Opening::Other => {
                    drop(live);
                    Box::pin(hyper.serve(sock, peer, slot, watcher)).await;
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What hyper needs to serve one HTTP connection of the HTTP port.
struct HyperConn {
    http: hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    app: axum::Router,
    idle: Duration,
    header_timeout: Duration,
}

impl HyperConn {
    async fn serve(
        &self,
        sock: TcpStream,
        peer: std::net::SocketAddr,
        slot: Slot,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        // The API layers read the client's address as they do on the gRPC port.
        let info = crate::grpc::direct::ConnInfo {
            tcp: tonic::transport::server::TcpConnectInfo {
                local_addr: sock.local_addr().ok(),
                remote_addr: Some(peer),
            },
            conn: None,
            requested: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        };
        let busy = InFlight::default();
        let watched = Watched::new(sock, self.idle, self.header_timeout, slot, busy.clone());
        let io = hyper_util::rt::TokioIo::new(watched);
        let app = self.app.clone();
        let svc = hyper::service::service_fn(move |mut r: http::Request<hyper::body::Incoming>| {
            r.extensions_mut().insert(info.clone());
            let held = busy.enter();
            let app = app.clone();
            async move {
                let resp = tower::ServiceExt::oneshot(app, r).await?;
                Ok::<_, std::convert::Infallible>(resp.map(|body| held.body(body)))
            }
        });
        let conn = watcher.watch(self.http.serve_connection(io, svc).into_owned());
        if let Err(e) = Box::pin(conn).await {
            tracing::debug!(error = %e, "HTTP connection");
        }
    }
}

/// The HTTP port's transport settings (the same options as the gRPC port's).
pub struct HttpOptions {
    pub header_timeout: Duration,
    pub idle: Duration,
    pub max_streams: u32,
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
}

/// The requests of one HTTP connection whose answers are still open (a stream that is quiet
/// is not an idle connection).
/// Counts from 1 once the first request has come (0 = none yet).
#[derive(Clone, Default)]
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(&self) -> Held {
        // The first request also marks the connection as having sent one.
        let _ = self
            .0
            .compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed);
        self.0.fetch_add(1, Ordering::Relaxed);
        Held(self.0.clone())
    }

    fn open(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 1
    }

    fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// One open request; released when its response body is dropped.
struct Held(Arc<AtomicUsize>);

impl Held {
    fn body(self, inner: axum::body::Body) -> axum::body::Body {
        axum::body::Body::new(HeldBody { inner, _held: self })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct HeldBody {
    inner: axum::body::Body,
    _held: Held,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// An HTTP connection's socket, closed after `idle` with nothing read or written and no
/// request open, or after `header` if no request has come yet (an HTTP/1.1 head or an HTTP/2
/// preface and headers).
struct Watched {
    sock: TcpStream,
    idle: Duration,
    header: Duration,
    started: Instant,
    last: Instant,
    timer: Pin<Box<Sleep>>,
    busy: InFlight,
    _slot: Slot,
}

impl Watched {
    fn new(
        sock: TcpStream,
        idle: Duration,
        header: Duration,
        slot: Slot,
        busy: InFlight,
    ) -> Watched {
        Watched {
            sock,
            idle,
            header,
            started: Instant::now(),
            last: Instant::now(),
            timer: Box::pin(tokio::time::sleep(header.min(idle))),
            busy,
            _slot: slot,
        }
    }

    /// `Err` once the connection has been idle too long; otherwise the timer is armed.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while self.timer.as_mut().poll(cx).is_ready() {
            if self.busy.open() {
                self.last = Instant::now();
            }
            let (since, limit) = if self.busy.requested() {
                (self.last, self.idle)
            } else {
                (self.started, self.header.min(self.idle))
            };
            if since.elapsed() >= limit {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "idle connection"));
            }
            let at = tokio::time::Instant::from_std(since + limit);
            self.timer.as_mut().reset(at);
        }
        Ok(())
    }

    fn progress<T>(&mut self, cx: &mut Context<'_>, p: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match p {
            Poll::Ready(r) => {
                self.last = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.check(cx)?;
                Poll::Pending
            }
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.sock).poll_read(cx, buf);
        this.progress(cx, p)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.sock).poll_write(cx, buf);
        this.progress(cx, p)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.sock).poll_write_vectored(cx, bufs);
        this.progress(cx, p)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().sock).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.sock).poll_shutdown(cx))?;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use crate::grpc::metrics_layer::is_unary;

    #[test]
    fn only_unary_methods_get_the_default_deadline() {
        assert!(is_unary("/veza.auth.AuthService/Register"));
        assert!(is_unary("/grpc.health.v1.Health/Check"));
        assert!(!is_unary("/veza.stream.StreamService/UploadAudioChunks"));
        assert!(!is_unary("/veza.stream.StreamService/StreamAudio"));
        assert!(!is_unary("/grpc.health.v1.Health/Watch"));
    }
}
