//! The `grpc-status` trailers that end the response bodies Veza builds itself.

use std::task::Poll;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use tonic::Status;

use crate::shutdown::Shutdown;

/// What `poll_frame` of a gRPC response body returns.
pub(crate) type Polled = Poll<Option<Result<Frame<Bytes>, Status>>>;

/// The last frame: `status` as trailers, encoded as tonic does.
pub(crate) fn status_trailers(status: &Status) -> Polled {
    let mut trailers = HeaderMap::new();
    Poll::Ready(Some(
        status
            .add_header(&mut trailers)
            .map(|()| Frame::trailers(trailers)),
    ))
}

/// A live response's last frame: [`live_status`] as plain [`trailers`].
pub(crate) fn live_end(shutdown: &Shutdown) -> Polled {
    Poll::Ready(Some(Ok(Frame::trailers(trailers(&live_status(shutdown))))))
}

/// How a live response ends: OK after the last page, `UNAVAILABLE` when the server shuts down.
pub(crate) fn live_status(shutdown: &Shutdown) -> Status {
    if shutdown.is_triggered() {
        Status::unavailable("server is shutting down")
    } else {
        Status::ok("")
    }
}

/// The `grpc-status` (and `grpc-message`) trailers of `status`.
pub(crate) fn trailers(status: &Status) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from(status.code() as i32));
    if let Ok(v) = HeaderValue::from_str(status.message())
        && !status.message().is_empty()
    {
        t.insert("grpc-message", v);
    }
    t
}
