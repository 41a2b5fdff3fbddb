//! A direct listener's response: the audio goes through its [`H2Sink`], written by the live
//! writer threads, so the body hyper polls carries nothing until the trailers. When hyper lets
//! the connection go (see [`conn`](super::conn)), the body moves to a task of its own.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::Body as HttpBody;
use prometheus_client::metrics::counter::Counter;
use tokio::time::{Instant, Sleep};
use tonic::Status;

use super::{conn::Conn, detached};
use crate::{
    domain::live::{Attached, Page, Pushed, Sink},
    grpc::{
        live_frame::wire_frame,
        metrics_layer::Handoff,
        trailers::{Polled, live_end},
    },
    shutdown::Shutdown,
};

/// How long the last pages may take to drain into a full socket once the stream ended.
const DRAIN: Duration = Duration::from_secs(3);
/// How often a full socket is tried again meanwhile.
const RETRY: Duration = Duration::from_millis(20);
/// What hyper's h2 connection frees when it lets a live connection go: its write, read and
/// HPACK buffers (16 + 8 + 4 KiB).
const HYPER_BUFFERS: usize = 28 << 10;

/// One listener's HTTP/2 stream, fed with the page frames every listener shares.
pub struct H2Sink {
    pub conn: Arc<Conn>,
    pub stream: u32,
    pub media_id: i64,
    pub max_pages: usize,
    /// `grpc_server_msg_sent_total` of `StreamAudio`: each page handed to the connection is a
    /// message sent, as the metrics layer counts those hyper sends.
    pub sent: Counter,
}

impl Sink for H2Sink {
    fn push(&self, page: &Arc<Page>, keep: bool) -> Pushed {
        let pushed = self.conn.push(
            self.stream,
            wire_frame(self.media_id, page),
            keep,
            self.max_pages,
        );
        if pushed != Pushed::Gone {
            self.sent.inc();
        }
        pushed
    }

    fn prefetch(&self) {
        self.conn.prefetch();
    }
}

/// The response body of a direct listener: pending while the writers send its audio, then the
/// `grpc-status` trailers once everything queued is on the wire.
pub struct DirectBody {
    attached: Option<Attached>,
    conn: Arc<Conn>,
    stream: u32,
    shutdown: Shutdown,
    retry: Option<(Instant, Pin<Box<Sleep>>)>,
    done: bool,
    /// The call's metrics, handed over by the metrics layer when hyper drops the response.
    handoff: Handoff,
    /// Counts connections detached from hyper.
    detached: Counter,
    /// Polled by its own task, hyper gone.
    own: bool,
}

impl DirectBody {
    pub(crate) fn new(
        attached: Attached,
        conn: Arc<Conn>,
        stream: u32,
        shutdown: Shutdown,
        handoff: Handoff,
        detached: Counter,
    ) -> Self {
        DirectBody {
            attached: Some(attached),
            conn,
            stream,
            shutdown,
            retry: None,
            done: false,
            handoff,
            detached,
            own: false,
        }
    }

    /// Whether the last pages are written (`true`), retrying a full socket until the drain
    /// deadline (`false`: they were not).
    fn poll_drained(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        loop {
            if self.conn.drained(self.stream, cx.waker()) {
                return Poll::Ready(true);
            }
            let now = Instant::now();
            let (deadline, sleep) = self
                .retry
                .get_or_insert_with(|| (now + DRAIN, Box::pin(tokio::time::sleep(RETRY))));
            if now >= *deadline {
                return Poll::Ready(false);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            sleep.as_mut().reset(now + RETRY);
        }
    }
}

impl HttpBody for DirectBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        if self.done {
            return Poll::Ready(None);
        }
        if !self.own && self.conn.detached() {
            // Hyper read the end of the connection and will drop this body (see `Drop`).
            return Poll::Pending;
        }
        if let Some(a) = &self.attached
            && a.poll_ended(cx).is_pending()
        {
            return Poll::Pending;
        }
        if self.conn.closed(self.stream) {
            self.done = true;
            return Poll::Ready(None);
        }
        let Poll::Ready(drained) = self.poll_drained(cx) else {
            return Poll::Pending;
        };
        self.conn.release(self.stream);
        self.done = true;
        if !drained {
            // A message may be cut short: hyper resets the stream instead of claiming OK.
            return Poll::Ready(Some(Err(Status::unavailable(
                "listener too slow to take the end of the stream",
            ))));
        }
        live_end(&self.shutdown)
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl Drop for DirectBody {
    fn drop(&mut self) {
        if !self.own
            && !self.done
            && self.conn.detached()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
            && let Some(attached) = self.attached.take()
        {
            self.detached.inc();
            crate::heap_trim::released(HYPER_BUFFERS);
            let body = DirectBody {
                attached: Some(attached),
                conn: self.conn.clone(),
                stream: self.stream,
                shutdown: self.shutdown.clone(),
                retry: None,
                done: false,
                handoff: self.handoff.clone(),
                detached: self.detached.clone(),
                own: true,
            };
            let (conn, call) = (self.conn.clone(), self.handoff.take());
            rt.spawn(detached::run(body, conn, self.stream, call));
            return;
        }
        self.conn.release(self.stream);
    }
}
