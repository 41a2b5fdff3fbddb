//! Authorization gaps (SPEC §4, §13): API keys act only within their scopes, nobody is put in a
//! room without consent, private media of others do not exist, and concurrent uses of one
//! refresh token end the same way on both backends.

use tonic::{Code, transport::Channel};
use veza_proto::{
    auth::RefreshTokenRequest,
    chat::{
        CreateRoomRequest, JoinRoomRequest, SendMessageRequest,
        chat_service_client::ChatServiceClient,
    },
    stream::{
        AudioChunk, StopStreamRequest, StreamAnalyticsRequest, UploadAudioRequest,
        stream_service_client::StreamServiceClient,
    },
};
use veza_tests::{Backend, TestServer, api_key, bearer, on_both_backends};

async fn stream_client(s: &TestServer) -> StreamServiceClient<Channel> {
    StreamServiceClient::new(s.channel().await)
}

fn track(owner: i64, private: bool) -> UploadAudioRequest {
    UploadAudioRequest {
        user_id: owner,
        title: "t".into(),
        file_size: 4096,
        is_private: private,
        ..Default::default()
    }
}

fn chunk(id: i64) -> AudioChunk {
    AudioChunk {
        stream_id: id,
        chunk_index: 0,
        audio_data: vec![1u8; 1024].into(),
        ..Default::default()
    }
}

async fn uploads_need_stream_publish(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, admin) = s.admin().await;
    let (alice, alice_t) = s.user("alice").await;
    let mut c = stream_client(&s).await;
    for scopes in [&["analytics:read"][..], &["analytics:write", "chat:write"]] {
        let k = s.new_api_key(&admin, "svc", scopes).await;
        let e = c
            .upload_audio(api_key(&k, track(alice, false)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{scopes:?}: {e:?}");
        // Nor may it append to a user's track being uploaded.
        let id = c
            .upload_audio(bearer(&alice_t, track(0, false)))
            .await
            .unwrap()
            .into_inner()
            .track_id;
        let e = c
            .upload_audio_chunks(api_key(&k, tokio_stream::iter(vec![chunk(id)])))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{scopes:?}: {e:?}");
        let row = s.db().media(id).await.unwrap().unwrap();
        assert_eq!(row.status, "uploading");
    }
    let publisher = s.new_api_key(&admin, "svc", &["stream:publish"]).await;
    let r = c
        .upload_audio(api_key(&publisher, track(alice, false)))
        .await
        .unwrap()
        .into_inner();
    assert!(r.track_id > 0);
    s.stop().await;
}

async fn users_append_only_to_their_own_tracks(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, alice_t) = s.user("alice").await;
    let (_, bob_t) = s.user("bob").await;
    let mut c = stream_client(&s).await;
    for (private, code) in [(false, Code::PermissionDenied), (true, Code::NotFound)] {
        let id = c
            .upload_audio(bearer(&alice_t, track(0, private)))
            .await
            .unwrap()
            .into_inner()
            .track_id;
        let e = c
            .upload_audio_chunks(bearer(&bob_t, tokio_stream::iter(vec![chunk(id)])))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "private {private}: {e:?}");
        assert_eq!(s.db().media(id).await.unwrap().unwrap().chunks_received, 0);
    }
    s.stop().await;
}

async fn private_media_of_others_are_not_found(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, alice_t) = s.user("alice").await;
    let (_, bob_t) = s.user("bob").await;
    let mut c = stream_client(&s).await;
    let id = c
        .upload_audio(bearer(&alice_t, track(0, true)))
        .await
        .unwrap()
        .into_inner()
        .track_id;
    let e = c
        .stop_stream(bearer(&bob_t, StopStreamRequest { stream_id: id }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = c
        .stream_analytics(bearer(
            &bob_t,
            StreamAnalyticsRequest {
                stream_id: id,
                interval_ms: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    // The owner is told what it is.
    let e = c
        .stop_stream(bearer(&alice_t, StopStreamRequest { stream_id: id }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    s.stop().await;
}

async fn create_room_invites_instead_of_adding(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, alice_t) = s.user("alice").await;
    let (bob, bob_t) = s.user("bob").await;
    let (_, carol_t) = s.user("carol").await;
    let mut c = ChatServiceClient::new(s.channel().await);
    let room = c
        .create_room(bearer(
            &alice_t,
            CreateRoomRequest {
                name: "secret".into(),
                is_private: true,
                member_ids: vec![bob],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .room
        .unwrap();
    assert_eq!(room.member_count, 1);
    assert!(!s.db().is_member(room.room_id, bob).await.unwrap());
    let send = |t: &str| {
        bearer(
            t,
            SendMessageRequest {
                room_id: room.room_id,
                content: "hi".into(),
                ..Default::default()
            },
        )
    };
    assert_eq!(
        c.send_message(send(&bob_t)).await.unwrap_err().code(),
        Code::NotFound
    );
    // Someone not invited does not even see the room; the invitee accepts by joining.
    let join = |t: &str| {
        bearer(
            t,
            JoinRoomRequest {
                room_id: room.room_id,
            },
        )
    };
    assert_eq!(
        c.join_room(join(&carol_t)).await.unwrap_err().code(),
        Code::NotFound
    );
    let joined = c.join_room(join(&bob_t)).await.unwrap().into_inner();
    assert_eq!(joined.room.unwrap().member_count, 2);
    c.send_message(send(&bob_t)).await.unwrap();
    s.stop().await;
}

/// Parallel `RefreshToken` calls with one token: exactly one rotates, the others are reuse, and
/// the session is revoked (the winner's new refresh token is dead too), on both backends.
async fn concurrent_refresh_is_reuse(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    for round in 0..3 {
        let email = format!("r{round}@example.com");
        s.register(&email, "correct horse battery").await;
        let (_, refresh) = s.login(&email, "correct horse battery").await;
        let mut calls = Vec::new();
        for _ in 0..8 {
            let mut a = s.auth().await;
            let token = refresh.clone();
            calls.push(tokio::spawn(async move {
                a.refresh_token(RefreshTokenRequest {
                    refresh_token: token,
                })
                .await
            }));
        }
        let mut won = Vec::new();
        for call in calls {
            match call.await.unwrap() {
                Ok(r) => won.push(r.into_inner().refresh_token),
                Err(e) => assert_eq!(e.code(), Code::Unauthenticated, "{e:?}"),
            }
        }
        assert_eq!(won.len(), 1, "exactly one rotation wins");
        let e = s
            .auth()
            .await
            .refresh_token(RefreshTokenRequest {
                refresh_token: won.remove(0),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "the session is revoked");
    }
    s.stop().await;
}

on_both_backends!(
    uploads_need_stream_publish,
    users_append_only_to_their_own_tracks,
    private_media_of_others_are_not_found,
    create_room_invites_instead_of_adding,
    concurrent_refresh_is_reuse,
);
