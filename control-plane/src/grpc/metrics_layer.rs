//! The tower layer that records the grpc-ecosystem server metrics of every call:
//! `grpc_server_started_total`, `grpc_server_handled_total{grpc_code}`,
//! `grpc_server_msg_received_total`, `grpc_server_msg_sent_total` and the
//! `grpc_server_handling_seconds` histogram, labelled `grpc_type`, `grpc_service`, `grpc_method`.
//!
//! The status comes from the response headers (trailers-only responses: errors before any
//! message, the auth layer's refusals) or from the trailers at the end of the body; a call whose
//! body is dropped before its trailers counts as `Canceled`. Messages are counted exactly by
//! following the gRPC length-prefixed framing of the request and response bodies. The time is from
//! the request to the end of the response (the last message of a stream).
//!
//! The same place writes the log line of every call that fails ([`error_log`](super::error_log)),
//! once per call. A panic under this layer (answered `INTERNAL` by the `CatchPanicLayer` outside
//! it) counts and logs as `Internal`.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, LazyLock, Mutex},
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use tonic::body::Body;
use tower::{Layer, Service};

use super::error_log::{self, CallerTag, Failure};
use crate::metrics::{CodeLabels, MethodLabels, Metrics};

/// The kind, service and method of a known gRPC path.
#[derive(Clone, Copy, Debug)]
struct MethodInfo {
    labels: &'static MethodLabels,
}

/// Every method this server serves, from the Veza descriptor set plus health and reflection.
static METHODS: LazyLock<HashMap<String, &'static MethodLabels>> = LazyLock::new(|| {
    let mut map = HashMap::new();
    let mut add = |service: String, method: String, client: bool, server: bool| {
        let grpc_type = match (client, server) {
            (false, false) => "unary",
            (true, false) => "client_stream",
            (false, true) => "server_stream",
            (true, true) => "bidi_stream",
        };
        let path = format!("/{service}/{method}");
        let labels: &'static MethodLabels = Box::leak(Box::new(MethodLabels {
            grpc_type,
            grpc_service: leak(service),
            grpc_method: leak(method),
        }));
        map.insert(path, labels);
    };
    match prost_types::FileDescriptorSet::decode(veza_proto::FILE_DESCRIPTOR_SET) {
        Ok(set) => {
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for svc in file.service {
                    let service = format!("{package}.{}", svc.name.unwrap_or_default());
                    for m in svc.method {
                        add(
                            service.clone(),
                            m.name.unwrap_or_default(),
                            m.client_streaming.unwrap_or(false),
                            m.server_streaming.unwrap_or(false),
                        );
                    }
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "decoding the descriptor set for metrics"),
    }
    add("grpc.health.v1.Health".into(), "Check".into(), false, false);
    add("grpc.health.v1.Health".into(), "Watch".into(), false, true);
    for v in ["v1", "v1alpha"] {
        add(
            format!("grpc.reflection.{v}.ServerReflection"),
            "ServerReflectionInfo".into(),
            true,
            true,
        );
    }
    map
});

static UNKNOWN: MethodLabels = MethodLabels {
    grpc_type: "unary",
    grpc_service: "unknown",
    grpc_method: "unknown",
};

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Whether `path` is a known unary method (health `Check` included).
pub(crate) fn is_unary(path: &str) -> bool {
    METHODS.get(path).is_some_and(|l| l.grpc_type == "unary")
}

/// Whether `path` is a known method with a client or server stream.
pub(crate) fn is_streaming(path: &str) -> bool {
    METHODS.get(path).is_some_and(|l| l.grpc_type != "unary")
}

/// The `grpc_server_msg_sent_total` counter of method `path`, for messages written below the
/// layer (the direct live writes).
pub(crate) fn sent_counter(metrics: &Metrics, path: &str) -> Counter {
    metrics
        .grpc
        .msg_sent
        .get_or_create_owned(method_info(path).labels)
}

fn method_info(path: &str) -> MethodInfo {
    MethodInfo {
        labels: METHODS.get(path).copied().unwrap_or(&UNKNOWN),
    }
}

/// The grpc-go name of a status code, as the `grpc_code` label.
pub fn code_name(code: &str) -> &'static str {
    match code.trim() {
        "0" => "OK",
        "1" => "Canceled",
        "2" => "Unknown",
        "3" => "InvalidArgument",
        "4" => "DeadlineExceeded",
        "5" => "NotFound",
        "6" => "AlreadyExists",
        "7" => "PermissionDenied",
        "8" => "ResourceExhausted",
        "9" => "FailedPrecondition",
        "10" => "Aborted",
        "11" => "OutOfRange",
        "12" => "Unimplemented",
        "13" => "Internal",
        "14" => "Unavailable",
        "15" => "DataLoss",
        "16" => "Unauthenticated",
        _ => "Unknown",
    }
}

/// Adds the gRPC server metrics to a service.
#[derive(Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> MetricsLayer {
        MetricsLayer { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Measured<S>;

    fn layer(&self, inner: S) -> Measured<S> {
        Measured {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// A service whose calls are measured.
#[derive(Clone)]
pub struct Measured<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Service<http::Request<Body>> for Measured<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let path = req.uri().path();
        let labels = method_info(path).labels;
        let m = &self.metrics;
        m.grpc.started.get_or_create(labels).inc();
        let mut call = Call::new(m.clone(), labels);
        if std::ptr::eq(labels, &UNKNOWN) {
            call.unknown_path = Some(path.into());
        }
        call.peer = super::conn_info(req.extensions()).and_then(|c| c.tcp.remote_addr);
        let received = m.grpc.msg_received.get_or_create_owned(labels);
        let sent = m.grpc.msg_sent.get_or_create_owned(labels);
        let req = req.map(|body| {
            Body::new(Counted {
                inner: body,
                frames: Framing::default(),
                counter: received,
                call: None,
                handoff: None,
            })
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            call.caller = resp.extensions().get::<CallerTag>().copied();
            if let Some(code) = resp.headers().get("grpc-status") {
                call.finish(code_name(code.to_str().unwrap_or("2")), resp.headers());
                return Ok(resp);
            }
            let handoff = resp.extensions().get::<Handoff>().cloned();
            Ok(resp.map(|body| {
                Body::new(Counted {
                    inner: body,
                    frames: Framing::default(),
                    counter: sent,
                    call: Some(call),
                    handoff,
                })
            }))
        })
    }
}

/// Lets a response body that outlives hyper's stream (a detached live listener) record its
/// call: when hyper drops the response before its status, the call is left here for the body,
/// found in the response's extensions.
#[derive(Clone, Default)]
pub(crate) struct Handoff(Arc<Mutex<Option<Call>>>);

/// A call handed over, recorded by whoever ends it (as `Canceled` when dropped).
pub(crate) struct PendingCall(Call);

impl Handoff {
    /// The call, once the metrics layer let it go.
    pub(crate) fn take(&self) -> Option<PendingCall> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slot.take().map(PendingCall)
    }

    fn put(&self, call: Call) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(call);
    }
}

impl PendingCall {
    /// Records the status of `trailers`.
    pub(crate) fn finish(self, trailers: &http::HeaderMap) {
        self.0.finish(trailer_code(trailers), trailers);
    }

    /// Records an outcome that came with no status.
    pub(crate) fn end(self, code: &'static str, message: &str) {
        self.0.end(code, message);
    }
}

/// The `grpc_code` label of the status in `trailers`.
fn trailer_code(trailers: &http::HeaderMap) -> &'static str {
    trailers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map_or("Unknown", code_name)
}

/// One call in flight; records its outcome once, on `finish` or (as `Canceled`) when dropped.
struct Call {
    metrics: Arc<Metrics>,
    labels: &'static MethodLabels,
    start: Instant,
    done: bool,
    /// For the error log: who called (when the auth layer said), from where, and the path of a
    /// method this server does not serve.
    caller: Option<CallerTag>,
    peer: Option<SocketAddr>,
    unknown_path: Option<Box<str>>,
}

impl Call {
    fn new(metrics: Arc<Metrics>, labels: &'static MethodLabels) -> Call {
        if labels.grpc_type != "unary" {
            metrics.open_streams.inc();
        }
        Call {
            metrics,
            labels,
            start: Instant::now(),
            done: false,
            caller: None,
            peer: None,
            unknown_path: None,
        }
    }

    /// Records `code`, the status of the headers or trailers `status`.
    fn finish(mut self, code: &'static str, status: &http::HeaderMap) {
        if code == "OK" {
            self.record(code, "");
        } else {
            let message = tonic::Status::from_header_map(status)
                .map(|s| s.message().to_owned())
                .unwrap_or_default();
            self.record(code, &message);
        }
    }

    /// Records an outcome that came with no status.
    fn end(mut self, code: &'static str, message: &str) {
        self.record(code, message);
    }

    fn record(&mut self, code: &'static str, message: &str) {
        if self.done {
            return;
        }
        self.done = true;
        if code != "OK" {
            error_log::log(&Failure {
                method: &Path(self),
                code,
                message,
                caller: self.caller,
                peer: self.peer,
            });
        }
        let l = self.labels;
        let g = &self.metrics.grpc;
        g.handled
            .get_or_create(&CodeLabels {
                grpc_type: l.grpc_type,
                grpc_service: l.grpc_service,
                grpc_method: l.grpc_method,
                grpc_code: code,
            })
            .inc();
        g.handling_seconds
            .get_or_create(l)
            .observe(self.start.elapsed().as_secs_f64());
        if l.grpc_type != "unary" {
            self.metrics.open_streams.dec();
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.record("Internal", "internal error");
        } else {
            self.record("Canceled", "ended before its status: the client went away");
        }
    }
}

/// Displays a call's path without building it.
struct Path<'a>(&'a Call);

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.unknown_path {
            Some(p) => f.write_str(p),
            None => write!(
                f,
                "/{}/{}",
                self.0.labels.grpc_service, self.0.labels.grpc_method
            ),
        }
    }
}

/// While a response body is polled: when the poll panics, the call is recorded as `Internal`,
/// the status the `CatchPanicLayer` outside sends.
struct PanicGuard<'a>(&'a mut Option<Call>);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(call) = self.0.take()
        {
            call.end("Internal", "internal error");
        }
    }
}

/// Follows gRPC's length-prefixed messages across data frames: 1 flag byte, 4 bytes of length.
#[derive(Default)]
struct Framing {
    header: [u8; 5],
    have: usize,
    remaining: u64,
}

impl Framing {
    /// Feeds `data`; returns how many messages began in it.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut started = 0;
        while !data.is_empty() {
            if self.remaining > 0 {
                let take = (self.remaining.min(data.len() as u64)) as usize;
                self.remaining -= take as u64;
                data = &data[take..];
                continue;
            }
            let take = (5 - self.have).min(data.len());
            self.header[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            data = &data[take..];
            if self.have == 5 {
                self.have = 0;
                started += 1;
                self.remaining = u64::from(u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]));
            }
        }
        started
    }
}

/// A body that counts the messages passing through it and, for responses, records the status
/// found in the trailers.
struct Counted {
    inner: Body,
    frames: Framing,
    counter: Counter,
    call: Option<Call>,
    handoff: Option<Handoff>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let (Some(h), Some(call)) = (self.handoff.take(), self.call.take())
            && !std::thread::panicking()
        {
            h.put(call);
        }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let guard = PanicGuard(&mut this.call);
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        drop(guard);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = this.frames.feed(data);
                    if n > 0 {
                        this.counter.inc_by(n);
                    }
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = this.call.take()
                {
                    call.finish(trailer_code(trailers), trailers);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(call) = this.call.take() {
                    call.end("Unknown", e.message());
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = this.call.take() {
                    call.end("Unknown", "response ended without a status");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_counts_messages_split_across_frames() {
        let mut f = Framing::default();
        let msg = |len: u32| {
            let mut v = vec![0u8];
            v.extend_from_slice(&len.to_be_bytes());
            v.extend(std::iter::repeat_n(7u8, len as usize));
            v
        };
        let all: Vec<u8> = [msg(3), msg(0), msg(10)].concat();
        assert_eq!(f.feed(&all), 3);
        let mut f = Framing::default();
        let n: u64 = all.chunks(2).map(|c| f.feed(c)).sum();
        assert_eq!(n, 3);
    }

    #[test]
    fn methods_come_from_the_descriptor_set() {
        let l = method_info("/veza.notification.NotificationService/StreamNotifications").labels;
        assert_eq!(
            (l.grpc_type, l.grpc_service, l.grpc_method),
            (
                "server_stream",
                "veza.notification.NotificationService",
                "StreamNotifications"
            )
        );
        assert_eq!(
            method_info("/veza.analytics.AnalyticsService/TrackEvent")
                .labels
                .grpc_type,
            "unary"
        );
        assert_eq!(method_info("/nope/x").labels.grpc_service, "unknown");
        assert_eq!(code_name("7"), "PermissionDenied");
    }

    /// A JSON log written to memory for the current thread.
    #[derive(Clone, Default)]
    struct Log(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Log {
        /// The `call failed` lines: (level, code).
        fn failures(&self) -> Vec<(String, String)> {
            let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
            String::from_utf8_lossy(&bytes)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["fields"]["message"] == "call failed")
                .map(|v| {
                    let s = |x: &serde_json::Value| x.as_str().unwrap_or_default().to_owned();
                    (s(&v["level"]), s(&v["fields"]["code"]))
                })
                .collect()
        }
    }

    const CHECK: &str = "/grpc.health.v1.Health/Check";

    fn handled(m: &Metrics, code: &'static str) -> u64 {
        let l = method_info(CHECK).labels;
        m.grpc
            .handled
            .get_or_create(&CodeLabels {
                grpc_type: l.grpc_type,
                grpc_service: l.grpc_service,
                grpc_method: l.grpc_method,
                grpc_code: code,
            })
            .get()
    }

    /// Calls `inner` under the server's panic and metrics layers, reading the whole response:
    /// the metrics and the failure lines logged.
    async fn run<S>(inner: S) -> (Arc<Metrics>, Vec<(String, String)>)
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + std::fmt::Debug + 'static,
    {
        use http_body_util::BodyExt;
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let metrics = Arc::new(Metrics::new());
        let mut svc = super::super::catch_panic::CatchPanicLayer
            .layer(MetricsLayer::new(metrics.clone()).layer(inner));
        let req = http::Request::builder()
            .uri(CHECK)
            .body(Body::default())
            .expect("request");
        let resp = svc.call(req).await.expect("answered");
        let _ = resp.into_body().collect().await;
        (metrics, log.failures())
    }

    fn answering(
        status: tonic::Status,
    ) -> impl Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Send
    + 'static {
        tower::service_fn(move |_req: http::Request<Body>| {
            let status = status.clone();
            async move { Ok(status.into_http()) }
        })
    }

    #[tokio::test]
    async fn a_failure_is_logged_once_at_its_level() {
        let (m, lines) = run(answering(tonic::Status::not_found("track 1 not found"))).await;
        assert_eq!(lines, [("INFO".to_owned(), "NotFound".to_owned())]);
        assert_eq!(handled(&m, "NotFound"), 1);
        let (m, lines) = run(answering(tonic::Status::internal("internal error"))).await;
        assert_eq!(lines, [("ERROR".to_owned(), "Internal".to_owned())]);
        assert_eq!(handled(&m, "Internal"), 1);
        let (_, lines) = run(answering(tonic::Status::ok(""))).await;
        assert!(lines.is_empty(), "{lines:?}");
    }

    #[tokio::test]
    async fn a_panic_counts_and_logs_as_internal() {
        let panicking = tower::service_fn(|_req: http::Request<Body>| async move {
            if true {
                panic!("handler bug");
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::default()))
        });
        let (m, lines) = run(panicking).await;
        assert_eq!(lines, [("ERROR".to_owned(), "Internal".to_owned())]);
        assert_eq!((handled(&m, "Internal"), handled(&m, "Canceled")), (1, 0));

        /// A body that panics on its first poll.
        struct Bomb;
        impl http_body::Body for Bomb {
            type Data = Bytes;
            type Error = tonic::Status;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
                panic!("stream bug")
            }
        }
        let bomb = tower::service_fn(|_req: http::Request<Body>| async move {
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::new(Bomb)))
        });
        let (m, lines) = run(bomb).await;
        assert_eq!(lines, [("ERROR".to_owned(), "Internal".to_owned())]);
        assert_eq!((handled(&m, "Internal"), handled(&m, "Canceled")), (1, 0));
    }
}
