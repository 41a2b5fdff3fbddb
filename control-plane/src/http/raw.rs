//! A live request on a raw connection of the HTTP port: its head, read and parsed with
//! `httparse`, what serving it needs, and the short answers that refuse it.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::BytesMut;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

use super::live::refusal;
use crate::{
    domain::{DomainError, Media, live::Live},
    metrics::Metrics,
    shutdown::Shutdown,
};

/// Longest request head read here.
const MAX_HEAD: usize = 16 << 10;

/// What the live requests of the HTTP port need.
#[derive(Clone)]
pub struct LiveHttp {
    pub live: Live,
    pub media: Media,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
    /// Time to send the request head.
    pub header_timeout: Duration,
    /// Time a source may send nothing before it counts as gone.
    pub idle: Duration,
    /// Listeners are served here (direct writes); otherwise hyper serves them.
    pub direct: bool,
}

/// A request head, with what the live requests read of it.
pub struct Head {
    pub method: String,
    pub id: Option<i64>,
    pub exp: Option<i64>,
    pub sig: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The password of `Authorization: Basic` for user `source`.
    pub fn source_password(&self) -> Option<String> {
        let v = std::str::from_utf8(self.header("authorization")?).ok()?;
        let (scheme, b64) = v.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
        let (user, pass) = decoded.split_once(':')?;
        (user == "source").then(|| pass.to_string())
    }
}

/// Reads and parses the request head; the bytes read after it come back too.
pub(super) async fn read_head(sock: &mut TcpStream, timeout: Duration) -> Option<(Head, BytesMut)> {
    let deadline = Instant::now() + timeout;
    let mut buf = BytesMut::with_capacity(2048);
    loop {
        if let Some((head, len)) = parse(&buf)? {
            let _ = buf.split_to(len);
            return Some((head, buf));
        }
        match tokio::time::timeout_at(deadline, sock.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    }
}

/// The head at the start of `buf` and its length; `Some(None)` while it is incomplete, `None`
/// when it is malformed or too long. (Not async: its header array is never kept across a wait.)
fn parse(buf: &[u8]) -> Option<Option<(Head, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Some(Some((head_of(&req)?, len))),
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Some(None),
        _ => None,
    }
}

fn head_of(req: &httparse::Request<'_, '_>) -> Option<Head> {
    let target = req.path?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let id = path
        .strip_prefix("/live/")
        .and_then(|s| s.parse::<i64>().ok());
    let mut head = Head {
        method: req.method?.to_string(),
        id,
        exp: None,
        sig: None,
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect(),
    };
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("exp", v)) => head.exp = v.parse().ok(),
            Some(("sig", v)) => head.sig = Some(v.to_string()),
            _ => {}
        }
    }
    Some(head)
}

/// Answers a refused live request with its status.
pub(super) async fn refuse(sock: &mut TcpStream, e: &DomainError) {
    let (code, msg) = refusal(e);
    let extra: &[(&str, &str)] = if code == axum::http::StatusCode::UNAUTHORIZED {
        &[("www-authenticate", "Basic realm=\"veza\"")]
    } else {
        &[]
    };
    let reason = code.canonical_reason().unwrap_or("Error");
    let _ = reply(sock, code.as_u16(), reason, &msg, extra).await;
}

/// Writes a short complete answer and closes the write side.
pub(super) async fn reply(
    sock: &mut TcpStream,
    code: u16,
    reason: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> std::io::Result<()> {
    let mut a = format!(
        "HTTP/1.0 {code} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        a.push_str(&format!("{k}: {v}\r\n"));
    }
    a.push_str("\r\n");
    a.push_str(body);
    tokio::time::timeout(Duration::from_secs(5), async {
        sock.write_all(a.as_bytes()).await?;
        sock.shutdown().await
    })
    .await
    .unwrap_or(Ok(()))
}
