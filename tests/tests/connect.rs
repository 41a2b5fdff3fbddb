//! The Connect protocol and CORS on both ports (SPEC §11), through a plain HTTP/1.1 client as
//! curl or `fetch()` would send: JSON and binary unary calls, server-streaming envelopes,
//! Connect error bodies, int64 ids as strings, preflights, and gRPC-Web on the HTTP port.

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, body::Incoming, header::HeaderMap};
use prost::Message;
use serde_json::{Value, json};
use veza_proto::auth::{GetUserInfoRequest, GetUserInfoResponse};
use veza_tests::{Backend, TestServer};

/// A response's status, headers and whole body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

/// Sends one request on a fresh HTTP/1.1 connection and returns the head and the open body.
async fn send(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> hyper::Response<Incoming> {
    let addr = base.trim_start_matches("http://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    sender
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap()
}

async fn call(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let resp = send(base, method, path, headers, body).await;
    let (parts, body) = resp.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A unary Connect JSON call.
async fn unary(base: &str, path: &str, token: Option<&str>, body: Value) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("content-type", "application/json"),
        ("connect-protocol-version", "1"),
    ];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    call(base, "POST", path, &headers, body.to_string().into_bytes()).await
}

fn envelope(flags: u8, msg: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// Reads Connect envelopes off a streaming body.
struct Envelopes {
    body: Incoming,
    buf: BytesMut,
}

impl Envelopes {
    /// The next `(flags, message)`, or `None` when the body ends.
    async fn next(&mut self) -> Option<(u8, Bytes)> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() >= 5 + len {
                    let flags = self.buf[0];
                    self.buf.advance(5);
                    return Some((flags, self.buf.split_to(len).freeze()));
                }
            }
            let frame = self.body.frame().await?.unwrap();
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }
}

async fn stream(base: &str, path: &str, token: &str, body: Value) -> (StatusCode, Envelopes) {
    let bearer = format!("Bearer {token}");
    let resp = send(
        base,
        "POST",
        path,
        &[
            ("content-type", "application/connect+json"),
            ("authorization", &bearer),
        ],
        envelope(0, body.to_string().as_bytes()),
    )
    .await;
    assert_eq!(
        resp.headers()["content-type"],
        "application/connect+json",
        "{path}"
    );
    let status = resp.status();
    let body = resp.into_body();
    (
        status,
        Envelopes {
            body,
            buf: BytesMut::new(),
        },
    )
}

/// The first session of the README, over Connect JSON, against `base` (either port).
async fn json_session(s: &TestServer, base: &str) {
    let login = unary(
        base,
        "/veza.auth.AuthService/Authenticate",
        None,
        json!({"email": "connect@example.com", "password": "connect password"}),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    assert_eq!(login.header("content-type"), "application/json");
    let login = login.json();
    let token = login["accessToken"].as_str().unwrap().to_string();
    let user_id = login["userInfo"]["userId"].clone();
    assert!(user_id.is_string(), "int64 as a string: {login}");

    let me = unary(
        base,
        "/veza.auth.AuthService/GetUserInfo",
        Some(&token),
        json!({}),
    )
    .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["userInfo"]["email"], "connect@example.com");
    assert_eq!(me.json()["userInfo"]["userId"], user_id);

    let room = s.room(&token).await.to_string();
    let (status, mut messages) = stream(
        base,
        "/veza.chat.ChatService/StreamMessages",
        &token,
        json!({"roomId": room}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The stream is subscribed once its headers are out; a message sent now arrives.
    let sent = unary(
        base,
        "/veza.chat.ChatService/SendMessage",
        Some(&token),
        json!({"roomId": room, "content": "hello over Connect"}),
    )
    .await;
    assert_eq!(sent.status, StatusCode::OK, "{:?}", sent.body);
    let id = sent.json()["message"]["messageId"].clone();
    assert!(id.is_string(), "{id}");
    let (flags, msg) = messages.next().await.expect("a message envelope");
    assert_eq!(flags, 0);
    let msg: Value = serde_json::from_slice(&msg).unwrap();
    assert_eq!(msg["content"], "hello over Connect");
    assert_eq!(msg["messageId"], id);
    assert_eq!(msg["roomId"], room.as_str());

    let wrong = unary(
        base,
        "/veza.auth.AuthService/Authenticate",
        None,
        json!({"email": "connect@example.com", "password": "not it"}),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json()["code"], "unauthenticated");
    assert!(
        wrong.json()["message"]
            .as_str()
            .unwrap()
            .contains("invalid")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_json_on_both_ports() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    s.register("connect@example.com", "connect password").await;
    json_session(&s, &s.grpc_url).await;
    json_session(&s, &s.http_url).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_binary_and_stream_errors() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let (_, token) = s.user("binary").await;
    let bearer = format!("Bearer {token}");
    for base in [&s.grpc_url, &s.http_url] {
        let me = call(
            base,
            "POST",
            "/veza.auth.AuthService/GetUserInfo",
            &[
                ("content-type", "application/proto"),
                ("authorization", &bearer),
            ],
            GetUserInfoRequest::default().encode_to_vec(),
        )
        .await;
        assert_eq!(me.status, StatusCode::OK);
        assert_eq!(me.header("content-type"), "application/proto");
        let me = GetUserInfoResponse::decode(me.body).unwrap();
        assert_eq!(me.user_info.unwrap().username, "binary");

        // A streaming call that fails ends with an end-of-stream envelope carrying the error.
        let (status, mut env) = stream(
            base,
            "/veza.chat.ChatService/StreamMessages",
            &token,
            json!({"roomId": "424242"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (flags, end) = env.next().await.expect("end of stream");
        assert_eq!(flags, 2);
        let end: Value = serde_json::from_slice(&end).unwrap();
        assert_eq!(end["error"]["code"], "not_found", "{end}");
        assert_eq!(end["error"]["message"], "room 424242 not found", "{end}");
        assert!(env.next().await.is_none());
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_what_it_cannot_carry() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let (_, token) = s.user("refused").await;
    let base = &s.http_url;
    let unknown = unary(base, "/veza.nope.Nope/Call", None, json!({})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["code"], "unimplemented");

    // No field accepted then dropped: an unknown field is an error.
    let extra = unary(
        base,
        "/veza.auth.AuthService/GetUserInfo",
        Some(&token),
        json!({"nonsense": 1}),
    )
    .await;
    assert_eq!(extra.status, StatusCode::BAD_REQUEST);
    assert_eq!(extra.json()["code"], "invalid_argument");

    let malformed = call(
        base,
        "POST",
        "/veza.auth.AuthService/GetUserInfo",
        &[("content-type", "application/json")],
        b"{\"userId\": ".to_vec(),
    )
    .await;
    assert_eq!(malformed.json()["code"], "invalid_argument");

    // Streaming methods over the unary content type; client streaming over Connect at all.
    let streaming = unary(
        base,
        "/veza.chat.ChatService/StreamMessages",
        Some(&token),
        json!({}),
    )
    .await;
    assert_eq!(streaming.json()["code"], "unimplemented");
    let (_, mut upload) = stream(
        base,
        "/veza.stream.StreamService/UploadAudioChunks",
        &token,
        json!({}),
    )
    .await;
    let (flags, end) = upload.next().await.unwrap();
    assert_eq!(flags, 2);
    assert_eq!(
        serde_json::from_slice::<Value>(&end).unwrap()["error"]["code"],
        "unimplemented"
    );

    // Bigger than a message may be: refused before it is buffered whole.
    let huge = call(
        base,
        "POST",
        "/veza.auth.AuthService/GetUserInfo",
        &[("content-type", "application/proto")],
        vec![0u8; 5 << 20],
    )
    .await;
    assert_eq!(huge.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(huge.json()["code"], "resource_exhausted");

    // Without a token: the same auth layer as gRPC.
    let anonymous = unary(base, "/veza.auth.AuthService/GetUserInfo", None, json!({})).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_calls_count_in_metrics() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let (_, token) = s.user("counted").await;
    for _ in 0..3 {
        let me = unary(
            &s.http_url,
            "/veza.auth.AuthService/GetUserInfo",
            Some(&token),
            json!({}),
        )
        .await;
        assert_eq!(me.status, StatusCode::OK);
    }
    let text = call(&s.http_url, "GET", "/metrics", &[], Vec::new()).await;
    let text = String::from_utf8_lossy(&text.body);
    let line = "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"veza.auth.AuthService\",grpc_method=\"GetUserInfo\",grpc_code=\"OK\"} 3";
    assert!(text.contains(line), "{text}");
    s.stop().await;
}

/// A preflight from `origin` for a Connect call with a token.
async fn preflight(base: &str, origin: &str) -> Answer {
    call(
        base,
        "OPTIONS",
        "/veza.auth.AuthService/GetUserInfo",
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type,authorization,connect-protocol-version,x-grpc-web",
            ),
        ],
        Vec::new(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_configured_origins_only() {
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| {
        c.cors_origins = vec!["https://app.example".into()];
    })
    .await
    else {
        return;
    };
    let (_, token) = s.user("browser").await;
    let bearer = format!("Bearer {token}");
    for base in [&s.grpc_url, &s.http_url] {
        let ok = preflight(base, "https://app.example").await;
        assert!(ok.status.is_success(), "{}", ok.status);
        assert_eq!(
            ok.header("access-control-allow-origin"),
            "https://app.example"
        );
        let allowed = ok.header("access-control-allow-headers");
        for h in [
            "authorization",
            "content-type",
            "connect-protocol-version",
            "x-grpc-web",
        ] {
            assert!(allowed.contains(h), "{h} in {allowed}");
        }
        assert!(ok.header("access-control-allow-methods").contains("POST"));

        let other = preflight(base, "https://evil.example").await;
        assert_eq!(other.header("access-control-allow-origin"), "");

        let call = call(
            base,
            "POST",
            "/veza.auth.AuthService/GetUserInfo",
            &[
                ("origin", "https://app.example"),
                ("content-type", "application/json"),
                ("authorization", &bearer),
            ],
            b"{}".to_vec(),
        )
        .await;
        assert_eq!(call.status, StatusCode::OK);
        assert_eq!(
            call.header("access-control-allow-origin"),
            "https://app.example"
        );
        let exposed = call.header("access-control-expose-headers");
        for h in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
            assert!(exposed.contains(h), "{h} in {exposed}");
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cors_without_origins() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let answer = preflight(&s.http_url, "https://app.example").await;
    assert_eq!(answer.header("access-control-allow-origin"), "");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_on_the_http_port() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let (_, token) = s.user("webport").await;
    let bearer = format!("Bearer {token}");
    let answer = call(
        &s.http_url,
        "POST",
        "/veza.auth.AuthService/GetUserInfo",
        &[
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
            ("authorization", &bearer),
        ],
        envelope(0, &GetUserInfoRequest::default().encode_to_vec()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "application/grpc-web+proto");
    let body = &answer.body;
    assert_eq!(body[0], 0, "a data frame first");
    let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    let me = GetUserInfoResponse::decode(&body[5..5 + len]).unwrap();
    assert_eq!(me.user_info.unwrap().username, "webport");
    let trailer = &body[5 + len..];
    assert_eq!(trailer[0], 0x80, "then the trailers");
    assert!(String::from_utf8_lossy(&trailer[5..]).contains("grpc-status:0"));
    s.stop().await;
}

/// The README's curl session (`examples/curl/session.sh`) runs as written against `--demo`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_curl_session() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(!veza_tests::require_services(), "curl is required in CI");
        return eprintln!("SKIPPED: curl is not installed");
    }
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| c.demo = true).await else {
        return;
    };
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/curl/session.sh");
    let out = tokio::process::Command::new("bash")
        .arg(script)
        .env("VEZA_HTTP", s.http_url.trim_start_matches("http://"))
        .env("VEZA_FOLLOW_SECONDS", "2")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(r#"me: {"userInfo":{"userId":"1","email":"user@veza.app""#),
        "{stdout}"
    );
    assert!(stdout.contains(r#"sent: {"success":true"#), "{stdout}");
    assert!(
        stdout.contains(
            r#"received: {"messageId":"1","roomId":"1","userId":"1","content":"Hello from curl!""#
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            r#"{"code":"unauthenticated","message":"invalid email or password"} (HTTP 401)"#
        ),
        "{stdout}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_on_the_http_port() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let (_, token) = s.user("h2c").await;
    let channel = tonic::transport::Endpoint::from_shared(s.http_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let me = veza_proto::auth::auth_service_client::AuthServiceClient::new(channel)
        .get_user_info(veza_tests::bearer(&token, GetUserInfoRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.user_info.unwrap().username, "h2c");
    s.stop().await;
}

/// A quiet stream is not an idle connection: a Connect stream on the HTTP port outlives
/// `--idle-timeout` and still delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_connect_stream_outlives_the_idle_timeout() {
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| {
        c.idle_timeout = std::time::Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let (_, token) = s.user("quiet").await;
    let room = s.room(&token).await.to_string();
    let (_, mut messages) = stream(
        &s.http_url,
        "/veza.chat.ChatService/StreamMessages",
        &token,
        json!({"roomId": room}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let sent = unary(
        &s.grpc_url,
        "/veza.chat.ChatService/SendMessage",
        Some(&token),
        json!({"roomId": room, "content": "after the quiet"}),
    )
    .await;
    assert_eq!(sent.status, StatusCode::OK);
    let (flags, msg) = messages.next().await.expect("still open");
    assert_eq!(flags, 0);
    let msg: Value = serde_json::from_slice(&msg).unwrap();
    assert_eq!(msg["content"], "after the quiet");

    // An idle keep-alive connection with nothing open is still closed.
    let addr = s.http_url.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let mut buf = [0u8; 1];
    let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf)
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "closed");
    s.stop().await;
}
