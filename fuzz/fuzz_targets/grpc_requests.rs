//! Fuzz target: arbitrary bytes as the protobuf body of every unary Veza RPC, sent verbatim over
//! real gRPC to a real server (SQLite in a temp dir), so the server's own prost decoding, the
//! handlers' conversions and the domain's validation and storage all see them. Any panic (the
//! process aborts), `INTERNAL`/`UNKNOWN` answer or call that does not end within 10 s is a
//! finding.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use libfuzzer_sys::fuzz_target;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use veza_tests::{Backend, TestServer};

/// Every unary method (server streams and client streams are not covered here).
const METHODS: &[&str] = &[
    "/veza.auth.AuthService/Authenticate",
    "/veza.auth.AuthService/ValidateToken",
    "/veza.auth.AuthService/RefreshToken",
    "/veza.auth.AuthService/RevokeToken",
    "/veza.auth.AuthService/GetUserInfo",
    "/veza.auth.AuthService/Register",
    "/veza.auth.AuthService/CreateApiKey",
    "/veza.auth.AuthService/ListApiKeys",
    "/veza.auth.AuthService/RevokeApiKey",
    "/veza.chat.ChatService/SendMessage",
    "/veza.chat.ChatService/GetMessages",
    "/veza.chat.ChatService/CreateRoom",
    "/veza.chat.ChatService/JoinRoom",
    "/veza.chat.ChatService/LeaveRoom",
    "/veza.stream.StreamService/UploadAudio",
    "/veza.stream.StreamService/GetStreamInfo",
    "/veza.stream.StreamService/StartStream",
    "/veza.stream.StreamService/StopStream",
    "/veza.analytics.AnalyticsService/TrackEvent",
    "/veza.analytics.AnalyticsService/GetAnalytics",
    "/veza.analytics.AnalyticsService/GetMetrics",
    "/veza.notification.NotificationService/SendNotification",
    "/veza.notification.NotificationService/GetNotifications",
    "/veza.notification.NotificationService/MarkAsRead",
];

struct World {
    rt: tokio::runtime::Runtime,
    _server: TestServer,
    channel: Channel,
    user: String,
    admin: String,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (server, channel, user, admin) = rt.block_on(async {
            let server = TestServer::start(Backend::Sqlite).await.expect("sqlite");
            let (_, user) = server.user("fuzz").await;
            let (_, admin) = server.admin().await;
            let channel = server.channel().await;
            (server, channel, user, admin)
        });
        World {
            rt,
            _server: server,
            channel,
            user,
            admin,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let [method, who, body @ ..] = data else {
        return;
    };
    let w = world();
    let path = METHODS[usize::from(*method) % METHODS.len()];
    let token = match who % 3 {
        0 => None,
        1 => Some(&w.user),
        _ => Some(&w.admin),
    };
    let mut req = Request::new(Bytes::copy_from_slice(body));
    if let Some(t) = token {
        let v = format!("Bearer {t}").parse().expect("ascii token");
        req.metadata_mut().insert("authorization", v);
    }
    let answer = w.rt.block_on(async {
        let mut grpc = tonic::client::Grpc::new(w.channel.clone());
        grpc.ready().await.expect("channel ready");
        let call = grpc.unary(req, http::uri::PathAndQuery::from_static(path), Raw);
        tokio::time::timeout(Duration::from_secs(10), call).await
    });
    let Ok(answer) = answer else {
        panic!("{path} did not answer within 10 s");
    };
    if let Err(status) = answer {
        assert!(
            !matches!(status.code(), Code::Internal | Code::Unknown),
            "{path} answered {status:?}"
        );
    }
});

/// Sends and receives message bodies as they are.
#[derive(Clone, Copy)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
