//! A plain HTTP listener's connection once its answer went out: a small future of its own that
//! writes what the writer threads could not, notices the player leave, and drains at the end.
//!
//! It replaces the request's task for the connection's life, so a listener keeps only its
//! socket, its place in the fan-out and its connection slot (docs/BENCHMARKS.md, "jemalloc
//! landed, and a plain HTTP listener reduced to a small task").

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Sleep;

use super::sink::Socket;
use crate::{conn_caps::Slot, domain::live::Attached};

/// How long the last pages may take to drain once the stream ended.
const DRAIN: Duration = Duration::from_secs(3);

/// An attached listener's connection until it ends.
pub struct Keeper {
    socket: Arc<Socket>,
    attached: Option<Attached>,
    /// Set once the stream ended: the deadline of the drain.
    draining: Option<Pin<Box<Sleep>>>,
    slot: Option<Slot>,
}

impl Keeper {
    pub fn new(socket: Arc<Socket>, attached: Attached) -> Keeper {
        Keeper {
            socket,
            attached: Some(attached),
            draining: None,
            slot: None,
        }
    }

    /// Holds `slot` (the connection's place under the caps) for the connection's life.
    pub fn holding(mut self, slot: Slot) -> Keeper {
        self.slot = Some(slot);
        self
    }

    /// Ready when the connection is over: the player left, the socket failed, or the stream
    /// ended and what waited went out (or [`DRAIN`] passed).
    fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let s = &self.socket;
        loop {
            if s.dead() {
                return Poll::Ready(());
            }
            if let Some(deadline) = &mut self.draining {
                if !s.pending() || deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            } else if self
                .attached
                .as_ref()
                .is_some_and(|a| a.poll_ended(cx).is_ready())
            {
                self.draining = Some(Box::pin(tokio::time::sleep(DRAIN)));
                continue;
            }
            if left(s, cx) {
                return Poll::Ready(());
            }
            if s.pending() {
                match s.sock.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        s.flush();
                        continue;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
            match s.poll_work(cx) {
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Whether the player closed or the socket failed; players send nothing more, so anything read
/// is dropped. While neither happens, the read side stays registered with `cx`.
fn left(s: &Socket, cx: &mut Context<'_>) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match s.sock.poll_read_ready(cx) {
            Poll::Pending => return false,
            Poll::Ready(Err(_)) => return true,
            Poll::Ready(Ok(())) => {}
        }
        match s.sock.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return true,
        }
    }
}

impl Future for Keeper {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.poll_done(cx).is_pending() {
            return Poll::Pending;
        }
        // Out of the fan-out first, then the close the player sees.
        this.attached = None;
        let _ = socket2::SockRef::from(&this.socket.sock).shutdown(std::net::Shutdown::Both);
        Poll::Ready(())
    }
}
