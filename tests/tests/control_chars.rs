//! Control characters (SPEC §13): a NUL or another control character in any stored string is
//! `INVALID_ARGUMENT` naming the field, on both backends, and never costs other callers their
//! writes; the batch writers isolate a row the database refuses instead of failing the batch.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use veza_control_plane::{bus::Bus, domain::chat::MessageWriter};
use veza_proto::{
    analytics::{
        GetAnalyticsRequest, TrackEventRequest, analytics_service_client::AnalyticsServiceClient,
    },
    auth::{AuthenticateRequest, CreateApiKeyRequest, RegisterRequest},
    chat::{CreateRoomRequest, SendMessageRequest, chat_service_client::ChatServiceClient},
    notification::{
        SendNotificationRequest, notification_service_client::NotificationServiceClient,
    },
    stream::{UploadAudioRequest, stream_service_client::StreamServiceClient},
};
use veza_storage::{BucketQuery, EventRecord, NewMessage, NewRoom};
use veza_tests::{Backend, TestServer, bearer, on_both_backends};

fn invalid<T: std::fmt::Debug>(r: Result<T, Status>, field: &str) {
    let e = r.expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
    assert!(e.message().starts_with(field), "{field}: {}", e.message());
}

fn message(room_id: i64, content: &str) -> SendMessageRequest {
    SendMessageRequest {
        room_id,
        content: content.into(),
        ..Default::default()
    }
}

/// One NUL in one user's message: that call is `INVALID_ARGUMENT`, 50 concurrent messages from
/// another user all succeed.
async fn nul_in_one_message_fails_only_that_call(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, alice) = s.user("alice").await;
    let (_, bob) = s.user("bob").await;
    let mut c = ChatServiceClient::new(s.channel().await);
    let (ra, rb) = (s.room(&alice).await, s.room(&bob).await);
    for round in 0..3 {
        let mut sends = Vec::new();
        for i in 0..50 {
            let mut c = c.clone();
            let bob = bob.clone();
            sends.push(tokio::spawn(async move {
                c.send_message(bearer(&bob, message(rb, &format!("{round}:{i}"))))
                    .await
            }));
        }
        let bad = c
            .send_message(bearer(&alice, message(ra, "nul \0 here")))
            .await;
        invalid(bad, "content");
        for send in sends {
            send.await
                .unwrap()
                .expect("the other user's message is stored");
        }
    }
    // Newlines and tabs are fine in message bodies.
    c.send_message(bearer(&alice, message(ra, "two\nlines\tand a tab")))
        .await
        .unwrap();
    s.stop().await;
}

/// Every stored string refuses control characters, naming the field.
async fn control_characters_are_refused_everywhere(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, admin) = s.admin().await;
    let (alice, alice_t) = s.user("alice").await;
    let mut chat = ChatServiceClient::new(s.channel().await);
    let bad_room = |name: &str, description: &str| {
        bearer(
            &alice_t,
            CreateRoomRequest {
                name: name.into(),
                description: description.into(),
                ..Default::default()
            },
        )
    };
    invalid(chat.create_room(bad_room("a\0b", "")).await, "name");
    invalid(chat.create_room(bad_room("a\u{1b}[2J", "")).await, "name");
    invalid(
        chat.create_room(bad_room("ok", "d\u{7}")).await,
        "description",
    );
    let r = s.room(&alice_t).await;
    invalid(
        chat.send_message(bearer(&alice_t, message(r, "bell \u{7}")))
            .await,
        "content",
    );

    let mut auth = s.auth().await;
    invalid(
        auth.register(RegisterRequest {
            email: "x@example.com".into(),
            password: "correct horse battery".into(),
            first_name: "N\0".into(),
            ..Default::default()
        })
        .await,
        "first_name",
    );
    invalid(
        auth.authenticate(AuthenticateRequest {
            email: "alice@example.com".into(),
            password: "correct horse battery".into(),
            device_id: "dev\0".into(),
            ..Default::default()
        })
        .await,
        "device_id",
    );
    invalid(
        auth.create_api_key(bearer(
            &admin,
            CreateApiKeyRequest {
                name: "k\0".into(),
                scopes: vec!["admin".into()],
            },
        ))
        .await,
        "name",
    );

    let mut notes = NotificationServiceClient::new(s.channel().await);
    let note = |title: &str, body: &str, data: (&str, &str)| {
        bearer(
            &admin,
            SendNotificationRequest {
                user_ids: vec![alice],
                r#type: "system".into(),
                title: title.into(),
                body: body.into(),
                data: HashMap::from([(data.0.to_string(), data.1.to_string())]),
            },
        )
    };
    invalid(
        notes.send_notification(note("t\0", "b", ("k", "v"))).await,
        "title",
    );
    invalid(
        notes.send_notification(note("t", "b\0", ("k", "v"))).await,
        "body",
    );
    invalid(
        notes.send_notification(note("t", "b", ("k\0", "v"))).await,
        "data",
    );
    invalid(
        notes.send_notification(note("t", "b", ("k", "v\0"))).await,
        "data",
    );

    let mut an = AnalyticsServiceClient::new(s.channel().await);
    let ev = |props: (&str, &str), source: &str| {
        bearer(
            &alice_t,
            TrackEventRequest {
                event_type: "click".into(),
                properties: HashMap::from([(props.0.to_string(), props.1.to_string())]),
                source: source.into(),
                ..Default::default()
            },
        )
    };
    invalid(an.track_event(ev(("k", "v\0"), "")).await, "properties");
    invalid(an.track_event(ev(("k\0", "v"), "")).await, "properties");
    invalid(an.track_event(ev(("k", "v"), "web\0")).await, "source");

    let mut st = StreamServiceClient::new(s.channel().await);
    let track = |title: &str, genre: &str| {
        bearer(
            &alice_t,
            UploadAudioRequest {
                title: title.into(),
                genre: genre.into(),
                file_size: 100,
                ..Default::default()
            },
        )
    };
    invalid(st.upload_audio(track("t\0", "")).await, "title");
    invalid(st.upload_audio(track("t", "g\0")).await, "genre");
    s.stop().await;
}

/// 300 events and 3 with a NUL in a property: the 3 are refused, the 300 are all counted.
async fn analytics_300_and_3_bad(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, admin) = s.admin().await;
    let (_, alice) = s.user("alice").await;
    let c = AnalyticsServiceClient::new(s.channel().await);
    let kind = "ctl_test";
    let mut calls = Vec::new();
    for i in 0..303 {
        let mut c = c.clone();
        let token = alice.clone();
        let value = if i % 101 == 50 {
            format!("bad\0{i}")
        } else {
            format!("v{i}")
        };
        calls.push(tokio::spawn(async move {
            let req = TrackEventRequest {
                event_type: kind.into(),
                properties: HashMap::from([("p".to_string(), value)]),
                ..Default::default()
            };
            c.track_event(bearer(&token, req)).await
        }));
    }
    let mut refused = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 3);
    let now = veza_storage::now_ms();
    let q = GetAnalyticsRequest {
        event_type: kind.into(),
        from: Some(prost_types::Timestamp {
            seconds: (now - 3_600_000) / 1000,
            nanos: 0,
        }),
        to: Some(prost_types::Timestamp {
            seconds: (now + 3_600_000) / 1000,
            nanos: 0,
        }),
        interval_seconds: 3600,
        group_by: String::new(),
    };
    let mut c = c;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let total = c
            .get_analytics(bearer(&admin, q.clone()))
            .await
            .unwrap()
            .into_inner()
            .total_count;
        if total == 300 {
            break;
        }
        assert!(total < 300, "{total} counted");
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {total} of 300 counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
}

fn record(id: i64, ts: i64, value: &str) -> EventRecord {
    EventRecord {
        id,
        event_type: "iso".into(),
        user_id: 1,
        ts,
        source: String::new(),
        properties: vec![("p".into(), value.into())],
    }
}

async fn stored(db: &veza_storage::Db, ts: i64) -> i64 {
    let q = BucketQuery {
        event_type: "iso",
        from: ts - 1000,
        to: ts + 1000,
        interval_ms: 10_000,
        group_by: None,
    };
    db.event_buckets(&q)
        .await
        .unwrap()
        .iter()
        .map(|r| r.count)
        .sum()
}

/// The analytics batch writer, fed bad rows directly (past validation): a duplicate id on both
/// backends, a NUL on PostgreSQL. Only those rows are left out; every other one is stored.
async fn event_batches_isolate_bad_rows(b: Backend) {
    // These hand-picked ids read as ancient to the retention sweep (it prunes by id): keep all.
    let Some(s) = TestServer::start_with(b, |c| c.analytics_retention_days = 0).await else {
        return;
    };
    let db = s.db();
    let ts = veza_storage::now_ms();
    db.insert_events(&[record(1_000_007, ts, "first")])
        .await
        .unwrap();
    let mut batch: Vec<EventRecord> = (0..200).map(|i| record(2_000_000 + i, ts, "ok")).collect();
    batch[17] = record(1_000_007, ts, "duplicate id");
    let mut bad = vec![1_000_007];
    if b == Backend::Postgres {
        batch[150] = record(3_000_000, ts, "nul\0");
        bad.push(3_000_000);
        assert!(db.insert_events(&batch).await.unwrap_err().is_bad_row());
    }
    let mut refused = db.insert_events_isolating(&batch).await.unwrap();
    refused.sort();
    assert_eq!(refused, bad);
    assert_eq!(stored(&db, ts).await, 1 + 200 - bad.len() as i64);
    s.stop().await;
}

/// The chat writer, fed a NUL directly (past validation) among 50 concurrent messages: on
/// PostgreSQL only that one fails (`INVALID_ARGUMENT`), on SQLite all are stored.
async fn message_batches_isolate_bad_rows(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let db = s.db();
    let (alice, _) = s.user("alice").await;
    let room = db
        .create_room(&NewRoom {
            name: "w",
            description: "",
            is_private: false,
            owner_id: alice,
            member_ids: &[],
        })
        .await
        .unwrap();
    let writer = MessageWriter::start(db.clone(), Bus::local());
    let msg = |content: String| NewMessage {
        room_id: room.id,
        user_id: alice,
        content,
        message_type: "text".into(),
        metadata: Vec::new(),
        reply_to_id: 0,
    };
    let mut sends = Vec::new();
    for i in 0..51 {
        let w = writer.clone();
        let content = if i == 25 {
            "bad \0".to_string()
        } else {
            format!("m{i}")
        };
        let m = msg(content);
        sends.push(tokio::spawn(async move { w.write(m).await }));
    }
    let mut failed = 0;
    for (i, send) in sends.into_iter().enumerate() {
        match send.await.unwrap() {
            Ok(r) => {
                r.expect("stored");
            }
            Err(e) => {
                assert_eq!(i, 25, "{e}");
                assert!(matches!(
                    e,
                    veza_control_plane::domain::DomainError::InvalidArgument {
                        field: "content",
                        ..
                    }
                ));
                failed += 1;
            }
        }
    }
    let want = if b == Backend::Postgres { 1 } else { 0 };
    assert_eq!(failed, want);
    let stored = db.messages_after(room.id, 0, 100).await.unwrap();
    assert_eq!(stored.len(), 51 - want);
    s.stop().await;
}

on_both_backends!(
    nul_in_one_message_fails_only_that_call,
    control_characters_are_refused_everywhere,
    analytics_300_and_3_bad,
    event_batches_isolate_bad_rows,
    message_batches_isolate_bad_rows,
);
