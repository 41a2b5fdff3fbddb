//! Credentials hold for the whole life of a stream (SPEC §13): a revoked session, an expired
//! token or a revoked API key ends open server, bidirectional and client streams with
//! `UNAUTHENTICATED` within seconds, on both backends.

use std::time::Duration;

use futures::StreamExt;
use tonic::{Code, Status, Streaming};
use veza_proto::{
    analytics::{StreamEventsRequest, analytics_service_client::AnalyticsServiceClient},
    auth::{CreateApiKeyRequest, RevokeApiKeyRequest, RevokeTokenRequest},
    chat::{ChatMessage, CreateRoomRequest, chat_service_client::ChatServiceClient},
    notification::{
        StreamNotificationsRequest, notification_service_client::NotificationServiceClient,
    },
    stream::{AudioChunk, UploadAudioRequest, stream_service_client::StreamServiceClient},
};
use veza_tests::{Backend, TestServer, api_key, bearer, on_both_backends};

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
    s.register("alice@example.com", "correct horse battery").await;
    let (token, refresh) = s.login("alice@example.com", "correct horse battery").await;
    let mut chat = ChatServiceClient::new(s.channel().await);
    let room = chat
        .create_room(bearer(
            &token,
            CreateRoomRequest {
                name: "r".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .room
        .unwrap()
        .room_id;
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
    assert_eq!(ending(&mut chat_stream, WITHIN).await.code(), Code::Unauthenticated);
    assert_eq!(ending(&mut notes, WITHIN).await.code(), Code::Unauthenticated);
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
    assert_eq!(ending(&mut events, WITHIN).await.code(), Code::Unauthenticated);
    s.stop().await;
}

/// A client stream (an upload in progress) is cut too, even while the client sends nothing.
async fn revoked_session_cuts_an_upload(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    s.register("carol@example.com", "correct horse battery").await;
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
    let ended = tokio::time::timeout(WITHIN, call)
        .await
        .expect("the upload is still open")
        .unwrap();
    assert_eq!(ended.unwrap_err().code(), Code::Unauthenticated);
    drop(tx);
    s.stop().await;
}

on_both_backends!(
    revoked_session_ends_chat_and_notification_streams,
    expired_token_ends_a_stream,
    revoked_api_key_ends_its_stream,
    revoked_session_cuts_an_upload,
);
