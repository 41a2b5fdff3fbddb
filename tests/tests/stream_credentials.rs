//! Credentials hold for the whole life of a stream (SPEC §13): a revoked session, an expired
//! token or a revoked API key ends open server, bidirectional and client streams with
//! `UNAUTHENTICATED` within seconds, on both backends.

use std::time::Duration;

use futures::StreamExt;
use tonic::{Code, Status, Streaming};
use veza_proto::{
    analytics::{StreamEventsRequest, analytics_service_client::AnalyticsServiceClient},
    auth::{CreateApiKeyRequest, RevokeApiKeyRequest, RevokeTokenRequest},
    chat::{
        ChatMessage, JoinRoomRequest, LeaveRoomRequest, SendMessageRequest, StreamMessagesRequest,
        StreamRoomActivityRequest, chat_service_client::ChatServiceClient,
    },
    notification::{
        StreamNotificationsRequest, notification_service_client::NotificationServiceClient,
    },
    stream::{
        AudioChunk, GetStreamInfoRequest, StreamAudioRequest, UploadAudioRequest,
        stream_service_client::StreamServiceClient,
    },
};
use veza_tests::{Backend, TestServer, api_key, bearer, on_air, on_both_backends};

const WITHIN: Duration = Duration::from_secs(5);

/// Waits (at most `within`) for `stream` to end, and returns how it ended.
async fn ending<T>(stream: &mut Streaming<T>, within: Duration) -> Status {
    let end = tokio::time::timeout(within, async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return e,
                None => return Status::ok("ended without an error"),
            }
        }
    })
    .await;
    end.expect("the stream is still open")
}

async fn revoked_session_ends_chat_and_notification_streams(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    s.register("alice@example.com", "correct horse battery")
        .await;
    let (token, refresh) = s.login("alice@example.com", "correct horse battery").await;
    let mut chat = ChatServiceClient::new(s.channel().await);
    let room = s.room(&token).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<ChatMessage>(4);
    let mut chat_stream = chat
        .chat_stream(bearer(
            &token,
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await
        .unwrap()
        .into_inner();
    tx.send(ChatMessage {
        room_id: room,
        content: "before".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let echoed = chat_stream.next().await.unwrap().unwrap();
    assert_eq!(echoed.content, "before");
    let mut notes = NotificationServiceClient::new(s.channel().await)
        .stream_notifications(bearer(&token, StreamNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner();

    revoke_session(&s, &token, refresh).await;
    assert_eq!(
        ending(&mut chat_stream, WITHIN).await.code(),
        Code::Unauthenticated
    );
    assert_eq!(
        ending(&mut notes, WITHIN).await.code(),
        Code::Unauthenticated
    );
    s.stop().await;
}

async fn expired_token_ends_a_stream(b: Backend) {
    let Some(s) = TestServer::start_with(b, |c| c.access_token_ttl = Duration::from_secs(2)).await
    else {
        return;
    };
    let (_, token) = s.user("bob").await;
    let mut notes = NotificationServiceClient::new(s.channel().await)
        .stream_notifications(bearer(&token, StreamNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let e = ending(&mut notes, Duration::from_secs(2) + WITHIN).await;
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("expired"), "{}", e.message());
    s.stop().await;
}

async fn revoked_api_key_ends_its_stream(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, admin) = s.admin().await;
    let created = s
        .auth()
        .await
        .create_api_key(bearer(
            &admin,
            CreateApiKeyRequest {
                name: "reader".into(),
                scopes: vec!["analytics:read".into()],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut events = AnalyticsServiceClient::new(s.channel().await)
        .stream_events(api_key(&created.api_key, StreamEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    s.auth()
        .await
        .revoke_api_key(bearer(
            &admin,
            RevokeApiKeyRequest {
                key_id: created.info.unwrap().key_id,
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        ending(&mut events, WITHIN).await.code(),
        Code::Unauthenticated
    );
    s.stop().await;
}

/// A client stream (an upload in progress) is cut too, even while the client sends nothing.
async fn revoked_session_cuts_an_upload(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    s.register("carol@example.com", "correct horse battery")
        .await;
    let (token, refresh) = s.login("carol@example.com", "correct horse battery").await;
    let mut c = StreamServiceClient::new(s.channel().await);
    let id = c
        .upload_audio(bearer(
            &token,
            UploadAudioRequest {
                title: "cut".into(),
                file_size: 1 << 20,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .track_id;
    let (tx, rx) = tokio::sync::mpsc::channel::<AudioChunk>(4);
    tx.send(AudioChunk {
        stream_id: id,
        chunk_index: 0,
        audio_data: vec![0u8; 1024].into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let call = tokio::spawn({
        let token = token.clone();
        async move {
            c.upload_audio_chunks(bearer(
                &token,
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    revoke_session(&s, &token, refresh).await;
    let ended = tokio::time::timeout(WITHIN, call)
        .await
        .expect("the upload is still open")
        .unwrap();
    assert_eq!(ended.unwrap_err().code(), Code::Unauthenticated);
    drop(tx);
    s.stop().await;
}

/// Leaving a room ends the leaver's `StreamMessages` and `StreamRoomActivity` for it (its own
/// `left` is the last activity it sees); the other members' feeds go on.
async fn leaving_a_room_ends_its_feeds(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, alice) = s.user("alice").await;
    let (bob_id, bob) = s.user("bob").await;
    let mut c = ChatServiceClient::new(s.channel().await);
    let room = s.room(&alice).await;
    c.join_room(bearer(&bob, JoinRoomRequest { room_id: room }))
        .await
        .unwrap();
    let feed = |t: &str| {
        bearer(
            t,
            StreamMessagesRequest {
                room_id: room,
                last_message_id: 0,
            },
        )
    };
    let mut bob_messages = c.stream_messages(feed(&bob)).await.unwrap().into_inner();
    let mut alice_messages = c.stream_messages(feed(&alice)).await.unwrap().into_inner();
    let mut bob_activity = c
        .stream_room_activity(bearer(&bob, StreamRoomActivityRequest { room_id: room }))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.leave_room(bearer(&bob, LeaveRoomRequest { room_id: room }))
        .await
        .unwrap();
    let end = tokio::time::timeout(WITHIN, async {
        let mut last = None;
        while let Some(a) = bob_activity.next().await {
            last = Some(a.unwrap());
        }
        last
    })
    .await
    .expect("the leaver's activity feed is still open")
    .expect("its own leave was seen");
    assert_eq!((end.activity_type.as_str(), end.user_id), ("left", bob_id));
    let end = tokio::time::timeout(WITHIN, bob_messages.next())
        .await
        .expect("the leaver's message feed is still open");
    assert!(end.is_none(), "{end:?}");
    c.send_message(bearer(
        &alice,
        SendMessageRequest {
            room_id: room,
            content: "still here".into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let m = tokio::time::timeout(WITHIN, alice_messages.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m.content, "still here");
    s.stop().await;
}

async fn revoke_session(s: &TestServer, token: &str, refresh: String) {
    s.auth()
        .await
        .revoke_token(bearer(
            token,
            RevokeTokenRequest {
                token: refresh,
                token_type_hint: "refresh_token".into(),
            },
        ))
        .await
        .unwrap();
}

async fn direct_listeners(s: &TestServer) -> f64 {
    let url = format!("{}/metrics", s.http_url);
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut body = String::new();
    sock.read_to_string(&mut body).await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("veza_live_direct_listeners_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Live: a revoked session ends a listener served on the direct-write path and the producer's
/// `UploadAudioChunks`, both `UNAUTHENTICATED`; the listener's connection keeps working.
async fn revoked_sessions_end_live_listening_and_publishing(b: Backend) {
    let Some(s) = TestServer::start_with(b, |c| c.live_chunk_ms = 100).await else {
        return;
    };
    s.register("dj@example.com", "correct horse battery").await;
    s.register("fan@example.com", "correct horse battery").await;
    let (dj, dj_refresh) = s.login("dj@example.com", "correct horse battery").await;
    let (fan, fan_refresh) = s.login("fan@example.com", "correct horse battery").await;
    let mut c = StreamServiceClient::new(s.channel().await);
    let id = c
        .start_stream(bearer(&dj, on_air()))
        .await
        .unwrap()
        .into_inner()
        .stream_id;
    let (tx, rx) = tokio::sync::mpsc::channel::<AudioChunk>(4);
    let producer = tokio::spawn({
        let (mut c, dj) = (c.clone(), dj.clone());
        async move {
            c.upload_audio_chunks(bearer(&dj, tokio_stream::wrappers::ReceiverStream::new(rx)))
                .await
        }
    });
    let feeder = tokio::spawn(async move {
        for k in 0..600 {
            let chunk = AudioChunk {
                stream_id: id,
                chunk_index: k,
                audio_data: vec![0u8; 19_200].into(),
                sample_rate: 48_000,
                channels: 2,
                codec: "pcm_s16le".into(),
                timestamp: None,
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = direct_listeners(&s).await;
    let channel = s.channel().await;
    let mut lc = StreamServiceClient::new(channel.clone());
    let mut listener = lc
        .stream_audio(bearer(
            &fan,
            StreamAudioRequest {
                track_id: id,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..5 {
        listener.next().await.unwrap().unwrap();
    }
    assert!(
        direct_listeners(&s).await > before,
        "served on the direct path"
    );
    revoke_session(&s, &fan, fan_refresh).await;
    let e = ending(&mut listener, WITHIN).await;
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // The connection the direct writers shared with hyper is still sound.
    let fresh = s.login("fan@example.com", "correct horse battery").await.0;
    lc.get_stream_info(bearer(&fresh, GetStreamInfoRequest { stream_id: id }))
        .await
        .expect("a unary call on the listener's connection");

    revoke_session(&s, &dj, dj_refresh).await;
    let ended = tokio::time::timeout(WITHIN, producer)
        .await
        .expect("the producer is still publishing")
        .unwrap();
    assert_eq!(ended.unwrap_err().code(), Code::Unauthenticated);
    feeder.abort();
    s.stop().await;
}

on_both_backends!(
    revoked_sessions_end_live_listening_and_publishing,
    leaving_a_room_ends_its_feeds,
    revoked_session_ends_chat_and_notification_streams,
    expired_token_ends_a_stream,
    revoked_api_key_ends_its_stream,
    revoked_session_cuts_an_upload,
);
