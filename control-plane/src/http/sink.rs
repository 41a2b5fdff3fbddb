//! A plain HTTP live listener's socket as a fan-out [`Sink`]: the live writer threads send each
//! shared page straight onto it, and only what the socket cannot take now waits in a short
//! queue of whole pages, which skips ahead instead of growing.

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::task::AtomicWaker;
use tokio::{io::Interest, net::TcpStream};

use crate::domain::live::{Page, Pushed, Sink};

/// One listener's connection, shared by its task and the writer threads.
pub struct Socket {
    pub sock: TcpStream,
    queue: Mutex<Queue>,
    /// The listener's task, woken when pages wait or the socket died.
    waker: AtomicWaker,
    dead: AtomicBool,
    max_pages: usize,
}

/// Pages not yet (fully) written, each with whether it must never be skipped (headers); the
/// first may be partly on the wire.
#[derive(Default)]
struct Queue {
    pages: VecDeque<(Bytes, bool)>,
    /// Whether the first page is partly written (it must then go out whole).
    started: bool,
}

impl Socket {
    /// A listener's socket whose queue holds at most `max_pages` pages.
    pub fn new(sock: TcpStream, max_pages: usize) -> Arc<Socket> {
        Arc::new(Socket {
            sock,
            queue: Mutex::new(Queue::default()),
            waker: AtomicWaker::new(),
            dead: AtomicBool::new(false),
            max_pages: max_pages.max(2),
        })
    }

    /// Whether pages wait for the socket.
    pub fn pending(&self) -> bool {
        !lock(&self.queue).pages.is_empty()
    }

    /// Whether the socket failed (the client went away).
    pub fn dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Ready when pages wait or the socket died; registers the task's waker first.
    pub fn poll_work(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        if self.pending() || self.dead() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Writes what waits as far as the socket takes it (from the listener's task, after the
    /// socket said it is writable).
    pub fn flush(&self) {
        let mut q = lock(&self.queue);
        while let Some((front, _)) = q.pages.front_mut() {
            let sent = self
                .sock
                .try_io(Interest::WRITABLE, || send(&self.sock, front));
            match sent {
                Ok(n) if n == front.len() => {
                    q.pages.pop_front();
                    q.started = false;
                }
                Ok(n) => {
                    *front = front.slice(n..);
                    q.started = true;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.die();
                    return;
                }
            }
        }
    }

    fn die(&self) {
        self.dead.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// The listener's socket as the fan-out holds it.
pub struct TcpSink(pub Arc<Socket>);

impl Sink for TcpSink {
    fn push(&self, page: &Arc<Page>, keep: bool) -> Pushed {
        let s = &self.0;
        if s.dead() {
            return Pushed::Gone;
        }
        let mut q = lock(&s.queue);
        if q.pages.is_empty() {
            // The common case: the whole page goes out now, with no copy and no queue.
            match send(&s.sock, &page.data) {
                Ok(n) if n == page.data.len() => return Pushed::Queued,
                Ok(n) => {
                    q.pages.push_back((page.data.slice(n..), keep));
                    q.started = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    q.pages.push_back((page.data.clone(), keep));
                }
                Err(_) => {
                    drop(q);
                    s.die();
                    return Pushed::Gone;
                }
            }
            drop(q);
            s.waker.wake();
            return Pushed::Queued;
        }
        let mut pushed = Pushed::Queued;
        if q.pages.len() >= s.max_pages && !keep {
            // Too far behind: keep a page already on its way and the headers, then the live edge.
            let mut first = q.started;
            q.pages
                .retain(|(_, kept)| std::mem::take(&mut first) || *kept);
            pushed = Pushed::Skipped;
        }
        q.pages.push_back((page.data.clone(), keep));
        pushed
    }
}

/// One `send` that never raises `SIGPIPE` (the writer threads call it outside tokio).
fn send(sock: &TcpStream, data: &[u8]) -> io::Result<usize> {
    socket2::SockRef::from(sock).send_vectored_with_flags(&[IoSlice::new(data)], libc::MSG_NOSIGNAL)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
