//! Connection and stream limits (SPEC §13): streams per HTTP/2 connection, unauthenticated
//! streams per client address, the default deadline of unary calls, connections that never
//! finish their request head or preface, idle connections, and the caps on connections per
//! client address. The abusive clients connect from 127.0.0.2; the well-behaved one from
//! 127.0.0.1 must be served meanwhile.

use std::{net::SocketAddr, time::Duration};

use futures::{StreamExt, future::join_all};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1;
use veza_proto::auth::{RegisterRequest, auth_service_client::AuthServiceClient};
use veza_tests::{Backend, TestServer};

fn addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().expect("address")
}

/// A connection from 127.0.0.2.
async fn connect_from_other(to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.2:0".parse().expect("source"))
        .expect("binds 127.0.0.2");
    sock.connect(to).await.expect("connects")
}

/// `n` connections from 127.0.0.2 that each send `bytes`, opened 100 at a time.
async fn open_many(to: SocketAddr, n: usize, bytes: &'static [u8]) -> Vec<TcpStream> {
    let mut all = Vec::with_capacity(n);
    for batch in 0..n.div_ceil(100) {
        let count = 100.min(n - batch * 100);
        let opened = join_all((0..count).map(|_| async move {
            let mut s = connect_from_other(to).await;
            s.write_all(bytes).await.expect("writes");
            s
        }))
        .await;
        all.extend(opened);
    }
    all
}

/// Whether the server closes `s` within `within` (EOF or a reset when read).
async fn closed_within(mut s: TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    read.await.is_ok()
}

/// An HTTP/1.1 keep-alive connection after one answered `GET /healthz`.
async fn kept_alive(http: SocketAddr) -> TcpStream {
    let mut h1 = TcpStream::connect(http).await.expect("connects");
    h1.write_all(b"GET /healthz HTTP/1.1\r\nHost: veza\r\n\r\n")
        .await
        .expect("request");
    let mut buf = [0u8; 512];
    let n = h1.read(&mut buf).await.expect("answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    h1
}

/// A plain HTTP/1.1 `GET /healthz` from 127.0.0.1; the status line.
async fn healthz(http: SocketAddr) -> String {
    let mut s = TcpStream::connect(http).await.expect("connects");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: veza\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answered in time")
        .expect("reads");
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

async fn health_check(s: &TestServer) -> Result<(), tonic::Status> {
    let mut h = HealthClient::new(s.channel().await);
    tokio::time::timeout(
        Duration::from_secs(10),
        h.check(HealthCheckRequest::default()),
    )
    .await
    .map_err(|_| tonic::Status::deadline_exceeded("no answer in 10 s"))?
    .map(|_| ())
}

async fn watch(
    h: &mut HealthClient<tonic::transport::Channel>,
) -> Result<tonic::Streaming<tonic_health::pb::HealthCheckResponse>, tonic::Status> {
    h.watch(HealthCheckRequest::default())
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_on_one_connection_are_capped() {
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| c.max_public_streams = 10_000).await
    else {
        return;
    };
    assert_eq!(s.config.max_concurrent_streams, 1_000, "the default");
    let channel = s.channel().await;
    let calls = (0..2_000).map(|_| {
        let mut h = HealthClient::new(channel.clone());
        async move {
            let mut stream = tokio::time::timeout(Duration::from_secs(20), watch(&mut h))
                .await
                .ok()?
                .ok()?;
            let first = stream.next().await?.ok()?;
            Some((first, stream))
        }
    });
    let opened: Vec<_> = join_all(calls).await.into_iter().flatten().collect();
    assert_eq!(
        opened.len(),
        1_000,
        "one connection carries at most max_concurrent_streams streams at once"
    );
    drop(opened);
    health_check(&s).await.expect("the server still answers");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_streams_per_address_are_capped() {
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| c.max_public_streams = 20).await
    else {
        return;
    };
    let (mut a, mut b) = (
        HealthClient::new(s.channel().await),
        HealthClient::new(s.channel().await),
    );
    let mut open = Vec::new();
    for i in 0..20 {
        let h = if i % 2 == 0 { &mut a } else { &mut b };
        open.push(watch(h).await.expect("under the cap"));
    }
    let refused = watch(&mut a)
        .await
        .expect_err("over the cap, whatever the connection");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let mut refl = v1::server_reflection_client::ServerReflectionClient::new(s.channel().await);
    let refused = refl
        .server_reflection_info(futures::stream::pending::<v1::ServerReflectionRequest>())
        .await
        .expect_err("reflection streams count too");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    health_check(&s).await.expect("unary calls are not capped");
    open.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    watch(&mut b).await.expect("a place was given back");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_get_a_default_deadline_and_streams_do_not() {
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| {
        c.unary_timeout = Duration::from_millis(1)
    })
    .await
    else {
        return;
    };
    let mut auth = AuthServiceClient::new(s.channel().await);
    let register = |email: &str| RegisterRequest {
        email: email.into(),
        password: "correct horse battery".into(),
        ..Default::default()
    };
    // Hashing the password takes longer than 1 ms.
    let late = auth
        .register(register("late@example.com"))
        .await
        .expect_err("past the server's default deadline");
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    let mut req = tonic::Request::new(register("patient@example.com"));
    req.set_timeout(Duration::from_secs(30));
    auth.register(req)
        .await
        .expect("a client deadline replaces the default");

    // A server stream and a bidirectional stream outlive the unary deadline.
    let mut h = HealthClient::new(s.channel().await);
    let mut w = watch(&mut h).await.expect("Watch");
    w.next().await.expect("a status").expect("ok");
    let quiet = tokio::time::timeout(Duration::from_millis(1_500), w.next()).await;
    assert!(quiet.is_err(), "the Watch stream stays open: {quiet:?}");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let list = || v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    tx.send(list()).await.expect("queued");
    let mut refl = v1::server_reflection_client::ServerReflectionClient::new(s.channel().await)
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("reflection")
        .into_inner();
    refl.next().await.expect("an answer").expect("ok");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    tx.send(list()).await.expect("queued");
    refl.next()
        .await
        .expect("a second answer")
        .expect("the bidirectional stream was not cut");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_while_others_are_served() {
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| {
        c.header_timeout = Duration::from_secs(2);
        c.max_connections_per_ip = 0;
    })
    .await
    else {
        return;
    };
    let (grpc, http) = (addr(&s.grpc_url), addr(&s.http_url));
    let half_head: &'static [u8] = b"GET /healthz HTTP/1.1\r\nHost: veza\r\n";
    let half_preface: &'static [u8] = b"PRI * HTTP/2.0\r\n";
    let slow_http = open_many(http, 1_500, half_head).await;
    let slow_grpc = open_many(grpc, 1_500, half_preface).await;
    let slow_grpc_h1 = open_many(
        grpc,
        10,
        b"POST /veza.auth.AuthService/Register HTTP/1.1\r\n",
    )
    .await;

    assert_eq!(healthz(http).await, "HTTP/1.1 200 OK");
    health_check(&s).await.expect("a normal client is served");

    let all = slow_http
        .into_iter()
        .chain(slow_grpc)
        .chain(slow_grpc_h1)
        .map(|c| closed_within(c, Duration::from_secs(30)));
    let closed = join_all(all).await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(
        open,
        0,
        "{open} of {} half-open connections still open after 30 s",
        closed.len()
    );
    assert_eq!(healthz(http).await, "HTTP/1.1 200 OK");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_busy_ones_are_not() {
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| {
        c.header_timeout = Duration::from_secs(2);
        c.idle_timeout = Duration::from_secs(2);
    })
    .await
    else {
        return;
    };
    let (grpc, http) = (addr(&s.grpc_url), addr(&s.http_url));
    // HTTP/2 with its preface and settings, then nothing.
    let mut h2 = TcpStream::connect(grpc).await.expect("connects");
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    // HTTP/1.1 keep-alive after one answered request.
    let h1 = kept_alive(http).await;
    // A connection carrying a stream is not idle.
    let mut h = HealthClient::new(s.channel().await);
    let mut w = watch(&mut h).await.expect("Watch");
    w.next().await.expect("a status").expect("ok");

    let (h2_closed, h1_closed) = tokio::join!(
        closed_within(h2, Duration::from_secs(10)),
        closed_within(h1, Duration::from_secs(10))
    );
    assert!(h2_closed, "idle HTTP/2 connection closed");
    assert!(h1_closed, "idle keep-alive connection closed");
    let quiet = tokio::time::timeout(Duration::from_secs(1), w.next()).await;
    assert!(quiet.is_err(), "the Watch connection stays open: {quiet:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped() {
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| {
        c.max_connections_per_ip = 50;
        c.header_timeout = Duration::from_secs(30);
    })
    .await
    else {
        return;
    };
    let (grpc, http) = (addr(&s.grpc_url), addr(&s.http_url));
    // 30 + 20 from 127.0.0.2 over both ports: the cap.
    let mut held = open_many(grpc, 30, b"PRI").await;
    held.extend(open_many(http, 20, b"GET").await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for to in [grpc, http] {
        let over = connect_from_other(to).await;
        assert!(
            closed_within(over, Duration::from_secs(5)).await,
            "the 51st connection from one address is closed at once"
        );
    }
    assert_eq!(
        healthz(http).await,
        "HTTP/1.1 200 OK",
        "another address is served"
    );
    health_check(&s).await.expect("another address is served");
    let metrics = {
        let mut c = TcpStream::connect(http).await.expect("connects");
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: veza\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut out = String::new();
        c.read_to_string(&mut out).await.expect("reads");
        out
    };
    let refused: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("veza_connections_refused_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(refused, 2.0, "{metrics}");
    // Places are given back when connections close.
    held.truncate(40);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = connect_from_other(http).await;
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: veza\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut out = Vec::new();
    again.read_to_end(&mut out).await.expect("answer");
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_closes_a_peer_that_stops_answering() {
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| {
        c.keepalive_interval = Some(Duration::from_secs(1));
        c.keepalive_timeout = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    assert_eq!(
        s.config.idle_timeout,
        Duration::from_secs(60),
        "not the idle timeout"
    );
    let mut dead = TcpStream::connect(addr(&s.grpc_url))
        .await
        .expect("connects");
    dead.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    // The peer reads (so the server's writes go through) but never answers a PING.
    let mut pinged = false;
    let mut head = [0u8; 9];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if dead.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            pinged |= head[3] == 0x6 && head[4] & 1 == 0;
            let mut payload = vec![0u8; len];
            if dead.read_exact(&mut payload).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "a peer not answering pings is closed");
    assert!(pinged, "the server pinged it first");
    health_check(&s).await.expect("others are served");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_waits_for_the_next_request_at_most_the_header_timeout() {
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| {
        c.header_timeout = Duration::from_secs(2);
    })
    .await
    else {
        return;
    };
    assert_eq!(s.config.idle_timeout, Duration::from_secs(60));
    let h1 = kept_alive(addr(&s.http_url)).await;
    assert!(closed_within(h1, Duration::from_secs(10)).await);
    s.stop().await;
}

/// Over TLS: a connection that never finishes its handshake is closed within the header timeout,
/// one that finishes it but never makes a request within the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_that_never_start_are_closed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key, made) = veza_tests::self_signed(dir.path());
    if !made.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: openssl unavailable to make a test certificate");
        return;
    }
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| {
        c.tls = Some((cert.clone(), key.clone()));
        c.header_timeout = Duration::from_secs(2);
        c.idle_timeout = Duration::from_secs(3);
    })
    .await
    else {
        return;
    };
    let grpc = addr(&s.grpc_url);
    let mut half_hello = connect_from_other(grpc).await;
    half_hello
        .write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01])
        .await
        .expect("writes");
    // A full handshake (openssl s_client), then half the preface and nothing more.
    let mut client = tokio::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-connect"])
        .arg(grpc.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = client.stdin.take().expect("stdin");
    stdin
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("writes");
    let (hello_closed, exited) = tokio::join!(
        closed_within(half_hello, Duration::from_secs(10)),
        tokio::time::timeout(Duration::from_secs(15), client.wait())
    );
    assert!(hello_closed, "an unfinished handshake is closed");
    assert!(
        exited.is_ok(),
        "a TLS connection without a request is closed"
    );
    drop(stdin);
    s.stop().await;
}
