//! `StreamAudio` on live ids, served just below tonic: each page is encoded as a gRPC frame once
//! and the same `Bytes` goes to every listener's HTTP/2 stream, so fan-out neither encodes nor
//! copies audio per listener. On a plain HTTP/2 connection the frames go straight onto the
//! socket from the live writer threads (`grpc::direct`); elsewhere hyper sends them. Every other
//! call (and `StreamAudio` on tracks) goes to tonic.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use http_body::{Body as HttpBody, Frame};
use http_body_util::{BodyExt, Full, Limited};
use prost::Message;
use tonic::{Status, body::Body, server::NamedService};
use veza_proto::stream as pb;

use crate::{
    caller::Caller,
    domain::{
        Media,
        live::{ListenRequest, Live, LiveFeed},
    },
    grpc::{
        direct::{ConnInfo, DirectBody, H2Sink, goaway},
        live_frame::wire,
        metrics_layer::{Handoff, sent_counter},
        trailers::{Polled, live_end},
    },
    shutdown::Shutdown,
};

const PATH: &str = "/veza.stream.StreamService/StreamAudio";
/// Largest `StreamAudioRequest` body read here; bigger ones go to tonic, which refuses them.
const MAX_REQUEST: usize = 64 << 10;

/// The Stream service with live `StreamAudio` served from shared frames.
#[derive(Clone)]
pub struct LiveAudio<S> {
    inner: S,
    live: Live,
    media: Media,
    shutdown: Shutdown,
}

impl<S> LiveAudio<S> {
    /// Wraps the tonic Stream service.
    pub fn new(inner: S, live: Live, media: Media, shutdown: Shutdown) -> Self {
        LiveAudio {
            inner,
            live,
            media,
            shutdown,
        }
    }
}

impl<S: NamedService> NamedService for LiveAudio<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<Request<Body>> for LiveAudio<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if req.uri().path() != PATH {
            return Box::pin(self.inner.call(req));
        }
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let this = LiveAudio {
            inner,
            live: self.live.clone(),
            media: self.media.clone(),
            shutdown: self.shutdown.clone(),
        };
        Box::pin(this.stream_audio(req))
    }
}

impl<S> LiveAudio<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Send,
    S::Future: Send,
{
    /// Serves a live id here, or hands the request (body restored) to tonic.
    async fn stream_audio(mut self, req: Request<Body>) -> Result<Response<Body>, Infallible> {
        let (parts, body) = req.into_parts();
        let Ok(collected) = Limited::new(body, MAX_REQUEST).collect().await else {
            return Ok(Status::invalid_argument("unreadable StreamAudio request").into_http());
        };
        let bytes = collected.to_bytes();
        let live_req = match (parts.extensions.get::<Caller>(), decode_request(&bytes)) {
            (Some(who), Some(r)) => match self.media.info(who, r.track_id).await {
                Ok(m) if m.kind == "live" => Some((who.clone(), r)),
                _ => None,
            },
            _ => None,
        };
        let Some((who, r)) = live_req else {
            let req = Request::from_parts(parts, Body::new(Full::new(bytes)));
            return self.inner.call(req).await;
        };
        if !matches!(r.format.trim(), "" | "ogg" | "opus") {
            return Ok(Status::invalid_argument(
                "format: live streams are sent as Ogg Opus (\"ogg\")",
            )
            .into_http());
        }
        if r.start_ms != 0 {
            return Ok(
                Status::invalid_argument("start_ms: a live stream starts at its live edge")
                    .into_http(),
            );
        }
        let country = parts
            .headers
            .get("x-country")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let listen = ListenRequest {
            stream_id: r.track_id,
            country,
        };
        let admitted = match self.live.admit(&who, listen).await {
            Ok(a) => a,
            Err(e) => return Ok(Status::from(e).into_http()),
        };
        let id = admitted.record.id;
        let grpc = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/grpc") && !t.contains("grpc-web"));
        let conn = parts
            .extensions
            .get::<ConnInfo>()
            .filter(|_| grpc && parts.version == http::Version::HTTP_2)
            .and_then(|c| c.conn.clone());
        if let Some(conn) = conn
            && let Some(stream) = conn.claim(goaway::may_detach(&parts.headers))
        {
            let sink = H2Sink {
                conn: conn.clone(),
                stream,
                media_id: id,
                max_pages: self.live.queue_pages(),
                sent: sent_counter(self.live.metrics(), PATH),
            };
            return Ok(match self.live.attach(admitted, sink) {
                Ok(a) => {
                    let metrics = self.live.metrics();
                    metrics.served("grpc", "direct");
                    let handoff = Handoff::default();
                    let detached = metrics.live_detached.clone();
                    let body = DirectBody::new(
                        a,
                        conn,
                        stream,
                        self.shutdown.clone(),
                        handoff.clone(),
                        detached,
                    );
                    let mut resp = response(body);
                    resp.extensions_mut().insert(handoff);
                    resp
                }
                Err(e) => {
                    conn.release(stream);
                    Status::from(e).into_http()
                }
            });
        }
        Ok(match admitted.into_feed() {
            Ok(feed) => {
                self.live.metrics().served("grpc", "hyper");
                response(LiveBody::new(id, feed, self.shutdown.clone()))
            }
            Err(e) => Status::from(e).into_http(),
        })
    }
}

/// An uncompressed gRPC message frame, or `None` when it is not one.
fn decode_request(b: &Bytes) -> Option<pb::StreamAudioRequest> {
    if b.len() < 5 || b[0] != 0 {
        return None;
    }
    let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
    if b.len() != 5 + len {
        return None;
    }
    pb::StreamAudioRequest::decode(&b[5..]).ok()
}

fn response<B>(body: B) -> Response<Body>
where
    B: HttpBody<Data = Bytes, Error = Status> + Send + 'static,
{
    let mut r = Response::new(Body::new(body));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    r
}

/// One listener's response body: shared frames, then `grpc-status` trailers. On shutdown the
/// live domain ends every feed, and the trailers then say `UNAVAILABLE`.
struct LiveBody {
    id: i64,
    feed: LiveFeed,
    shutdown: Shutdown,
    done: bool,
}

impl LiveBody {
    fn new(id: i64, feed: LiveFeed, shutdown: Shutdown) -> Self {
        LiveBody {
            id,
            feed,
            shutdown,
            done: false,
        }
    }
}

impl HttpBody for LiveBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        if self.done {
            return Poll::Ready(None);
        }
        match self.feed.as_mut().poll_next(cx) {
            Poll::Ready(Some(page)) => Poll::Ready(Some(Ok(Frame::data(wire(self.id, &page))))),
            Poll::Ready(None) => {
                self.done = true;
                live_end(&self.shutdown)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_frames_are_read_here() {
        let msg = pb::StreamAudioRequest {
            track_id: 9,
            ..Default::default()
        };
        let mut b = vec![0u8];
        b.extend_from_slice(&(msg.encoded_len() as u32).to_be_bytes());
        b.extend_from_slice(&msg.encode_to_vec());
        assert_eq!(
            decode_request(&Bytes::from(b.clone())).map(|r| r.track_id),
            Some(9)
        );
        b[0] = 1; // compressed: left to tonic
        assert!(decode_request(&Bytes::from(b.clone())).is_none());
        assert!(decode_request(&Bytes::from_static(b"\0\0\0")).is_none());
    }
}
