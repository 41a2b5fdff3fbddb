//! The gRPC port's connections, wrapped so that live audio can go straight onto the socket
//! between hyper's HTTP/2 frames. Both directions are followed by a frame [`Scanner`], which
//! tells where a frame may be inserted, which stream a live request came on, and how much
//! flow-control window the peer has granted; hyper's own DATA is held to the window they share.
//!
//! Hyper never sees the live DATA, so the peer's WINDOW_UPDATEs for it would grow hyper's idea
//! of the windows without bound, past 2³¹−1 after enough audio (sooner the larger the windows),
//! and hyper would answer FLOW_CONTROL_ERROR. Those increments are taken out of the frames
//! before hyper reads them: hyper's windows then never exceed the true ones plus the live bytes
//! not yet granted back, which a conforming peer keeps within 2³¹−1.
//!
//! Once a live stream has been a connection's only stream for a while, with hyper quiet, the
//! connection is *detached* from hyper: hyper reads the end of the stream and frees its buffers
//! (about 28 KB), the client is sent a GOAWAY (its next calls go on a new connection), and the
//! live stream goes on alone, driven by [`detached`](super::detached).

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    net::Shutdown,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker, ready},
    time::{Duration, Instant},
};

use bytes::Bytes;
use smallvec::SmallVec;
use tokio::{
    io::{AsyncRead, AsyncWrite, Interest, ReadBuf},
    net::TcpStream,
    time::Sleep,
};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::frames::{self, Event, Head, Scanner};
use crate::{conn_caps::Slot, domain::live::Pushed, hint::prefetch};

/// Largest read-ahead kept while hyper waits for window: above what a client may send before
/// the server's receive windows (hyper's default: 1 MiB per connection) stop it. A client that
/// sends more is dropped rather than left to stall the connection.
const MAX_AHEAD: usize = 4 << 20;
/// Most slices in one vectored write.
const MAX_SLICES: usize = 64;
/// The largest flow-control window (RFC 9113 §6.9.1).
const MAX_WINDOW: i64 = (1 << 31) - 1;
/// How long hyper must have been quiet, with a live stream the connection's only stream, before
/// the connection is detached from it.
const DETACH_AFTER: Duration = Duration::from_secs(1);
/// Most bytes of our own frames (answers to the client's PINGs and SETTINGS, refusals) waiting
/// on a detached connection: a client that makes more without reading is dropped.
const MAX_CONTROL: usize = 64 << 10;
/// How long sent data may stay unacknowledged before the kernel drops a detached connection,
/// which no longer has hyper's keepalive pings to find a dead peer.
const DEAD_PEER: Duration = Duration::from_secs(30);

/// What a request on this connection carries in its extensions.
#[derive(Clone)]
pub struct ConnInfo {
    pub tcp: TcpConnectInfo,
    /// The connection, when it can be written to directly (plain TCP, not TLS).
    pub conn: Option<Arc<Conn>>,
    /// Set by the first request (see `net::PublicStreamsLayer`): the only sign of a complete
    /// preface on a connection whose bytes are not followed (TLS).
    pub requested: Arc<AtomicBool>,
}

/// One accepted connection, shared by hyper (through [`ConnIo`]) and the live writers.
pub struct Conn {
    sock: TcpStream,
    st: Mutex<State>,
}

/// The IO hyper serves a connection over.
pub struct ConnIo {
    conn: Arc<Conn>,
    info: TcpConnectInfo,
    follow: bool,
    requested: Arc<AtomicBool>,
    limits: Option<Limits>,
}

/// A followed connection's place under the caps and its deadlines.
struct Limits {
    slot: Slot,
    /// Until the HTTP/2 preface or an HTTP/1 request head is in.
    header: Option<Pin<Box<Sleep>>>,
    /// Bytes of the `\r\n\r\n` ending an HTTP/1 head matched so far.
    head_end: u8,
    /// How long an HTTP/2 connection may stay without a stream open.
    idle: Duration,
    idle_timer: Option<Pin<Box<Sleep>>>,
}

impl ConnIo {
    /// Wraps an accepted socket; `follow` is false where the bytes are not plain HTTP/2 (TLS).
    pub fn new(sock: TcpStream, follow: bool) -> ConnIo {
        let info = TcpConnectInfo {
            local_addr: sock.local_addr().ok(),
            remote_addr: sock.peer_addr().ok(),
        };
        let conn = Arc::new(Conn {
            sock,
            st: Mutex::new(State::new()),
        });
        ConnIo {
            conn,
            info,
            follow,
            requested: Arc::new(AtomicBool::new(false)),
            limits: None,
        }
    }

    /// Lets the connection be detached from hyper (see the module's doc).
    pub fn detaching(self, allowed: bool) -> ConnIo {
        self.conn.lock().may_detach = allowed;
        self
    }

    /// Holds `slot` for the connection's life; the connection is closed when it has not sent
    /// its preface or first request head within `header`, or (plain HTTP/2) has had no stream
    /// open for `idle`. Over TLS, whose bytes are not followed, the handshake has its own
    /// timeout and the first request must come within `idle`.
    pub fn limited(mut self, slot: Slot, header: Duration, idle: Duration) -> ConnIo {
        let first = if self.follow { header } else { idle };
        self.limits = Some(Limits {
            slot,
            header: Some(Box::pin(tokio::time::sleep(first))),
            head_end: 0,
            idle,
            idle_timer: None,
        });
        self
    }

    /// Notes what was read while the head or preface is awaited.
    fn saw(&mut self, bytes: &[u8]) {
        let follow = self.follow;
        let Some(l) = self
            .limits
            .as_mut()
            .filter(|l| follow && l.header.is_some())
        else {
            return;
        };
        for &b in bytes {
            l.head_end = match (l.head_end, b) {
                (0 | 2, b'\r') => l.head_end + 1,
                (1 | 3, b'\n') => l.head_end + 1,
                (4, _) => 4,
                (_, b'\r') => 1,
                _ => 0,
            };
        }
        let started = l.head_end == 4 || self.conn.lock().inbound.preface_done();
        if started {
            l.header = None;
            l.idle_timer = Some(Box::pin(tokio::time::sleep(l.idle)));
        }
    }

    /// `Err` once a deadline has passed; otherwise the timers are armed.
    fn deadlines(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(l) = self.limits.as_mut() else {
            return Ok(());
        };
        if let Some(t) = l.header.as_mut() {
            if !self.follow && self.requested.load(Ordering::Relaxed) {
                l.header = None;
                return Ok(());
            }
            if t.as_mut().poll(cx).is_ready() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface or request head in time",
                ));
            }
            return Ok(());
        }
        let Some(t) = l.idle_timer.as_mut() else {
            return Ok(());
        };
        while t.as_mut().poll(cx).is_ready() {
            let (http1, since) = {
                let st = self.conn.lock();
                (st.inbound.lost(), st.idle_since)
            };
            if http1 {
                // hyper's own header timeout ends idle HTTP/1 connections.
                l.idle_timer = None;
                return Ok(());
            }
            let next = match since {
                Some(t0) if t0.elapsed() >= l.idle => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "idle connection"));
                }
                Some(t0) => t0 + l.idle,
                None => Instant::now() + l.idle,
            };
            t.as_mut().reset(tokio::time::Instant::from_std(next));
        }
        Ok(())
    }
}

impl Connected for ConnIo {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            tcp: self.info.clone(),
            conn: self.follow.then(|| self.conn.clone()),
            requested: self.requested.clone(),
        }
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        let mut st = self.conn.lock();
        if st.detach == Detach::Done {
            // The live stream goes on: the connection keeps its place under the caps.
            st.slot = self.limits.take().map(|l| l.slot);
            return;
        }
        drop(st);
        self.conn.kill();
    }
}

struct State {
    inbound: Scanner,
    outbound: Scanner,
    /// Connection-level window the peer granted, less every DATA byte sent.
    window: i64,
    /// The peer's `SETTINGS_INITIAL_WINDOW_SIZE`.
    initial: i64,
    /// Streams the client opened that are still open; `true` once hyper has answered one.
    open: Vec<(u32, bool)>,
    /// Streams served by the live writers: nearly always one, kept inline.
    live: SmallVec<[LiveStream; 1]>,
    /// A live frame partly on the wire, which goes before anything else.
    partial: Option<u32>,
    /// Whether live frames ever went out (hyper's DATA is then held to the true window).
    shared_window: bool,
    /// Bytes read (and scanned) ahead while hyper waited for window.
    ahead: VecDeque<u8>,
    /// The unfinished frame at the end of the last read (not scanned yet, at most 12 bytes): a
    /// WINDOW_UPDATE goes to hyper only whole, once its increment is rewritten.
    held: SmallVec<[u8; 16]>,
    /// Live DATA bytes on the connection not yet taken out of the peer's WINDOW_UPDATEs.
    debt: i64,
    /// The same per stream, until the server ends the stream.
    debts: SmallVec<[(u32, i64); 1]>,
    /// Hyper's task, waiting for window.
    blocked: Option<Waker>,
    /// A stream was reset before hyper answered it: which request is which can no longer be
    /// told by elimination, so nothing more is claimed here.
    unanswered_reset: bool,
    /// Since when no stream has been open (`None`: some are).
    idle_since: Option<Instant>,
    dead: bool,
    /// Hyper's reading task, woken to detach the connection.
    reader: Option<Waker>,
    /// When hyper last read or wrote bytes.
    hyper_io: Instant,
    detach: Detach,
    /// `--live-detach`.
    may_detach: bool,
    /// Part of the first of our own frames is on the wire: the rest must follow before any
    /// other frame.
    control_mid: bool,
    /// The last bytes read for hyper were only frames it ignores (see `received`).
    quiet_feed: bool,
    /// Our own frames waiting to go out on a detached connection.
    control: Vec<u8>,
    /// The highest stream id the client opened.
    last_stream: u32,
    /// The client changed its header table size since hyper left.
    table_changed: bool,
    /// A detached connection's place under the caps.
    slot: Option<Slot>,
}

/// Where a connection is in being detached from hyper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Detach {
    No,
    /// A writer saw it could be: hyper's next read checks again and ends its connection.
    Asked,
    /// Hyper is gone; the live stream is driven by [`detached`](super::detached).
    Done,
}

struct LiveStream {
    id: u32,
    window: i64,
    /// Hyper has sent the response headers: DATA may follow.
    answered: bool,
    queue: VecDeque<Out>,
    /// Whole pages in `queue`.
    pages: usize,
    closed: bool,
    waker: Option<Waker>,
    /// The client survives a GOAWAY with this stream open.
    detach: bool,
}

/// One DATA frame of a page, as far as it has been written.
struct Out {
    head: [u8; 9],
    body: Bytes,
    off: usize,
    first: bool,
    last: bool,
    keep: bool,
}

impl Out {
    fn len(&self) -> usize {
        9 + self.body.len()
    }

    fn slices<'a>(&'a self, into: &mut Vec<IoSlice<'a>>) {
        if self.off < 9 {
            into.push(IoSlice::new(&self.head[self.off..]));
        }
        let b = self.off.saturating_sub(9);
        if b < self.body.len() {
            into.push(IoSlice::new(&self.body[b..]));
        }
    }
}

impl Conn {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts loading this connection's state into the cache (see `hint::prefetch`).
    pub fn prefetch(&self) {
        let p = std::ptr::from_ref(self).cast::<u8>();
        for line in (0..std::mem::size_of::<Conn>()).step_by(64) {
            prefetch(p.wrapping_add(line));
        }
    }

    /// Takes over the response of the one request on this connection hyper has not answered
    /// yet, returning its stream id; `None` when that is ambiguous or the bytes are not HTTP/2.
    /// `detach`: the client may be left by hyper once this stream is alone (see `goaway`).
    pub fn claim(&self, detach: bool) -> Option<u32> {
        let mut st = self.lock();
        if st.dead || st.unanswered_reset || st.inbound.lost() || st.outbound.lost() {
            return None;
        }
        let mut waiting = st
            .open
            .iter()
            .filter(|(id, answered)| !answered && !st.live.iter().any(|l| l.id == *id))
            .map(|(id, _)| *id);
        let id = waiting.next()?;
        if waiting.next().is_some() {
            return None;
        }
        let window = st.initial;
        st.live.push(LiveStream {
            id,
            window,
            answered: false,
            queue: VecDeque::new(),
            pages: 0,
            closed: false,
            waker: None,
            detach,
        });
        Some(id)
    }

    /// Queues one gRPC message (a page) on `stream` and writes what the socket takes. `framed`
    /// is the message after a DATA frame header for stream 1 (see `live_frame::wire_frame`).
    /// With `max_pages` pages already waiting, the unsent ones are dropped first (`keep` pages
    /// stay).
    pub fn push(&self, stream: u32, framed: &Bytes, keep: bool, max_pages: usize) -> Pushed {
        let mut st = self.lock();
        if st.dead {
            return Pushed::Gone;
        }
        let Some(i) = st.live.iter().position(|s| s.id == stream && !s.closed) else {
            return Pushed::Gone;
        };
        st.maybe_detach();
        if let Some(done) = st.send_now(i, framed, keep, &self.sock) {
            return done;
        }
        let msg = framed.slice(frames::HEAD.min(framed.len())..);
        let s = &mut st.live[i];
        let skipped = s.pages >= max_pages.max(1);
        if skipped {
            s.drop_unsent(false);
        }
        s.enqueue(&msg, keep);
        st.flush(&self.sock);
        if skipped {
            Pushed::Skipped
        } else {
            Pushed::Queued
        }
    }

    /// Whether everything queued on `stream` is written (or the stream is gone); otherwise
    /// `waker` is woken when it is.
    pub fn drained(&self, stream: u32, waker: &Waker) -> bool {
        let mut st = self.lock();
        st.flush(&self.sock);
        match st.live.iter_mut().find(|s| s.id == stream) {
            Some(s) if !s.closed && !s.queue.is_empty() => {
                s.waker = Some(waker.clone());
                false
            }
            _ => true,
        }
    }

    /// Whether `stream` was closed (reset by either side, or the connection died).
    pub fn closed(&self, stream: u32) -> bool {
        let st = self.lock();
        st.dead || st.live.iter().all(|s| s.id != stream || s.closed)
    }

    /// Whether hyper has let this connection go.
    pub fn detached(&self) -> bool {
        self.lock().detach == Detach::Done
    }

    /// Ready when the client sent something (or the socket failed). For the detached task
    /// alone: it takes the socket's one read slot, which lets hyper's last waker go (that waker
    /// kept hyper's finished task allocated until the client next sent something).
    pub async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.sock.poll_read_ready(cx)).await
    }

    /// Ready when the socket may take more (the write slot, as [`Conn::readable`]).
    pub async fn writable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.sock.poll_write_ready(cx)).await
    }

    /// On a detached connection: reads what the client sent, answering it; `false` once the
    /// connection is gone.
    pub fn take_input(&self) -> bool {
        let mut st = self.lock();
        loop {
            match st.read_detached(&self.sock) {
                Ok(Some(0)) | Err(_) => st.die(),
                Ok(Some(_)) => continue,
                Ok(None) => {}
            }
            break;
        }
        st.flush(&self.sock);
        !st.dead
    }

    /// Ends `stream` with `trailers`, written as HPACK literals that touch no dynamic table.
    pub fn send_trailers(&self, stream: u32, trailers: &http::HeaderMap) {
        let mut st = self.lock();
        let mut block = hpack_block(trailers, st.table_changed, true);
        if block.len() > frames::MAX_DATA {
            block = hpack_block(trailers, st.table_changed, false);
        }
        let flags = frames::END_STREAM | frames::END_HEADERS;
        st.control_frame(frames::HEADERS, flags, stream, &block);
        st.close(stream);
        st.flush(&self.sock);
    }

    /// Resets `stream` with `code`.
    pub fn send_reset(&self, stream: u32, code: u32) {
        let mut st = self.lock();
        st.control_frame(frames::RST_STREAM, 0, stream, &code.to_be_bytes());
        st.close(stream);
        st.flush(&self.sock);
    }

    /// Whether our own frames are all written (or the connection is gone).
    pub fn control_sent(&self) -> bool {
        let mut st = self.lock();
        st.flush(&self.sock);
        st.dead || st.control.is_empty()
    }

    /// Sends the end of the connection (FIN) after what was written.
    pub fn shutdown_write(&self) {
        let _ = socket2::SockRef::from(&self.sock).shutdown(Shutdown::Write);
    }

    /// Closes the connection for good.
    pub fn kill(&self) {
        self.lock().die();
        let _ = socket2::SockRef::from(&self.sock).shutdown(Shutdown::Both);
    }

    /// Gives `stream` back to hyper: unsent pages are dropped, a frame half written is finished.
    pub fn release(&self, stream: u32) {
        let mut st = self.lock();
        if let Some(s) = st.live.iter_mut().find(|s| s.id == stream) {
            s.closed = true;
            s.drop_unsent(true);
        }
        st.prune();
    }
}

impl LiveStream {
    fn enqueue(&mut self, msg: &Bytes, keep: bool) {
        let n = msg.len().div_ceil(frames::MAX_DATA).max(1);
        for i in 0..n {
            let body = msg.slice(i * frames::MAX_DATA..((i + 1) * frames::MAX_DATA).min(msg.len()));
            self.queue.push_back(Out {
                head: Head::data(body.len(), self.id),
                body,
                off: 0,
                first: i == 0,
                last: i + 1 == n,
                keep,
            });
        }
        self.pages += 1;
    }

    /// Drops the pages not yet begun (all of them, or all but `keep` ones); a page begun stays
    /// whole unless `closing`, when only a frame half written stays.
    fn drop_unsent(&mut self, closing: bool) {
        let begun = self.queue.front().is_some_and(|f| f.off > 0 || !f.first);
        let mut in_begun = begun;
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for (i, f) in self.queue.drain(..).enumerate() {
            let stay = if closing {
                i == 0 && f.off > 0
            } else {
                in_begun || f.keep
            };
            if f.last {
                in_begun = false;
            }
            if stay {
                kept.push_back(f);
            }
        }
        self.queue = kept;
        self.pages = self.queue.iter().filter(|f| f.last).count();
    }
}

impl State {
    fn new() -> State {
        State {
            inbound: Scanner::from_client(),
            outbound: Scanner::from_server(),
            window: 65_535,
            initial: 65_535,
            open: Vec::new(),
            live: SmallVec::new(),
            partial: None,
            shared_window: false,
            ahead: VecDeque::new(),
            held: SmallVec::new(),
            debt: 0,
            debts: SmallVec::new(),
            blocked: None,
            unanswered_reset: false,
            idle_since: Some(Instant::now()),
            dead: false,
            reader: None,
            hyper_io: Instant::now(),
            detach: Detach::No,
            may_detach: false,
            control_mid: false,
            quiet_feed: false,
            control: Vec::new(),
            last_stream: 0,
            table_changed: false,
            slot: None,
        }
    }

    /// Whether hyper may go now: the only open stream is the live one, answered, and nothing
    /// of hyper's is in flight either way.
    fn detachable(&self) -> bool {
        let [s] = self.live.as_slice() else {
            return false;
        };
        !self.dead
            && s.detach
            && s.answered
            && !s.closed
            && matches!(self.open.as_slice(), [(id, true)] if *id == s.id)
            && self.inbound.at_boundary()
            && self.outbound.at_boundary()
            && self.ahead.is_empty()
            && self.held.is_empty()
            && self.blocked.is_none()
            && !self.unanswered_reset
            && self.hyper_io.elapsed() >= DETACH_AFTER
    }

    /// Asks hyper's task to let the connection go when it can.
    fn maybe_detach(&mut self) {
        if self.may_detach && self.detach == Detach::No && self.detachable() {
            self.detach = Detach::Asked;
            if let Some(w) = self.reader.take() {
                w.wake();
            }
        }
    }

    /// Hyper is gone: the client is told to open no more streams here.
    fn detach_now(&mut self, sock: &TcpStream) {
        self.detach = Detach::Done;
        self.reader = None;
        let _ = socket2::SockRef::from(sock).set_tcp_user_timeout(Some(DEAD_PEER));
        let mut away = [0u8; 8];
        away[..4].copy_from_slice(&self.last_stream.to_be_bytes());
        away[4..].copy_from_slice(&frames::NO_ERROR.to_be_bytes());
        frames::frame(&mut self.control, frames::GOAWAY, 0, 0, &away);
    }

    /// Queues one of our own frames on a detached connection.
    fn control_frame(&mut self, ty: u8, flags: u8, stream: u32, payload: &[u8]) {
        frames::frame(&mut self.control, ty, flags, stream, payload);
        if self.control.len() > MAX_CONTROL {
            self.die();
        }
    }

    /// Writes our own frames; `true` once none are left.
    fn send_control(&mut self, sock: &TcpStream) -> bool {
        let bufs = [IoSlice::new(&self.control)];
        match sock.try_io(Interest::WRITABLE, || send(sock, &bufs)) {
            Ok(n) => {
                self.control.drain(..n);
                if self.control.is_empty() {
                    self.control = Vec::new();
                }
                self.control_mid = !self.control.is_empty() && (n > 0 || self.control_mid);
                self.control.is_empty()
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(_) => {
                self.die();
                false
            }
        }
    }

    fn die(&mut self) {
        self.dead = true;
        for s in &mut self.live {
            s.closed = true;
            s.queue.clear();
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
        if let Some(w) = self.blocked.take() {
            w.wake();
        }
    }

    /// Writes queued live frames (and our own, once detached) while the socket, the windows
    /// and hyper's framing allow.
    fn flush(&mut self, sock: &TcpStream) {
        while !self.dead {
            let between = self.control_mid || self.outbound.at_boundary();
            if self.partial.is_none() && !self.control.is_empty() && between {
                if !self.send_control(sock) {
                    return;
                }
                continue;
            }
            let boundary = self.partial.is_some() || self.outbound.at_boundary();
            if self.live.is_empty() || !boundary || !self.write_live(sock) {
                return;
            }
        }
    }

    /// One vectored write of queued live frames; `true` when all it tried went out.
    fn write_live(&mut self, sock: &TcpStream) -> bool {
        {
            self.fit();
            let order = self.order();
            let mut slices = Vec::with_capacity(16);
            let mut plan = Vec::with_capacity(order.len());
            let mut conn_window = self.window;
            for &i in &order {
                let s = &self.live[i];
                if !s.answered || slices.len() >= MAX_SLICES {
                    continue;
                }
                let mut window = s.window;
                let mut n = 0;
                for f in &s.queue {
                    let len = f.body.len() as i64;
                    if f.off == 0 && (len > conn_window || len > window) {
                        break;
                    }
                    if f.off == 0 {
                        conn_window -= len;
                        window -= len;
                    }
                    f.slices(&mut slices);
                    n += 1;
                    if slices.len() >= MAX_SLICES {
                        break;
                    }
                }
                plan.push((i, n));
            }
            let total: usize = slices.iter().map(|s| s.len()).sum();
            if total == 0 {
                return false;
            }
            // Through tokio, so that a full socket clears its readiness: whoever waits for the
            // socket (hyper, behind a half-written frame) then sleeps until it drains.
            let result = sock.try_io(Interest::WRITABLE, || send(sock, &slices));
            drop(slices);
            let written = match result {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => {
                    self.die();
                    return false;
                }
            };
            self.shared_window = true;
            self.consume(&plan, written);
            written == total
        }
    }

    /// Writes a one-frame page at once when nothing is waiting (the common case: no queue, no
    /// copy, one `sendmsg`); `None` when it has to go through the queue.
    fn send_now(
        &mut self,
        i: usize,
        framed: &Bytes,
        keep: bool,
        sock: &TcpStream,
    ) -> Option<Pushed> {
        let len = framed.len().checked_sub(frames::HEAD)?;
        let s = &self.live[i];
        let fits = len <= frames::MAX_DATA && len as i64 <= self.window.min(s.window);
        if !fits || !s.answered || !s.queue.is_empty() || self.partial.is_some() {
            return None;
        }
        if !self.control.is_empty() {
            return None;
        }
        if !self.outbound.at_boundary() {
            return None;
        }
        let head = Head::data(len, s.id);
        let sent = if s.id == 1 {
            socket2::SockRef::from(sock).send_with_flags(framed, libc::MSG_NOSIGNAL)
        } else {
            send(
                sock,
                &[IoSlice::new(&head), IoSlice::new(&framed[frames::HEAD..])],
            )
        };
        let written = match sent {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(_) => {
                self.die();
                return Some(Pushed::Gone);
            }
        };
        self.shared_window = true;
        let id = s.id;
        self.owe(id, len as i64);
        let s = &mut self.live[i];
        if written < frames::HEAD + len {
            s.queue.push_back(Out {
                head,
                body: framed.slice(frames::HEAD..),
                off: written,
                first: true,
                last: true,
                keep,
            });
            s.pages += 1;
            self.partial = Some(s.id);
        }
        Some(Pushed::Queued)
    }

    /// Splits the frames that would not fit the peer's windows, so that a small window never
    /// holds a stream back (frames already begun had their window taken).
    fn fit(&mut self) {
        let mut conn_window = self.window;
        for s in &mut self.live {
            if !s.answered {
                continue;
            }
            let mut window = s.window;
            let mut i = 0;
            while i < s.queue.len() {
                let avail = conn_window.min(window);
                let f = &mut s.queue[i];
                i += 1;
                if f.off > 0 {
                    continue;
                }
                if avail <= 0 {
                    break;
                }
                let len = f.body.len() as i64;
                if len > avail {
                    let rest = Out {
                        head: [0; 9],
                        body: f.body.split_off(avail as usize),
                        off: 0,
                        first: false,
                        last: f.last,
                        keep: f.keep,
                    };
                    f.last = false;
                    f.head = Head::data(f.body.len(), s.id);
                    let mut rest = rest;
                    rest.head = Head::data(rest.body.len(), s.id);
                    s.queue.insert(i, rest);
                }
                let took = len.min(avail);
                conn_window -= took;
                window -= took;
            }
        }
    }

    /// Live streams in writing order: the one with a frame half written first.
    fn order(&self) -> Vec<usize> {
        let first = self
            .partial
            .and_then(|id| self.live.iter().position(|s| s.id == id));
        first
            .into_iter()
            .chain((0..self.live.len()).filter(|i| Some(*i) != first))
            .collect()
    }

    /// Accounts for `written` bytes of the frames `plan` put on the wire.
    fn consume(&mut self, plan: &[(usize, usize)], mut written: usize) {
        self.partial = None;
        for &(i, n) in plan {
            let s = &mut self.live[i];
            for _ in 0..n {
                let Some(f) = s.queue.front_mut() else { break };
                if written == 0 {
                    break;
                }
                if f.off == 0 {
                    let len = f.body.len() as i64;
                    s.window -= len;
                    self.window -= len;
                    self.debt += len;
                    owe_stream(&mut self.debts, s.id, len);
                }
                let take = written.min(f.len() - f.off);
                f.off += take;
                written -= take;
                if f.off < f.len() {
                    self.partial = Some(s.id);
                    return;
                }
                if f.last {
                    s.pages -= 1;
                }
                s.queue.pop_front();
            }
            if s.queue.is_empty()
                && let Some(w) = s.waker.take()
            {
                w.wake();
            }
        }
        self.prune();
    }

    /// Forgets closed streams with nothing half written.
    fn prune(&mut self) {
        let partial = self.partial;
        self.live
            .retain(|s| !(s.closed && (s.queue.is_empty() || Some(s.id) != partial)));
    }

    /// Accounts for `len` live DATA bytes sent on `stream`.
    fn owe(&mut self, stream: u32, len: i64) {
        self.window -= len;
        self.debt += len;
        if let Some(s) = self.live.iter_mut().find(|s| s.id == stream) {
            s.window -= len;
        }
        owe_stream(&mut self.debts, stream, len);
    }

    fn close(&mut self, stream: u32) {
        self.open.retain(|(id, _)| *id != stream);
        self.debts.retain(|(id, _)| *id != stream);
        if self.open.is_empty() && self.idle_since.is_none() {
            self.idle_since = Some(Instant::now());
        }
        if self.open.capacity() > 16 && self.open.len() < 4 {
            self.open.shrink_to(8);
        }
        if let Some(s) = self.live.iter_mut().find(|s| s.id == stream) {
            s.closed = true;
            s.drop_unsent(true);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
        self.prune();
    }

    /// A stream reset by either side.
    fn reset(&mut self, stream: u32) {
        let unanswered = self
            .open
            .iter()
            .any(|(id, answered)| *id == stream && !answered);
        let claimed = self.live.iter().any(|s| s.id == stream);
        if unanswered && !claimed {
            self.unanswered_reset = true;
        }
        self.close(stream);
    }

    /// Follows bytes the client sent, taking the live bytes out of its WINDOW_UPDATEs; returns
    /// how many of them may go to hyper now (the rest belong to an unfinished frame: `held`).
    fn received(&mut self, bytes: &mut [u8], sock: &TcpStream) -> usize {
        if self.inbound.lost() {
            return bytes.len();
        }
        let before = self.inbound.clone();
        let started_between = before.at_boundary();
        let mut events = Vec::new();
        self.inbound.feed(bytes, &mut |e| events.push(e));
        let mut keep = bytes.len();
        let tail = self.inbound.unfinished_update();
        if tail > 0 {
            keep = keep.saturating_sub(tail);
            self.inbound = before;
            events.clear();
            self.inbound.feed(&bytes[..keep], &mut |e| events.push(e));
        }
        let bytes = &mut bytes[..keep];
        let mut update_at = None;
        let mut ping_at = None;
        let mut more_window = false;
        // Frames begun here, and those of them hidden from hyper (see `quiet_feed`).
        let (mut begun, mut hidden) = (0, 0);
        // Client PINGs are answered here while a live stream waits to leave hyper, so that a
        // client pinging as it receives (grpc-go's BDP estimation) still lets hyper go quiet.
        let answer_pings = self.may_detach && self.live.iter().any(|s| s.detach && !s.closed);
        for e in events {
            if matches!(e, Event::Start { .. }) {
                begun += 1;
            }
            match e {
                Event::Start { head, at } if head.ty == frames::WINDOW_UPDATE => {
                    update_at = at.filter(|a| head.len == 4 && a + 13 <= bytes.len());
                }
                Event::Start { head, at } if head.ty == frames::PING => {
                    ping_at = at.filter(|a| head.len == 8 && a + 17 <= bytes.len());
                }
                Event::Start { head, .. }
                    if head.ty == frames::HEADERS
                        && head.stream % 2 == 1
                        && !self.open.iter().any(|(id, _)| *id == head.stream) =>
                {
                    if self.detach == Detach::Done {
                        // Sent before our GOAWAY reached the client: never processed.
                        let code = frames::REFUSED_STREAM.to_be_bytes();
                        self.control_frame(frames::RST_STREAM, 0, head.stream, &code);
                        continue;
                    }
                    self.last_stream = self.last_stream.max(head.stream);
                    self.open.push((head.stream, false));
                    self.idle_since = None;
                }
                Event::Ping(data) if self.detach == Detach::Done => {
                    self.control_frame(frames::PING, frames::ACK, 0, &data);
                }
                Event::Ping(data) if answer_pings && ping_at.is_some() => {
                    if let Some(at) = ping_at.take() {
                        bytes[at + 3] = frames::UNKNOWN;
                        hidden += 1;
                    }
                    self.control_frame(frames::PING, frames::ACK, 0, &data);
                }
                Event::End(head)
                    if head.ty == frames::SETTINGS
                        && head.flags & frames::ACK == 0
                        && self.detach == Detach::Done =>
                {
                    self.control_frame(frames::SETTINGS, frames::ACK, 0, &[]);
                }
                Event::Setting {
                    id: frames::HEADER_TABLE_SIZE,
                    ..
                } if self.detach == Detach::Done => self.table_changed = true,
                Event::End(head) if head.ty == frames::RST_STREAM => self.reset(head.stream),
                Event::Window { stream, increment } => {
                    let inc = i64::from(increment);
                    if stream == 0 {
                        self.window = self.window.saturating_add(inc).min(MAX_WINDOW);
                        more_window = true;
                    } else if let Some(s) = self.live.iter_mut().find(|s| s.id == stream) {
                        s.window = s.window.saturating_add(inc).min(MAX_WINDOW);
                        more_window = true;
                    }
                    if let Some(at) = update_at.take() {
                        let debt = if stream == 0 {
                            &mut self.debt
                        } else {
                            match self.debts.iter_mut().find(|(id, _)| *id == stream) {
                                Some((_, d)) => d,
                                None => continue,
                            }
                        };
                        let taken = (*debt).min(inc);
                        *debt -= taken;
                        if rewrite_update(&mut bytes[at..at + 13], inc - taken) {
                            hidden += 1;
                        }
                    }
                }
                Event::Setting {
                    id: frames::INITIAL_WINDOW_SIZE,
                    value,
                } => {
                    let delta = i64::from(value) - self.initial;
                    self.initial = i64::from(value);
                    for s in &mut self.live {
                        s.window = s.window.saturating_add(delta).min(MAX_WINDOW);
                    }
                    more_window = true;
                }
                _ => {}
            }
        }
        self.quiet_feed = begun == hidden && started_between && self.inbound.at_boundary();
        if more_window || !self.control.is_empty() {
            // Hyper's held DATA goes first; the live frames follow on the next write.
            match self.blocked.take() {
                Some(w) => w.wake(),
                None => self.flush(sock),
            }
        }
        keep
    }

    /// One non-blocking read into `ahead` (after the `held` bytes), followed; `None` when the
    /// socket has nothing, `Some(0)` at the end of the stream.
    fn read_some(&mut self, sock: &TcpStream) -> io::Result<Option<usize>> {
        self.read_followed_bytes(sock, true)
    }

    /// The same on a detached connection, whose bytes are dropped once followed.
    fn read_detached(&mut self, sock: &TcpStream) -> io::Result<Option<usize>> {
        self.read_followed_bytes(sock, false)
    }

    /// One non-blocking read, followed; what may go to hyper goes into `ahead` when `pass`.
    fn read_followed_bytes(&mut self, sock: &TcpStream, pass: bool) -> io::Result<Option<usize>> {
        let mut tmp = [0u8; 4096];
        let h = self.held.len();
        tmp[..h].copy_from_slice(&self.held);
        match sock.try_read(&mut tmp[h..]) {
            Ok(0) => {
                // The peer is gone: what was held goes as it is.
                if pass {
                    self.ahead.extend(self.held.drain(..));
                }
                Ok(Some(0))
            }
            Ok(n) => {
                self.held.clear();
                let all = &mut tmp[..h + n];
                let keep = self.received(all, sock);
                if pass {
                    self.ahead.extend(&all[..keep]);
                }
                self.held.extend_from_slice(&all[keep..]);
                Ok(Some(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Follows bytes hyper sent.
    fn sent(&mut self, bufs: &[IoSlice<'_>], mut n: usize) {
        let mut events = Vec::new();
        for b in bufs {
            if n == 0 {
                break;
            }
            let take = n.min(b.len());
            self.outbound.feed(&b[..take], &mut |e| events.push(e));
            n -= take;
        }
        for e in events {
            match e {
                Event::Start { head, .. } if head.ty == frames::DATA => {
                    self.window -= i64::from(head.len);
                }
                Event::End(head) => self.sent_frame(head),
                _ => {}
            }
        }
    }

    fn sent_frame(&mut self, head: Head) {
        let block_end = matches!(head.ty, frames::HEADERS | frames::CONTINUATION)
            && head.flags & frames::END_HEADERS != 0;
        if block_end {
            if let Some(o) = self.open.iter_mut().find(|(id, _)| *id == head.stream) {
                o.1 = true;
            }
            if let Some(s) = self.live.iter_mut().find(|s| s.id == head.stream) {
                s.answered = true;
            }
        }
        let ends = matches!(head.ty, frames::DATA | frames::HEADERS)
            && head.flags & frames::END_STREAM != 0;
        if head.ty == frames::RST_STREAM {
            self.reset(head.stream);
        } else if ends {
            self.close(head.stream);
        }
    }

    /// How many of hyper's bytes may go now: all, unless a DATA frame beginning in them would
    /// exceed the window hyper shares with the live frames.
    fn hyper_limit(&self, bufs: &[IoSlice<'_>]) -> usize {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if !self.shared_window {
            return total;
        }
        let mut scan = self.outbound.clone();
        let mut need = 0i64;
        let mut limit = None;
        let mut base = 0usize;
        for b in bufs {
            // Where a frame header split before this slice began (0: in an earlier write).
            let split_head = base.saturating_sub(scan.pending_head());
            scan.feed(b, &mut |e| {
                if let Event::Start { head, at } = e
                    && head.ty == frames::DATA
                    && limit.is_none()
                {
                    need += i64::from(head.len);
                    if need > self.window {
                        limit = Some(at.map_or(split_head, |a| base + a));
                    }
                }
            });
            base += b.len();
            if limit.is_some() {
                break;
            }
        }
        limit.unwrap_or(total)
    }

    /// Reads what the client sent while hyper is held (for its WINDOW_UPDATE frames).
    fn read_ahead(&mut self, sock: &TcpStream, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            if self.ahead.len() >= MAX_AHEAD {
                self.die();
                return Ok(());
            }
            if sock.poll_read_ready(cx)?.is_pending() {
                return Ok(());
            }
            if self.read_some(sock)? == Some(0) {
                // The peer is gone while hyper waits for its window: nothing will come.
                self.die();
                return Ok(());
            }
        }
    }
}

impl ConnIo {
    fn write_followed(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let sock = &self.conn.sock;
        let mut st = self.conn.lock();
        if st.inbound.lost() {
            // HTTP/1: nothing to follow.
            drop(st);
            return write_plain(sock, cx, bufs);
        }
        if st.detach == Detach::Done {
            // Hyper's last words (a GOAWAY, resets) after it read the end: the client never
            // sees them, the live stream goes on.
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        st.hyper_io = Instant::now();
        loop {
            st.flush(sock);
            if st.dead {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if st.partial.is_none() && !st.control_mid {
                break;
            }
            ready!(sock.poll_write_ready(cx))?;
        }
        let mut limit = st.hyper_limit(bufs);
        if limit == 0 && bufs.iter().any(|b| !b.is_empty()) {
            st.blocked = Some(cx.waker().clone());
            st.read_ahead(sock, cx)?;
            if st.dead {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            limit = st.hyper_limit(bufs);
            if limit == 0 {
                return Poll::Pending;
            }
        }
        let slices = truncate(bufs, limit);
        let n = loop {
            match sock.try_write_vectored(&slices) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(sock.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        };
        st.sent(&slices, n);
        st.flush(sock);
        Poll::Ready(Ok(n))
    }

    fn read_followed(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let sock = &self.conn.sock;
        loop {
            {
                let mut st = self.conn.lock();
                match st.detach {
                    Detach::Done => return Poll::Ready(Ok(())),
                    Detach::Asked if st.detachable() => {
                        st.detach_now(sock);
                        // The end of the stream, for hyper.
                        return Poll::Ready(Ok(()));
                    }
                    Detach::Asked => st.detach = Detach::No,
                    Detach::No => {}
                }
                if !st.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    st.reader = Some(cx.waker().clone());
                }
                if !st.ahead.is_empty() {
                    let n = st.ahead.len().min(buf.remaining());
                    let (a, b) = st.ahead.as_slices();
                    let from_a = n.min(a.len());
                    buf.put_slice(&a[..from_a]);
                    buf.put_slice(&b[..n - from_a]);
                    st.ahead.drain(..n);
                    if st.ahead.is_empty() {
                        st.ahead = VecDeque::new();
                    }
                    return Poll::Ready(Ok(()));
                }
                if !st.held.is_empty() {
                    // Rare: a frame cut between two reads; the rest comes through `ahead`.
                    drop(st);
                    ready!(sock.poll_read_ready(cx))?;
                    if self.conn.lock().read_some(sock)? == Some(0) && self.ahead_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    continue;
                }
            }
            ready!(sock.poll_read_ready(cx))?;
            let filled = buf.filled().len();
            // Read into the uninitialised tail: zeroing it first would touch (and keep resident)
            // every connection's whole read buffer.
            // SAFETY: `recv` only writes bytes into the slice, never uninitialises any.
            let dst = unsafe { buf.unfilled_mut() };
            match sock.try_io(Interest::READABLE, || {
                socket2::SockRef::from(sock).recv(dst)
            }) {
                Ok(n) => {
                    // SAFETY: `recv` wrote the first `n` bytes of the tail.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    if !self.follow || n == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    let mut st = self.conn.lock();
                    let new = &mut buf.filled_mut()[filled..filled + n];
                    let keep = st.received(new, sock);
                    if !st.quiet_feed {
                        st.hyper_io = Instant::now();
                    }
                    if keep < n {
                        st.held.extend_from_slice(&new[keep..]);
                        buf.set_filled(filled + keep);
                    }
                    if keep > 0 {
                        return Poll::Ready(Ok(()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn ahead_empty(&self) -> bool {
        self.conn.lock().ahead.is_empty()
    }
}

/// Hyper's bytes as they are, on a connection not followed.
fn write_plain(
    sock: &TcpStream,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    loop {
        match sock.try_write_vectored(bufs) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready!(sock.poll_write_ready(cx))?;
            }
            r => return Poll::Ready(r),
        }
    }
}

/// Writes `increment` into a whole WINDOW_UPDATE frame, or makes it a frame of an unknown type
/// (which hyper ignores) when nothing is left, an increment of 0 being a protocol error; `true`
/// in that case.
fn rewrite_update(frame: &mut [u8], increment: i64) -> bool {
    let Ok(inc) = u32::try_from(increment) else {
        return false;
    };
    if inc == 0 {
        frame[3] = frames::UNKNOWN;
    } else {
        let reserved = frame[9] & 0x80;
        frame[9..13].copy_from_slice(&inc.to_be_bytes());
        frame[9] |= reserved;
    }
    inc == 0
}

/// A header block of `fields` as literals without indexing (RFC 7541 §6.2.2), after a table
/// size update to 0 when the client changed its table's size; `grpc-message` only with
/// `message`.
fn hpack_block(fields: &http::HeaderMap, resize: bool, message: bool) -> Vec<u8> {
    let mut b = Vec::new();
    if resize {
        b.push(0x20);
    }
    for (name, value) in fields {
        if !message && name == "grpc-message" {
            continue;
        }
        b.push(0);
        hpack_int(&mut b, name.as_str().len(), 7);
        b.extend_from_slice(name.as_str().as_bytes());
        hpack_int(&mut b, value.len(), 7);
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// An HPACK integer with a `prefix`-bit prefix (RFC 7541 §5.1), its flag bits 0.
fn hpack_int(out: &mut Vec<u8>, mut v: usize, prefix: u32) {
    let max = (1usize << prefix) - 1;
    if v < max {
        out.push(v as u8);
        return;
    }
    out.push(max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// Adds `len` to the debt of `stream`.
fn owe_stream(debts: &mut SmallVec<[(u32, i64); 1]>, stream: u32, len: i64) {
    match debts.iter_mut().find(|(id, _)| *id == stream) {
        Some((_, d)) => *d += len,
        None => debts.push((stream, len)),
    }
}

/// One `sendmsg` of `bufs`, which never raises `SIGPIPE`.
fn send(sock: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    socket2::SockRef::from(sock).send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
}

/// The first `limit` bytes of `bufs`.
fn truncate<'a>(bufs: &'a [IoSlice<'a>], mut limit: usize) -> Vec<IoSlice<'a>> {
    let mut out = Vec::with_capacity(bufs.len());
    for b in bufs {
        if limit == 0 {
            break;
        }
        let take = limit.min(b.len());
        out.push(IoSlice::new(&b[..take]));
        limit -= take;
    }
    out
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match this.read_followed(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.saw(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.deadlines(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            r => r,
        }
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.follow {
            self.write_followed(cx, bufs)
        } else {
            write_plain(&self.conn.sock, cx, bufs)
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.conn.detached() {
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(socket2::SockRef::from(&self.conn.sock).shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(id: u32, window: i64) -> LiveStream {
        LiveStream {
            id,
            window,
            answered: true,
            queue: VecDeque::new(),
            pages: 0,
            closed: false,
            waker: None,
            detach: true,
        }
    }

    fn page(byte: u8, len: usize) -> Bytes {
        Bytes::from(vec![byte; len])
    }

    #[test]
    fn pages_over_16k_become_frames_with_their_headers() {
        let mut s = stream(3, 65_535);
        s.enqueue(&page(7, 20_000), false);
        let lens: Vec<usize> = s.queue.iter().map(|f| f.body.len()).collect();
        assert_eq!(lens, vec![16_384, 3_616]);
        assert_eq!(s.queue[1].head, Head::data(3_616, 3));
        assert!(s.queue[0].first && !s.queue[0].last && s.queue[1].last);
        assert_eq!(s.pages, 1);
    }

    #[test]
    fn skipping_keeps_the_headers_and_the_page_begun() {
        let mut s = stream(1, 65_535);
        s.enqueue(&page(0, 100), true);
        s.enqueue(&page(1, 20_000), false);
        s.enqueue(&page(2, 100), false);
        s.enqueue(&page(3, 100), false);
        // The headers went out, then the first frame of page 1.
        s.queue.pop_front();
        s.queue.pop_front();
        s.drop_unsent(false);
        let left: Vec<u8> = s.queue.iter().map(|f| f.body[0]).collect();
        assert_eq!(left, vec![1], "page 1 stays whole; pages 2 and 3 go");
        assert_eq!(s.pages, 1);

        let mut s = stream(1, 65_535);
        s.enqueue(&page(0, 100), true);
        s.enqueue(&page(2, 100), false);
        s.drop_unsent(false);
        let left: Vec<u8> = s.queue.iter().map(|f| f.body[0]).collect();
        assert_eq!(left, vec![0], "headers are never skipped");
    }

    #[test]
    fn closing_keeps_only_a_frame_half_written() {
        let mut s = stream(1, 65_535);
        s.enqueue(&page(1, 100), false);
        s.enqueue(&page(2, 100), false);
        s.queue[0].off = 20;
        s.drop_unsent(true);
        assert_eq!(s.queue.len(), 1);
        assert_eq!(s.queue[0].off, 20);
    }

    #[test]
    fn frames_are_cut_to_the_smaller_window() {
        let mut st = State::new();
        st.window = 3_000;
        let mut s = stream(1, 1_000);
        s.enqueue(&page(1, 2_500), false);
        st.live.push(s);
        st.fit();
        let lens: Vec<usize> = st.live[0].queue.iter().map(|f| f.body.len()).collect();
        assert_eq!(
            lens,
            vec![1_000, 1_500],
            "the stream window allows 1,000 bytes now"
        );
        assert_eq!(st.live[0].queue[0].head, Head::data(1_000, 1));
        assert!(!st.live[0].queue[0].last && st.live[0].queue[1].last);
        assert_eq!(st.live[0].pages, 1);
    }

    /// A loopback TCP connection: (client end, server end).
    async fn connected() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let client = TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connects");
        (client, l.accept().await.expect("accepts").0)
    }

    #[tokio::test]
    async fn claims_only_an_unambiguous_stream() {
        let (_client, server) = connected().await;
        let io = ConnIo::new(server, true);
        let conn = io.conn.clone();
        let mut first = PREFACE_AND_SETTINGS.to_vec();
        first.extend(headers(1));
        conn.lock().received(&mut first, &conn.sock);
        assert_eq!(conn.claim(true), Some(1), "the only request");
        assert_eq!(conn.claim(true), None, "already claimed");
        let mut two = headers(3);
        two.extend(headers(5));
        conn.lock().received(&mut two, &conn.sock);
        assert_eq!(conn.claim(true), None, "two requests waiting: ambiguous");
        conn.lock().received(&mut rst(3), &conn.sock);
        assert_eq!(
            conn.claim(true),
            None,
            "after a reset of a request not answered yet, elimination can pick the wrong one"
        );
    }

    fn update(stream: u32, increment: u32) -> Vec<u8> {
        let mut f = Head::data(4, stream).to_vec();
        f[3] = frames::WINDOW_UPDATE;
        f.extend_from_slice(&increment.to_be_bytes());
        f
    }

    /// What hyper reads of `bytes` cut into reads of `step` bytes, as `read_followed` hands
    /// them on (an unfinished frame held back until the next read).
    fn through(st: &mut State, sock: &TcpStream, bytes: &[u8], step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in bytes.chunks(step) {
            let mut chunk: Vec<u8> = st.held.drain(..).collect();
            chunk.extend_from_slice(piece);
            let keep = st.received(&mut chunk, sock);
            out.extend_from_slice(&chunk[..keep]);
            st.held.extend_from_slice(&chunk[keep..]);
        }
        out
    }

    #[tokio::test]
    async fn live_bytes_are_taken_out_of_the_updates_hyper_reads() {
        let (_client, sock) = connected().await;
        for step in [1, 2, 5, 9, 12, 13, 100] {
            let mut st = State::new();
            let mut bytes = PREFACE_AND_SETTINGS.to_vec();
            bytes.extend(headers(1));
            assert_eq!(through(&mut st, &sock, &bytes, step), bytes);
            st.live.push(stream(1, 65_535));
            // 1,000 live bytes went out on stream 1.
            st.owe(1, 1_000);
            let mut updates = update(0, 600);
            updates.extend(update(1, 700));
            updates.extend(update(0, 900));
            updates.extend(update(3, 50));
            let seen = through(&mut st, &sock, &updates, step);
            let mut expect = update(0, 600);
            expect[3] = frames::UNKNOWN;
            expect.extend(update(1, 700));
            expect[13 + 3] = frames::UNKNOWN;
            expect.extend(update(0, 500));
            expect.extend(update(3, 50));
            assert_eq!(seen, expect, "step {step}");
            assert!(st.held.is_empty());
            assert_eq!((st.window, st.debt), (65_535 - 1_000 + 1_500, 0));
            assert_eq!(st.debts.as_slice(), &[(1, 300)]);
            // A peer pushing past 2³¹−1 cannot widen the shadowed windows beyond it.
            through(&mut st, &sock, &update(0, 0x7fff_ffff), step);
            through(&mut st, &sock, &update(1, 0x7fff_ffff), step);
            assert_eq!((st.window, st.live[0].window), (MAX_WINDOW, MAX_WINDOW));
        }
    }

    #[tokio::test]
    async fn a_detached_connection_answers_and_refuses_by_itself() {
        use tokio::io::AsyncReadExt;
        let (mut client, sock) = connected().await;
        let mut st = State::new();
        let mut first = PREFACE_AND_SETTINGS.to_vec();
        first.extend(headers(1));
        st.received(&mut first, &sock);
        st.detach_now(&sock);
        let mut ping = Head::bytes(8, frames::PING, 0, 0).to_vec();
        ping.extend_from_slice(b"12345678");
        let mut input = ping.clone();
        // A SETTINGS frame, a PING ACK (answered by nobody) and a request after the GOAWAY.
        input.extend_from_slice(&Head::bytes(0, frames::SETTINGS, 0, 0));
        input.extend_from_slice(&Head::bytes(8, frames::PING, frames::ACK, 0));
        input.extend_from_slice(b"87654321");
        input.extend(headers(5));
        for piece in input.chunks(5) {
            let mut chunk: Vec<u8> = st.held.drain(..).collect();
            chunk.extend_from_slice(piece);
            let keep = st.received(&mut chunk, &sock);
            st.held.extend_from_slice(&chunk[keep..]);
        }
        st.flush(&sock);
        let mut expect = Vec::new();
        frames::frame(&mut expect, frames::GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]);
        frames::frame(&mut expect, frames::PING, frames::ACK, 0, b"12345678");
        frames::frame(&mut expect, frames::SETTINGS, frames::ACK, 0, &[]);
        frames::frame(&mut expect, frames::RST_STREAM, 0, 5, &[0, 0, 0, 7]);
        let mut got = vec![0; expect.len()];
        client.read_exact(&mut got).await.expect("reads");
        assert_eq!(got, expect);
        assert!(
            st.open.iter().all(|(id, _)| *id != 5),
            "a refused stream is not kept"
        );
    }

    #[tokio::test]
    async fn pings_are_answered_for_hyper_while_a_live_stream_may_leave() {
        use tokio::io::AsyncReadExt;
        let (mut client, sock) = connected().await;
        let mut st = State::new();
        st.may_detach = true;
        let mut first = PREFACE_AND_SETTINGS.to_vec();
        first.extend(headers(1));
        st.received(&mut first, &sock);
        st.live.push(stream(1, 65_535));
        assert!(!st.quiet_feed, "a request is hyper's");
        let mut ping = Head::bytes(8, frames::PING, 0, 0).to_vec();
        ping.extend_from_slice(b"12345678");
        let keep = st.received(&mut ping, &sock);
        assert_eq!(keep, ping.len());
        assert_eq!(ping[3], frames::UNKNOWN, "hidden from hyper");
        assert!(st.quiet_feed, "hyper stays quiet");
        st.flush(&sock);
        let mut expect = Vec::new();
        frames::frame(&mut expect, frames::PING, frames::ACK, 0, b"12345678");
        let mut got = vec![0; expect.len()];
        client.read_exact(&mut got).await.expect("reads");
        assert_eq!(got, expect, "answered by the wrapper");
        st.live[0].detach = false;
        let mut ping = Head::bytes(8, frames::PING, 0, 0).to_vec();
        ping.extend_from_slice(b"87654321");
        st.received(&mut ping, &sock);
        assert_eq!(ping[3], frames::PING, "hyper answers when the stream stays");
        assert!(!st.quiet_feed);
    }

    #[test]
    fn trailers_are_literals_with_lengths_as_hpack_integers() {
        let mut out = Vec::new();
        hpack_int(&mut out, 1337, 5);
        assert_eq!(out, [31, 154, 10], "RFC 7541 C.1.2");
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        let mut expect = vec![0x20, 0, 11];
        expect.extend_from_slice(b"grpc-status");
        expect.extend_from_slice(&[1, b'0']);
        assert_eq!(hpack_block(&t, true, true), expect);
        t.insert("grpc-message", http::HeaderValue::from_static("x"));
        assert_eq!(hpack_block(&t, true, false), expect, "without the message");
    }

    const PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

    fn rst(stream: u32) -> Vec<u8> {
        let mut f = Head::data(4, stream).to_vec();
        f[3] = frames::RST_STREAM;
        f.extend_from_slice(&[0, 0, 0, 8]);
        f
    }

    fn headers(stream: u32) -> Vec<u8> {
        let mut f = Head::data(0, stream).to_vec();
        f[3] = frames::HEADERS;
        f[4] = frames::END_HEADERS;
        f
    }
}
