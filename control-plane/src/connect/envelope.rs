//! Length-prefixed messages: gRPC frames in, Connect envelopes out, and the Connect
//! end-of-stream message made from the gRPC trailers.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame};
use prost_reflect::MessageDescriptor;
use serde_json::{Map, Value, json};
use tonic::{Code, Status, body::Body};

use super::{error::error_json, methods::proto_to_json};

/// The largest message carried either way (tonic's default decoding limit).
pub const MAX_MESSAGE: usize = 4 << 20;
/// The flag of a Connect end-of-stream envelope.
const END_STREAM: u8 = 0x02;

/// Prefixes `msg` with a 5-byte header (`flags`, big-endian length).
pub fn frame(flags: u8, msg: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + msg.len());
    out.put_u8(flags);
    out.put_u32(msg.len() as u32);
    out.put_slice(msg);
    out.freeze()
}

/// The one message of an enveloped body, uncompressed.
pub fn single(body: &Bytes) -> Result<Bytes, Status> {
    let (flags, _) = split(body)
        .filter(|(_, m)| 5 + m.len() == body.len())
        .ok_or_else(|| Status::invalid_argument("expected one enveloped message"))?;
    match flags {
        0 => Ok(body.slice(5..)),
        1 => Err(Status::unimplemented(
            "compressed messages are not supported",
        )),
        _ => Err(Status::invalid_argument("unexpected envelope flags")),
    }
}

/// The flags and message of the frame at the start of `buf`, when it is complete.
fn split(buf: &[u8]) -> Option<(u8, &[u8])> {
    let len = u32::from_be_bytes(buf.get(1..5)?.try_into().ok()?) as usize;
    Some((buf[0], buf.get(5..5usize.checked_add(len)?)?))
}

/// The gRPC status and custom metadata in `trailers` as a Connect end-of-stream envelope.
pub fn end_stream(status: Option<&Status>, trailers: &HeaderMap) -> Bytes {
    let mut end = json!({});
    if let Some(s) = status.filter(|s| s.code() != Code::Ok) {
        end["error"] = error_json(s);
    }
    let metadata = metadata_json(trailers);
    if !metadata.is_empty() {
        end["metadata"] = Value::Object(metadata);
    }
    frame(END_STREAM, end.to_string().as_bytes())
}

/// Custom metadata as `{"name": ["value", …]}`, leaving out the protocol's own headers.
fn metadata_json(headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, value) in headers {
        if super::is_protocol_header(name.as_str()) {
            continue;
        }
        let Ok(value) = value.to_str() else { continue };
        let entry = out
            .entry(name.as_str().to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(values) = entry {
            values.push(value.into());
        }
    }
    out
}

/// A gRPC response body re-framed as a Connect streaming body.
pub struct ConnectStream {
    inner: Body,
    buf: BytesMut,
    /// The output type when messages are turned into JSON; `None` passes protobuf through.
    json: Option<MessageDescriptor>,
    done: bool,
}

impl ConnectStream {
    pub fn new(inner: Body, json: Option<MessageDescriptor>) -> ConnectStream {
        ConnectStream {
            inner,
            buf: BytesMut::new(),
            json,
            done: false,
        }
    }

    /// The next whole message in the buffer as an envelope.
    fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        if let Some(len) = self.buf.get(1..5)
            && u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize > MAX_MESSAGE
        {
            return Err(Status::internal("response message too large"));
        }
        let Some((flags, msg)) = split(&self.buf) else {
            return Ok(None);
        };
        if flags != 0 {
            return Err(Status::internal("unexpected compressed response message"));
        }
        let len = msg.len();
        let out = match &self.json {
            Some(desc) => frame(0, &proto_to_json(desc, msg).map_err(Status::internal)?),
            None => {
                // The gRPC frame is already a Connect envelope.
                let whole = self.buf.split_to(5 + len).freeze();
                return Ok(Some(whole));
            }
        };
        self.buf.advance(5 + len);
        Ok(Some(out))
    }

    fn finish(&mut self, status: Option<&Status>, trailers: &HeaderMap) -> Bytes {
        self.done = true;
        end_stream(status, trailers)
    }
}

impl HttpBody for ConnectStream {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.next_message() {
                Ok(Some(msg)) => return Poll::Ready(Some(Ok(Frame::data(msg)))),
                Ok(None) => {}
                Err(e) => {
                    let end = this.finish(Some(&e), &HeaderMap::new());
                    return Poll::Ready(Some(Ok(Frame::data(end))));
                }
            }
            let end = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.buf.extend_from_slice(&data);
                        continue;
                    }
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        let status = Status::from_header_map(&trailers)
                            .unwrap_or_else(|| Status::internal("stream ended without a status"));
                        this.finish(Some(&status), &trailers)
                    }
                },
                Some(Err(e)) => this.finish(Some(&e), &HeaderMap::new()),
                None => {
                    let status = Status::internal("stream ended without a status");
                    this.finish(Some(&status), &HeaderMap::new())
                }
            };
            return Poll::Ready(Some(Ok(Frame::data(end))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
