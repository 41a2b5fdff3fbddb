//! Chat RPCs: rooms, membership, sending, pages, live feeds; success and failure paths on both
//! backends.

use std::time::Duration;

use futures::StreamExt;
use tonic::{Code, Status};
use veza_proto::chat::{chat_service_client::ChatServiceClient, *};
use veza_tests::{Backend, TestServer, bearer, on_both_backends};

type Client = ChatServiceClient<tonic::transport::Channel>;

async fn client(s: &TestServer) -> Client {
    ChatServiceClient::new(s.channel().await)
}

async fn room(c: &mut Client, token: &str, name: &str, private: bool, members: Vec<i64>) -> Room {
    let req = CreateRoomRequest {
        name: name.into(),
        description: "d".into(),
        is_private: private,
        member_ids: members,
    };
    c.create_room(bearer(token, req))
        .await
        .unwrap()
        .into_inner()
        .room
        .unwrap()
}

async fn send(
    c: &mut Client,
    token: &str,
    room_id: i64,
    content: &str,
) -> Result<ChatMessage, Status> {
    let req = SendMessageRequest {
        room_id,
        content: content.into(),
        ..Default::default()
    };
    c.send_message(bearer(token, req))
        .await
        .map(|r| r.into_inner().message.unwrap())
}

fn code<T: std::fmt::Debug>(r: Result<T, Status>) -> Code {
    r.unwrap_err().code()
}

async fn rooms_and_membership(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (alice, a) = s.user("alice").await;
    let (bob, bt) = s.user("bob").await;
    let (_, ct) = s.user("carol").await;
    let mut c = client(&s).await;
    let public = room(&mut c, &a, "lobby", false, vec![]).await;
    assert_eq!(
        (public.owner_id, public.member_count, public.is_private),
        (alice, 1, false)
    );
    let joined = c
        .join_room(bearer(
            &bt,
            JoinRoomRequest {
                room_id: public.room_id,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(joined.success);
    assert_eq!(joined.room.unwrap().member_count, 2);
    // Joining twice is harmless.
    c.join_room(bearer(
        &bt,
        JoinRoomRequest {
            room_id: public.room_id,
        },
    ))
    .await
    .unwrap();

    let private = room(&mut c, &a, "secret", true, vec![bob]).await;
    assert_eq!(
        private.member_count, 1,
        "an invited user is not a member before accepting"
    );
    let e = send(&mut c, &bt, private.room_id, "not yet")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let joined = c
        .join_room(bearer(
            &bt,
            JoinRoomRequest {
                room_id: private.room_id,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .room
        .unwrap();
    assert_eq!(joined.member_count, 2, "joining accepts the invitation");
    assert_eq!(
        code(
            c.join_room(bearer(
                &ct,
                JoinRoomRequest {
                    room_id: private.room_id
                }
            ))
            .await
        ),
        Code::NotFound,
        "private rooms hide from the uninvited"
    );
    assert_eq!(
        code(
            c.join_room(bearer(&ct, JoinRoomRequest { room_id: 9999 }))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            c.join_room(bearer(&ct, JoinRoomRequest { room_id: 0 }))
                .await
        ),
        Code::InvalidArgument
    );

    assert!(
        c.leave_room(bearer(
            &bt,
            LeaveRoomRequest {
                room_id: public.room_id
            }
        ))
        .await
        .unwrap()
        .into_inner()
        .success
    );
    assert_eq!(
        code(
            c.leave_room(bearer(
                &bt,
                LeaveRoomRequest {
                    room_id: public.room_id
                }
            ))
            .await
        ),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(
            c.leave_room(bearer(&bt, LeaveRoomRequest { room_id: 9999 }))
                .await
        ),
        Code::NotFound
    );

    let bad = CreateRoomRequest {
        name: String::new(),
        ..Default::default()
    };
    assert_eq!(
        code(c.create_room(bearer(&a, bad)).await),
        Code::InvalidArgument
    );
    let bad = CreateRoomRequest {
        name: "x".repeat(1 << 20),
        ..Default::default()
    };
    assert_eq!(
        code(c.create_room(bearer(&a, bad)).await),
        Code::InvalidArgument
    );
    let bad = CreateRoomRequest {
        name: "x".into(),
        member_ids: vec![424242],
        ..Default::default()
    };
    let e = c.create_room(bearer(&a, bad)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("member_ids"));
    assert_eq!(
        code(
            c.create_room(tonic::Request::new(CreateRoomRequest::default()))
                .await
        ),
        Code::Unauthenticated
    );
    s.stop().await;
}

async fn send_and_page(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (alice, a) = s.user("alice").await;
    let (_, outsider) = s.user("olga").await;
    let mut c = client(&s).await;
    let r = room(&mut c, &a, "lobby", false, vec![]).await;
    let other = room(&mut c, &a, "other", false, vec![]).await;
    let mut ids = Vec::new();
    for i in 1..=7 {
        let m = send(&mut c, &a, r.room_id, &format!("m{i}")).await.unwrap();
        assert_eq!(
            (m.user_id, m.room_id, m.message_type.as_str()),
            (alice, r.room_id, "text")
        );
        assert!(m.created_at.is_some());
        ids.push(m.message_id);
    }
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "strictly increasing: {ids:?}"
    );

    let page = |limit, before, after| GetMessagesRequest {
        room_id: r.room_id,
        limit,
        before_message_id: before,
        after_message_id: after,
    };
    let p = c
        .get_messages(bearer(&a, page(3, 0, 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        p.messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        ["m7", "m6", "m5"]
    );
    assert!(p.has_more);
    assert_eq!(p.last_message_id, ids[6]);
    let p = c
        .get_messages(bearer(&a, page(3, ids[4], 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        p.messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        ["m4", "m3", "m2"]
    );
    assert!(p.has_more);
    let p = c
        .get_messages(bearer(&a, page(3, ids[1], 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.messages.len(), 1);
    assert!(!p.has_more);
    let p = c
        .get_messages(bearer(&a, page(2, 0, ids[1])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        p.messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        ["m4", "m3"],
        "after: the next ones, newest first"
    );
    assert!(p.has_more);
    let p = c
        .get_messages(bearer(&a, page(0, 0, 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.messages.len(), 7, "default limit 50");
    let p = c
        .get_messages(bearer(&a, page(10_000, 0, 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.messages.len(), 7, "limits above 200 are clamped");
    assert_eq!(
        code(c.get_messages(bearer(&a, page(-1, 0, 0))).await),
        Code::InvalidArgument
    );

    let reply = SendMessageRequest {
        room_id: r.room_id,
        content: "re".into(),
        reply_to_id: ids[0],
        ..Default::default()
    };
    assert_eq!(
        c.send_message(bearer(&a, reply))
            .await
            .unwrap()
            .into_inner()
            .message
            .unwrap()
            .reply_to_id,
        ids[0]
    );
    let into_other = SendMessageRequest {
        room_id: other.room_id,
        content: "re".into(),
        reply_to_id: ids[3],
        ..Default::default()
    };
    let e = c.send_message(bearer(&a, into_other)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("reply_to_id"), "{}", e.message());

    assert_eq!(
        code(send(&mut c, &a, r.room_id, "").await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(send(&mut c, &a, r.room_id, "   ").await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(send(&mut c, &a, r.room_id, &"é".repeat(4001)).await),
        Code::InvalidArgument
    );
    send(&mut c, &a, r.room_id, &"é".repeat(4000))
        .await
        .expect("4000 characters is allowed");
    assert_eq!(
        code(send(&mut c, &a, r.room_id, &"x".repeat(1 << 20)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(send(&mut c, &outsider, r.room_id, "hi").await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(c.get_messages(bearer(&outsider, page(0, 0, 0))).await),
        Code::PermissionDenied
    );
    assert_eq!(code(send(&mut c, &a, 9999, "hi").await), Code::NotFound);
    let typed = SendMessageRequest {
        room_id: r.room_id,
        content: "x".into(),
        message_type: "typing".into(),
        ..Default::default()
    };
    assert_eq!(
        code(c.send_message(bearer(&a, typed)).await),
        Code::InvalidArgument
    );
    // Nothing of the refused sends was stored.
    let p = c
        .get_messages(bearer(&a, page(0, 0, 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.messages.len(), 9);
    s.stop().await;
}

async fn stream_history_then_live_and_activity(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (alice, a) = s.user("alice").await;
    let (bob, bt) = s.user("bob").await;
    let (_, outsider) = s.user("olga").await;
    let mut c = client(&s).await;
    let r = room(&mut c, &a, "lobby", false, vec![]).await;
    let first = send(&mut c, &a, r.room_id, "one").await.unwrap();
    send(&mut c, &a, r.room_id, "two").await.unwrap();

    let mut activity = c
        .stream_room_activity(bearer(&a, StreamRoomActivityRequest { room_id: r.room_id }))
        .await
        .unwrap()
        .into_inner();
    let mut stream = c
        .stream_messages(bearer(
            &a,
            StreamMessagesRequest {
                room_id: r.room_id,
                last_message_id: first.message_id,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stream.next().await.unwrap().unwrap().content,
        "two",
        "history after the cursor"
    );
    c.join_room(bearer(&bt, JoinRoomRequest { room_id: r.room_id }))
        .await
        .unwrap();
    send(&mut c, &bt, r.room_id, "three").await.unwrap();
    let live = stream.next().await.unwrap().unwrap();
    assert_eq!((live.content.as_str(), live.user_id), ("three", bob));

    let mut bidi = c
        .chat_stream(bearer(
            &bt,
            futures::stream::iter(vec![ChatMessage {
                room_id: r.room_id,
                message_type: "typing".into(),
                ..Default::default()
            }])
            .chain(futures::stream::pending()),
        ))
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<(String, i64)> = activity
        .by_ref()
        .take(3)
        .map(|a| {
            let a = a.unwrap();
            (a.activity_type, a.user_id)
        })
        .collect()
        .await;
    assert_eq!(
        kinds,
        vec![
            ("joined".to_string(), bob),
            ("message".to_string(), bob),
            ("typing".to_string(), bob)
        ]
    );
    c.leave_room(bearer(&bt, LeaveRoomRequest { room_id: r.room_id }))
        .await
        .unwrap();
    let left = activity.next().await.unwrap().unwrap();
    assert_eq!((left.activity_type.as_str(), left.user_id), ("left", bob));
    drop(bidi.next());

    assert_eq!(
        code(
            c.stream_messages(bearer(
                &outsider,
                StreamMessagesRequest {
                    room_id: r.room_id,
                    last_message_id: 0
                }
            ))
            .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            c.stream_messages(bearer(
                &a,
                StreamMessagesRequest {
                    room_id: 4242,
                    last_message_id: 0
                }
            ))
            .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            c.stream_room_activity(bearer(
                &outsider,
                StreamRoomActivityRequest { room_id: r.room_id }
            ))
            .await
        ),
        Code::PermissionDenied
    );
    let _ = alice;
    s.stop().await;
}

async fn chat_stream_sends_and_follows_membership(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (alice, a) = s.user("alice").await;
    let (_, bt) = s.user("bob").await;
    let mut c = client(&s).await;
    let r1 = room(&mut c, &a, "one", false, vec![]).await;
    let r2 = room(&mut c, &bt, "two", false, vec![]).await;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut out = c
        .chat_stream(bearer(&a, tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    tx.send(ChatMessage {
        room_id: r1.room_id,
        content: "from the stream".into(),
        user_id: 999,
        ..Default::default()
    })
    .await
    .unwrap();
    let own = out.next().await.unwrap().unwrap();
    assert_eq!(
        (own.content.as_str(), own.user_id, own.room_id),
        ("from the stream", alice, r1.room_id),
        "author is the caller, never the message's"
    );
    assert!(own.message_id > 0);

    send(&mut c, &bt, r2.room_id, "before alice joined")
        .await
        .unwrap();
    c.join_room(bearer(
        &a,
        JoinRoomRequest {
            room_id: r2.room_id,
        },
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(&mut c, &bt, r2.room_id, "after alice joined")
        .await
        .unwrap();
    let pushed = out.next().await.unwrap().unwrap();
    assert_eq!(
        (pushed.content.as_str(), pushed.room_id),
        ("after alice joined", r2.room_id)
    );
    c.leave_room(bearer(
        &a,
        LeaveRoomRequest {
            room_id: r2.room_id,
        },
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(&mut c, &bt, r2.room_id, "after alice left")
        .await
        .unwrap();
    send(&mut c, &a, r1.room_id, "marker").await.unwrap();
    assert_eq!(
        out.next().await.unwrap().unwrap().content,
        "marker",
        "nothing from the room she left"
    );

    tx.send(ChatMessage {
        room_id: r2.room_id,
        content: "not a member".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let refused = out.next().await.unwrap().unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    s.stop().await;
}

async fn mentions_notify_members_only(b: Backend) {
    use veza_proto::notification::{
        GetNotificationsRequest, notification_service_client::NotificationServiceClient,
    };
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, a) = s.user("alice").await;
    let (bob, bt) = s.user("bob").await;
    let (_, ct) = s.user("carol").await;
    let mut c = client(&s).await;
    let r = room(&mut c, &a, "lobby", false, vec![bob]).await;
    c.join_room(bearer(&bt, JoinRoomRequest { room_id: r.room_id }))
        .await
        .unwrap();
    send(
        &mut c,
        &a,
        r.room_id,
        "hey @bob and @carol, mail alice@bob.io",
    )
    .await
    .unwrap();
    let mut n = NotificationServiceClient::new(s.channel().await);
    let mut got = Vec::new();
    for _ in 0..50 {
        got = n
            .get_notifications(bearer(&bt, GetNotificationsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .notifications;
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].r#type.as_str(), got[0].data.get("room_id").cloned()),
        ("mention", Some(r.room_id.to_string()))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let carol = n
        .get_notifications(bearer(&ct, GetNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert!(carol.is_empty(), "carol is not a member");
    let alice = n
        .get_notifications(bearer(&a, GetNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert!(alice.is_empty());
    s.stop().await;
}

on_both_backends!(
    rooms_and_membership,
    send_and_page,
    stream_history_then_live_and_activity,
    chat_stream_sends_and_follows_membership,
    mentions_notify_members_only,
);
