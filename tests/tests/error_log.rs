//! Every call that fails is logged exactly once, with its method, code, message, caller and peer,
//! at `info` for the client's faults, and counted once in `grpc_server_handled_total` (docs/
//! ERRORS.md). The server's JSON log is captured by the process-wide subscriber of this test
//! binary; the tests run one at a time so that each sees only its own calls.

use std::{
    collections::HashMap,
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::{Code, Request, Status, transport::Channel};
use veza_proto::{
    analytics::{TrackEventRequest, analytics_service_client::AnalyticsServiceClient},
    auth::{
        AuthenticateRequest, CreateApiKeyRequest, GetUserInfoRequest, RegisterRequest,
        RevokeTokenRequest,
    },
    chat::{JoinRoomRequest, chat_service_client::ChatServiceClient},
    notification::{
        StreamNotificationsRequest, notification_service_client::NotificationServiceClient,
    },
    stream::{GetStreamInfoRequest, stream_service_client::StreamServiceClient},
};
use veza_tests::{Backend, TestServer, api_key, bearer, on_both_backends};

/// The server's log lines, as JSON, since the binary started.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// The `call failed` lines written since byte `from`.
    fn failures_since(&self, from: usize) -> Vec<Value> {
        let all = self.0.lock().unwrap();
        String::from_utf8_lossy(&all[from..])
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "call failed")
            .collect()
    }
}

/// Installs the capturing subscriber once (before any server starts, so `VEZA_TEST_LOG` cannot
/// take its place).
fn logs() -> Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
            .with_writer(move || writer.clone())
            .init();
        captured
    })
    .clone()
}

/// One test at a time: the log is shared by the whole binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `grpc_server_handled_total` by (method path, code), from `/metrics`.
async fn handled(s: &TestServer) -> HashMap<(String, String), f64> {
    let addr = s.http_url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.unwrap();
    let (_, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut counts = HashMap::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("grpc_server_handled_total{") else {
            continue;
        };
        let (labels, value) = rest.rsplit_once("} ").unwrap();
        let labels: HashMap<&str, &str> = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        let path = format!("/{}/{}", labels["grpc_service"], labels["grpc_method"]);
        let key = (path, labels["grpc_code"].to_string());
        counts.insert(key, value.parse::<f64>().unwrap());
    }
    counts
}

/// What one failure should look like in the log and the metrics.
struct Expect<'a> {
    /// The method path; the metric's labels for a path the server does not serve.
    method: &'a str,
    metric_method: &'a str,
    code: Code,
    code_name: &'a str,
    caller: &'a str,
    level: &'a str,
}

impl<'a> Expect<'a> {
    fn new(method: &'a str, code: Code, code_name: &'a str, caller: &'a str) -> Expect<'a> {
        Expect {
            method,
            metric_method: method,
            code,
            code_name,
            caller,
            level: "INFO",
        }
    }
}

/// Runs `call`, which must fail as `e` says; checks that it was counted once and logged once.
/// Returns the status the client saw.
async fn fails_once<T, F>(s: &TestServer, logs: &Captured, e: Expect<'_>, call: F) -> Status
where
    F: std::future::Future<Output = Result<T, Status>>,
    T: std::fmt::Debug,
{
    let key = (e.metric_method.to_string(), e.code_name.to_string());
    let before = handled(s).await.get(&key).copied().unwrap_or(0.0);
    let from = logs.len();
    let status = call.await.expect_err("the call fails");
    assert_eq!(status.code(), e.code, "{status:?}");
    let after = handled(s).await.get(&key).copied().unwrap_or(0.0);
    assert_eq!(after - before, 1.0, "{key:?} counted once");
    let lines = logs.failures_since(from);
    assert_eq!(lines.len(), 1, "logged once: {lines:#?}");
    let line = &lines[0];
    let f = &line["fields"];
    assert_eq!(line["level"], e.level, "{line}");
    assert_eq!(f["method"], e.method, "{line}");
    assert_eq!(f["code"], e.code_name, "{line}");
    assert_eq!(f["status_message"], status.message(), "{line}");
    assert_eq!(f["caller"], e.caller, "{line}");
    assert_eq!(f["peer"], "127.0.0.1", "{line}");
    status
}

async fn failures_are_logged_and_counted_once(b: Backend) {
    let logs = logs();
    let _serial = SERIAL.lock().await;
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (user, token) = s.user("erin").await;
    let (admin, admin_token) = s.admin().await;
    let mut auth = s.auth().await;

    // A successful call writes no failure line.
    let from = logs.len();
    auth.get_user_info(bearer(&token, GetUserInfoRequest { user_id: 0 }))
        .await
        .unwrap();
    assert!(logs.failures_since(from).is_empty());

    let login = "/veza.auth.AuthService/Authenticate";
    let wrong = AuthenticateRequest {
        email: "erin@example.com".into(),
        password: "wrong password".into(),
        ..Default::default()
    };
    let st = fails_once(
        &s,
        &logs,
        Expect::new(login, Code::Unauthenticated, "Unauthenticated", "none"),
        auth.authenticate(wrong),
    )
    .await;
    assert_eq!(st.message(), "invalid email or password");
    // The password is not in the log.
    assert!(!String::from_utf8_lossy(&logs.0.lock().unwrap()).contains("wrong password"));

    let info = "/veza.auth.AuthService/GetUserInfo";
    fails_once(
        &s,
        &logs,
        Expect::new(info, Code::Unauthenticated, "Unauthenticated", "none"),
        auth.get_user_info(GetUserInfoRequest { user_id: 0 }),
    )
    .await;
    let st = fails_once(
        &s,
        &logs,
        Expect::new(info, Code::NotFound, "NotFound", &format!("user:{admin}")),
        auth.get_user_info(bearer(
            &admin_token,
            GetUserInfoRequest { user_id: 999_999 },
        )),
    )
    .await;
    assert_eq!(st.message(), "user 999999 not found");

    let register = "/veza.auth.AuthService/Register";
    let bad = RegisterRequest {
        email: "not an email".into(),
        password: "correct horse battery".into(),
        ..Default::default()
    };
    let st = fails_once(
        &s,
        &logs,
        Expect::new(register, Code::InvalidArgument, "InvalidArgument", "none"),
        auth.register(bad),
    )
    .await;
    assert!(st.message().starts_with("email: "), "{st:?}");

    let me = format!("user:{user}");
    let key = CreateApiKeyRequest {
        name: "k".into(),
        scopes: vec!["users:read".into()],
    };
    let create = "/veza.auth.AuthService/CreateApiKey";
    fails_once(
        &s,
        &logs,
        Expect::new(create, Code::PermissionDenied, "PermissionDenied", &me),
        auth.create_api_key(bearer(&token, key.clone())),
    )
    .await;

    let mut stream = StreamServiceClient::new(s.channel().await);
    let st = fails_once(
        &s,
        &logs,
        Expect::new(
            "/veza.stream.StreamService/GetStreamInfo",
            Code::NotFound,
            "NotFound",
            &me,
        ),
        stream.get_stream_info(bearer(&token, GetStreamInfoRequest { stream_id: 4242 })),
    )
    .await;
    assert_eq!(st.message(), "track 4242 not found");

    let mut chat = ChatServiceClient::new(s.channel().await);
    let st = fails_once(
        &s,
        &logs,
        Expect::new(
            "/veza.chat.ChatService/JoinRoom",
            Code::NotFound,
            "NotFound",
            &me,
        ),
        chat.join_room(bearer(&token, JoinRoomRequest { room_id: 777 })),
    )
    .await;
    assert_eq!(st.message(), "room 777 not found");

    // An API key is named by its id.
    let created = auth
        .create_api_key(bearer(&admin_token, key))
        .await
        .unwrap()
        .into_inner();
    let key_id = created.info.unwrap().key_id;
    let event = TrackEventRequest {
        event_type: "play".into(),
        user_id: user,
        ..Default::default()
    };
    let mut analytics = AnalyticsServiceClient::new(s.channel().await);
    fails_once(
        &s,
        &logs,
        Expect::new(
            "/veza.analytics.AnalyticsService/TrackEvent",
            Code::PermissionDenied,
            "PermissionDenied",
            &format!("api_key:{key_id}"),
        ),
        analytics.track_event(api_key(&created.api_key, event)),
    )
    .await;

    // A path the server does not serve: logged by its path, counted as `unknown`.
    let mut raw = tonic::client::Grpc::new(s.channel().await);
    raw.ready().await.unwrap();
    let path = "/nope.Nowhere/Missing";
    let unknown = raw.unary(
        Request::new(()),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        veza_proto::codec::Codec::<(), ()>::default(),
    );
    let mut expect = Expect::new(path, Code::Unimplemented, "Unimplemented", "none");
    expect.metric_method = "/unknown/unknown";
    fails_once(&s, &logs, expect, unknown).await;
    s.stop().await;
}

/// A status that comes in the trailers at the end of a stream is logged once too, with the
/// caller of the stream.
async fn a_stream_ended_by_revocation_is_logged_once(b: Backend) {
    let logs = logs();
    let _serial = SERIAL.lock().await;
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    s.register("finn@example.com", "correct horse battery")
        .await;
    let (token, refresh) = s.login("finn@example.com", "correct horse battery").await;
    let user = s
        .auth()
        .await
        .get_user_info(bearer(&token, GetUserInfoRequest { user_id: 0 }))
        .await
        .unwrap()
        .into_inner()
        .user_info
        .unwrap()
        .user_id;
    let channel: Channel = s.channel().await;
    let mut notes = NotificationServiceClient::new(channel);
    let opened = notes
        .stream_notifications(bearer(&token, StreamNotificationsRequest::default()))
        .await;
    let mut feed = opened.unwrap().into_inner();
    let method = "/veza.notification.NotificationService/StreamNotifications";
    let ended = async {
        s.auth()
            .await
            .revoke_token(bearer(
                &token,
                RevokeTokenRequest {
                    token: refresh,
                    token_type_hint: "refresh_token".into(),
                },
            ))
            .await
            .unwrap();
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match feed.next().await {
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err::<(), Status>(e),
                    None => return Ok(()),
                }
            }
        });
        end.await.expect("the stream ends")
    };
    let caller = format!("user:{user}");
    let st = fails_once(
        &s,
        &logs,
        Expect::new(method, Code::Unauthenticated, "Unauthenticated", &caller),
        ended,
    )
    .await;
    assert!(st.message().contains("revoked"), "{st:?}");
    s.stop().await;
}

on_both_backends!(
    failures_are_logged_and_counted_once,
    a_stream_ended_by_revocation_is_logged_once,
);
