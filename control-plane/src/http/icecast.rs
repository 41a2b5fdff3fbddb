//! Live requests that open a connection on the HTTP port, served like Icecast serves its mounts:
//! `GET /live/{id}` answers `HTTP/1.0 200` and then the live writer threads write the shared pages
//! straight onto the socket; `PUT` and `SOURCE` take an Icecast source's audio (SPEC §12).

use std::time::Duration;

use tokio::{io::AsyncWriteExt, net::TcpStream, time::Instant};

pub use super::raw::LiveHttp;
use super::{
    live::{HEADERS, signed},
    raw::{Head, read_head, refuse, reply},
    sink::{Socket, TcpSink},
    source,
};

/// How long the last pages may take to drain once the stream ended.
const DRAIN: Duration = Duration::from_secs(3);

/// How a new connection on the HTTP port opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// With a live request served here.
    Live,
    /// With anything else (hyper's).
    Other,
    /// With nothing within the header timeout, or closed: drop it.
    Silent,
}

/// How the connection opens (its first bytes peeked, not read), waiting at most `timeout` for
/// them; `GET` is taken only when listeners are served here (`direct`).
pub async fn opening(sock: &TcpStream, timeout: Duration, direct: bool) -> Opening {
    let starts: [(&[u8], bool); 3] = [
        (b"GET /live/", direct),
        (b"PUT /live/", true),
        (b"SOURCE /live/", true),
    ];
    let deadline = Instant::now() + timeout;
    // A live client sends its request line at once; one that trickles goes to hyper, which
    // sees it close (a peek cannot see the end behind bytes not yet read).
    let mut looks = 0;
    let mut buf = [0u8; 16];
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Opening::Silent,
        };
        let seen = &buf[..n];
        let mut undecided = false;
        for (start, _) in starts.iter().filter(|(_, on)| *on) {
            if seen.starts_with(start) {
                return Opening::Live;
            }
            undecided |= start.starts_with(seen);
        }
        looks += 1;
        if !undecided || looks > 20 {
            return Opening::Other;
        }
        // Only the first bytes have come: look again shortly.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Serves one connection that opened with a live request ([`Opening::Live`]).
pub async fn serve(mut sock: TcpStream, st: LiveHttp) {
    let Some((head, rest)) = read_head(&mut sock, st.header_timeout).await else {
        let _ = reply(
            &mut sock,
            400,
            "Bad Request",
            "malformed request head\n",
            &[],
        )
        .await;
        return;
    };
    let Some(id) = head.id else {
        let _ = reply(&mut sock, 404, "Not Found", "no such live stream\n", &[]).await;
        return;
    };
    // Each branch in its own allocation, sized to itself: a listener's task then holds only
    // what a listener needs for its whole life (not the head buffer, not a source's state).
    match head.method.as_str() {
        "GET" => {
            drop(rest);
            Box::pin(listen(sock, id, head, st)).await
        }
        _ => Box::pin(source::serve(sock, id, head, rest, st)).await,
    }
}

/// A plain HTTP listener fed by the live writer threads.
async fn listen(mut sock: TcpStream, id: i64, head: Head, st: LiveHttp) {
    let ok = signed(&st.media, id, head.exp, head.sig.as_deref());
    let country = head
        .header("x-country")
        .and_then(|v| std::str::from_utf8(v).ok());
    // Boxed, so its database query does not size the future a listener keeps for its life.
    let admitted = Box::pin(st.live.admit_http(id, ok, country)).await;
    drop(head);
    let admitted = match admitted {
        Ok(a) => a,
        Err(e) => return refuse(&mut sock, &e).await,
    };
    let mut answer = String::from("HTTP/1.0 200 OK\r\n");
    for (k, v) in HEADERS {
        answer.push_str(&format!("{k}: {v}\r\n"));
    }
    answer.push_str("connection: close\r\n\r\n");
    let sent = tokio::time::timeout(st.header_timeout, sock.write_all(answer.as_bytes())).await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let socket = Socket::new(sock, st.live.queue_pages());
    let Ok(attached) = st.live.attach(admitted, TcpSink(socket.clone())) else {
        return;
    };
    st.metrics.served("http", "direct");
    let mut buf = [0u8; 256];
    loop {
        if socket.dead() {
            break;
        }
        let pending = socket.pending();
        tokio::select! {
            _ = std::future::poll_fn(|cx| attached.poll_ended(cx)) => {
                drain(&socket).await;
                break;
            }
            _ = std::future::poll_fn(|cx| socket.poll_work(cx)), if !pending => {}
            w = socket.sock.writable(), if pending => {
                if w.is_err() {
                    break;
                }
                socket.flush();
            }
            r = socket.sock.readable() => {
                // Players send nothing more; this only notices them leave.
                let gone = r.is_err() || match socket.sock.try_read(&mut buf) {
                    Ok(n) => n == 0,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                };
                if gone {
                    break;
                }
            }
        }
    }
    drop(attached);
    let _ = socket2::SockRef::from(&socket.sock).shutdown(std::net::Shutdown::Both);
}

/// Writes what still waits once the stream ended, for at most [`DRAIN`].
async fn drain(socket: &Socket) {
    let _ = tokio::time::timeout(DRAIN, async {
        while socket.pending() && !socket.dead() {
            if socket.sock.writable().await.is_err() {
                return;
            }
            socket.flush();
        }
    })
    .await;
}
