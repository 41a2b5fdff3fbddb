//! A live listener's stream after hyper let its connection go: answers the client's frames,
//! ends the stream with its trailers (or a reset), then closes the connection.

use std::{future::poll_fn, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body::Body;
use tonic::Status;

use super::{conn::Conn, frames};
use crate::grpc::metrics_layer::PendingCall;

/// How long the end may take to reach a client and the client to close.
const LINGER: Duration = Duration::from_secs(3);

/// Drives `body`, the response on `stream`, to its end on `conn`; `call` records it.
pub async fn run<B>(mut body: B, conn: Arc<Conn>, stream: u32, call: Option<PendingCall>)
where
    B: Body<Data = Bytes, Error = Status> + Unpin,
{
    conn.take_input();
    let last = loop {
        tokio::select! {
            polled = poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)) => break polled,
            r = conn.readable() => {
                if r.is_err() || !conn.take_input() {
                    break None;
                }
            }
        }
    };
    match last {
        Some(Ok(frame)) => {
            if let Some(t) = frame.trailers_ref() {
                conn.send_trailers(stream, t);
                if let Some(call) = call {
                    call.finish(t);
                }
            }
        }
        Some(Err(status)) => {
            conn.send_reset(stream, frames::INTERNAL_ERROR);
            if let Some(call) = call {
                call.end("Unknown", status.message());
            }
        }
        // Reset by the client, or the connection died: the call counts as canceled.
        None => drop(call),
    }
    drop(body);
    let _ = tokio::time::timeout(LINGER, async {
        while !conn.control_sent() {
            if conn.writable().await.is_err() {
                return;
            }
        }
        conn.shutdown_write();
        while conn.readable().await.is_ok() && conn.take_input() {}
    })
    .await;
    conn.kill();
}
