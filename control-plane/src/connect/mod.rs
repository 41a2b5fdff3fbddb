//! The Connect protocol (SPEC §11) in front of the gRPC router: a Connect request (unary JSON or
//! protobuf, or server-streaming envelopes) becomes a gRPC request for the same layers and
//! handlers, and the gRPC answer becomes a Connect answer. Anything else passes through.

mod envelope;
pub mod error;
mod methods;

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::future::Either;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full, Limited};
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};

use self::{
    envelope::{ConnectStream, MAX_MESSAGE},
    methods::{Method, Methods, json_to_proto, proto_to_json},
};
use crate::grpc::direct::ConnInfo;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC router the layer wraps.
pub trait Router: Service<Request<Body>, Response = Response<Body>, Error = Infallible> {}
impl<S> Router for S where S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> {}

/// A request body the layer can read.
pub trait ReqBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}
impl<B> ReqBody for B where B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}
type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

/// Wraps the gRPC router so that it also answers Connect.
#[derive(Clone)]
pub struct ConnectLayer {
    methods: Arc<Methods>,
}

impl ConnectLayer {
    pub fn new() -> anyhow::Result<ConnectLayer> {
        Ok(ConnectLayer {
            methods: Arc::new(Methods::load()?),
        })
    }
}

impl<S> Layer<S> for ConnectLayer {
    type Service = Connect<S>;

    fn layer(&self, inner: S) -> Connect<S> {
        Connect {
            inner,
            methods: self.methods.clone(),
        }
    }
}

/// See [`ConnectLayer`].
#[derive(Clone)]
pub struct Connect<S> {
    inner: S,
    methods: Arc<Methods>,
}

/// How a Connect request's messages are encoded.
#[derive(Clone, Copy, PartialEq)]
enum Codec {
    Json,
    Proto,
}

/// What a request is, from its method and content type.
enum Kind {
    Unary(Codec),
    Streaming(Codec),
}

impl Kind {
    fn of(req: &Request<impl Sized>) -> Option<Kind> {
        if req.method() != http::Method::POST {
            return None;
        }
        let ct = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
        let ct = ct.split(';').next().unwrap_or("").trim();
        Some(match ct {
            "application/json" => Kind::Unary(Codec::Json),
            "application/proto" => Kind::Unary(Codec::Proto),
            "application/connect+json" => Kind::Streaming(Codec::Json),
            "application/connect+proto" => Kind::Streaming(Codec::Proto),
            _ => return None,
        })
    }
}

impl<S, B> Service<Request<B>> for Connect<S>
where
    S: Router + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: ReqBody,
{
    type Response = Response<Body>;
    type Error = Infallible;
    /// Other requests pass through without a box of their own.
    type Future = Either<S::Future, BoxFuture<Response<Body>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let Some(kind) = Kind::of(&req) else {
            return Either::Left(inner.call(req.map(Body::new)));
        };
        let methods = self.methods.clone();
        Either::Right(Box::pin(async move {
            let (parts, body) = req.into_parts();
            let Some(method) = methods.get(parts.uri.path()) else {
                let msg = format!("unknown method {}", parts.uri.path());
                return Ok(unary_error(
                    &Status::unimplemented(msg),
                    http::StatusCode::NOT_FOUND,
                ));
            };
            Ok(match kind {
                Kind::Unary(codec) => unary(inner, method, codec, parts, body).await,
                Kind::Streaming(codec) => streaming(inner, method, codec, parts, body).await,
            })
        }))
    }
}

/// A unary call: one message each way, errors as JSON with an HTTP status.
async fn unary(
    mut inner: impl Router,
    method: &Method,
    codec: Codec,
    parts: http::request::Parts,
    body: impl ReqBody,
) -> Response<Body> {
    let fail = |s: Status| unary_error(&s, error::http_status(s.code()));
    if method.client_streaming || method.server_streaming {
        return fail(Status::unimplemented(
            "a streaming method: use application/connect+json (server streaming) or gRPC / gRPC-Web (client streaming)",
        ));
    }
    let payload = match read_request(codec, method, &parts.headers, body).await {
        Ok(p) => p,
        Err(s) => return fail(s),
    };
    let Ok(resp) = inner.call(grpc_request(parts, &payload)).await;
    let (rparts, rbody) = resp.into_parts();
    if let Some(s) = Status::from_header_map(&rparts.headers).filter(|s| s.code() != Code::Ok) {
        return with_metadata(fail(s), &rparts.headers, None);
    }
    let collected = match Limited::new(rbody, MAX_MESSAGE + 5).collect().await {
        Ok(c) => c,
        Err(e) => return fail(Status::internal(format!("reading the response: {e}"))),
    };
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = Status::from_header_map(&trailers)
        .unwrap_or_else(|| Status::internal("response without a status"));
    if status.code() != Code::Ok {
        return with_metadata(fail(status), &rparts.headers, Some(&trailers));
    }
    let data = collected.to_bytes();
    let msg = match envelope::single(&data) {
        Ok(m) => m,
        Err(s) => return fail(Status::internal(s.message().to_string())),
    };
    let (content_type, out) = match codec {
        Codec::Json => match proto_to_json(&method.output, &msg) {
            Ok(json) => ("application/json", Bytes::from(json)),
            Err(e) => return fail(Status::internal(e)),
        },
        Codec::Proto => ("application/proto", msg),
    };
    let mut resp = Response::new(Body::new(Full::new(out)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    with_metadata(resp, &rparts.headers, Some(&trailers))
}

/// A server-streaming call: one enveloped message in, envelopes out, then the end-of-stream
/// envelope carrying the status. The HTTP status is 200 once the call is made.
async fn streaming(
    mut inner: impl Router,
    method: &Method,
    codec: Codec,
    parts: http::request::Parts,
    body: impl ReqBody,
) -> Response<Body> {
    let content_type = match codec {
        Codec::Json => "application/connect+json",
        Codec::Proto => "application/connect+proto",
    };
    let reply = |body: Body| {
        let mut resp = Response::new(body);
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        resp
    };
    let fail = |s: Status| {
        let end = envelope::end_stream(Some(&s), &HeaderMap::new());
        reply(Body::new(Full::new(end)))
    };
    if method.client_streaming {
        return fail(Status::unimplemented(
            "client and bidirectional streaming need gRPC or gRPC-Web",
        ));
    }
    let enveloped = match read_body(body).await {
        Ok(b) => b,
        Err(s) => return fail(s),
    };
    let payload = match envelope::single(&enveloped).and_then(|m| decode_request(codec, method, m))
    {
        Ok(p) => p,
        Err(s) => return fail(s),
    };
    let Ok(resp) = inner.call(grpc_request(parts, &payload)).await;
    let (rparts, rbody) = resp.into_parts();
    let body = match Status::from_header_map(&rparts.headers) {
        // Trailers-only: the call ended before any message.
        Some(s) => Body::new(Full::new(envelope::end_stream(Some(&s), &rparts.headers))),
        None => {
            let json = (codec == Codec::Json).then(|| method.output.clone());
            Body::new(ConnectStream::new(rbody, json))
        }
    };
    with_metadata(reply(body), &rparts.headers, None)
}

/// Reads a unary request body (bounded) as protobuf bytes.
async fn read_request(
    codec: Codec,
    method: &Method,
    headers: &HeaderMap,
    body: impl ReqBody,
) -> Result<Bytes, Status> {
    if let Some(enc) = headers.get(header::CONTENT_ENCODING)
        && enc != "identity"
    {
        return Err(Status::unimplemented(
            "compressed requests are not supported",
        ));
    }
    decode_request(codec, method, read_body(body).await?)
}

/// The request message as protobuf: JSON converted, protobuf as it came.
fn decode_request(codec: Codec, method: &Method, msg: Bytes) -> Result<Bytes, Status> {
    match codec {
        Codec::Json => json_to_proto(&method.input, &msg)
            .map(Bytes::from)
            .map_err(|e| Status::invalid_argument(format!("invalid JSON request: {e}"))),
        Codec::Proto => Ok(msg),
    }
}

/// The whole request body, refused beyond the message limit.
async fn read_body(body: impl ReqBody) -> Result<Bytes, Status> {
    match Limited::new(body, MAX_MESSAGE + 5).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Status::resource_exhausted(
            format!("request larger than {MAX_MESSAGE} bytes"),
        )),
        Err(e) => Err(Status::cancelled(format!("reading the request: {e}"))),
    }
}

/// The gRPC request the router serves for a Connect call: same path, headers and extensions,
/// a gRPC content type, the Connect timeout as `grpc-timeout`, the message framed.
fn grpc_request(mut parts: http::request::Parts, msg: &[u8]) -> Request<Body> {
    let h = &mut parts.headers;
    let timeout = h
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::ACCEPT_ENCODING,
    ] {
        h.remove(name);
    }
    strip_protocol_headers(h);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(ms) = timeout
        && let Ok(v) = HeaderValue::from_str(&format!("{}m", ms.min(99_999_999)))
    {
        h.insert("grpc-timeout", v);
    }
    // The router's gRPC path is HTTP/2; the live writers must not write to this socket directly
    // (their frames would skip this translation).
    parts.version = http::Version::HTTP_2;
    if let Some(info) = parts.extensions.get_mut::<ConnInfo>() {
        info.conn = None;
    }
    Request::from_parts(parts, Body::new(Full::new(envelope::frame(0, msg))))
}

/// Removes the Connect and gRPC protocol headers a client sent, keeping its metadata.
fn strip_protocol_headers(h: &mut HeaderMap) {
    let protocol: Vec<HeaderName> = h
        .keys()
        .filter(|k| {
            let k = k.as_str();
            k.starts_with("connect-") || k == "grpc-encoding" || k == "grpc-accept-encoding"
        })
        .cloned()
        .collect();
    for k in protocol {
        h.remove(k);
    }
}

/// A unary Connect error: JSON body, the code's HTTP status.
fn unary_error(status: &Status, http: http::StatusCode) -> Response<Body> {
    let body = error::error_json(status).to_string();
    let mut resp = Response::new(Body::new(Full::new(Bytes::from(body))));
    *resp.status_mut() = http;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Copies the call's custom metadata onto a Connect response: headers as headers, trailers as
/// `trailer-<name>` (unary only).
fn with_metadata(
    mut resp: Response<Body>,
    headers: &HeaderMap,
    trailers: Option<&HeaderMap>,
) -> Response<Body> {
    let out = resp.headers_mut();
    for (name, value) in headers {
        if !is_protocol_header(name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    for (name, value) in trailers.into_iter().flatten() {
        if is_protocol_header(name.as_str()) {
            continue;
        }
        if let Ok(name) = HeaderName::try_from(format!("trailer-{name}")) {
            out.append(name, value.clone());
        }
    }
    resp
}

/// Headers that belong to the gRPC transport rather than to the call.
fn is_protocol_header(name: &str) -> bool {
    name.starts_with("grpc-")
        || matches!(
            name,
            "content-type" | "content-length" | "te" | "trailer" | "transfer-encoding"
        )
}
