//! Live requests that open a connection on the HTTP port, served like Icecast serves its mounts:
//! `GET /live/{id}` answers `HTTP/1.0 200` and then the live writer threads write the shared pages
//! straight onto the socket; `PUT` and `SOURCE` take an Icecast source's audio (SPEC §12).

use std::{sync::LazyLock, time::Duration};

use tokio::{io::AsyncWriteExt, net::TcpStream, time::Instant};

pub use super::{keeper::Keeper, raw::LiveHttp};
use super::{
    live::{HEADERS, signed},
    raw::{Head, read_head, refuse, reply},
    sink::{Socket, TcpSink},
    source,
};

/// A listener's answer, the same for all.
static ANSWER: LazyLock<String> = LazyLock::new(|| {
    let mut answer = String::from("HTTP/1.0 200 OK\r\n");
    for (k, v) in HEADERS {
        answer.push_str(&format!("{k}: {v}\r\n"));
    }
    answer + "connection: close\r\n\r\n"
});

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

/// Serves one connection that opened with a live request ([`Opening::Live`]): a source to its
/// end, a listener up to its answer (then the [`Keeper`] returned carries the connection on).
pub async fn serve(mut sock: TcpStream, st: LiveHttp) -> Option<Keeper> {
    let Some((head, rest)) = read_head(&mut sock, st.header_timeout).await else {
        let _ = reply(
            &mut sock,
            400,
            "Bad Request",
            "malformed request head\n",
            &[],
        )
        .await;
        return None;
    };
    let Some(id) = head.id else {
        let _ = reply(&mut sock, 404, "Not Found", "no such live stream\n", &[]).await;
        return None;
    };
    match head.method.as_str() {
        "GET" => {
            drop(rest);
            listen(sock, id, head, st).await
        }
        _ => {
            // In its own allocation, sized to a source.
            Box::pin(source::serve(sock, id, head, rest, st)).await;
            None
        }
    }
}

/// Answers a plain HTTP listener and attaches it to the fan-out; what keeps its connection from
/// then on.
async fn listen(mut sock: TcpStream, id: i64, head: Head, st: LiveHttp) -> Option<Keeper> {
    let ok = signed(&st.media, id, head.exp, head.sig.as_deref());
    let country = head
        .header("x-country")
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned);
    // Nothing of the request is held while joiners wait for the database together.
    drop(head);
    let admitted = Box::pin(st.live.admit_http(id, ok, country.as_deref())).await;
    let admitted = match admitted {
        Ok(a) => a,
        Err(e) => {
            refuse(&mut sock, &e).await;
            return None;
        }
    };
    let sent = tokio::time::timeout(st.header_timeout, sock.write_all(ANSWER.as_bytes())).await;
    if !matches!(sent, Ok(Ok(()))) {
        return None;
    }
    let socket = Socket::new(sock, st.live.queue_pages());
    let attached = st.live.attach(admitted, TcpSink(socket.clone())).ok()?;
    st.metrics.served("http", "direct");
    Some(Keeper::new(socket, attached))
}
