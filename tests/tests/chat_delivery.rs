//! Chat delivery guarantees: gap-free, duplicate-free resume under concurrent load, across two
//! instances sharing PostgreSQL and NATS, and bounded memory with a stalled subscriber.

use std::time::Duration;

use futures::StreamExt;
use veza_proto::chat::{chat_service_client::ChatServiceClient, *};
use veza_tests::{Backend, TestServer, bearer, on_both_backends};

type Client = ChatServiceClient<tonic::transport::Channel>;

/// `stalled_subscriber_does_not_grow_memory` measures the RSS of this whole process, where the
/// other tests of this file run on parallel threads: they hold this shared, it exclusively.
static PROCESS_MEMORY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn shared_room(s: &TestServer, users: usize) -> (i64, Vec<String>) {
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for i in 0..users {
        let (id, t) = s.user(&format!("user{i}")).await;
        ids.push(id);
        tokens.push(t);
    }
    let mut c = ChatServiceClient::new(s.channel().await);
    let req = CreateRoomRequest {
        name: "load".into(),
        member_ids: ids[1..].to_vec(),
        ..Default::default()
    };
    let room = c
        .create_room(bearer(&tokens[0], req))
        .await
        .unwrap()
        .into_inner()
        .room
        .unwrap();
    for t in &tokens[1..] {
        c.join_room(bearer(
            t,
            JoinRoomRequest {
                room_id: room.room_id,
            },
        ))
        .await
        .unwrap();
    }
    (room.room_id, tokens)
}

async fn send_many(mut c: Client, token: String, room_id: i64, tag: usize, n: usize) {
    for i in 0..n {
        let req = SendMessageRequest {
            room_id,
            content: format!("{tag}:{i}"),
            ..Default::default()
        };
        c.send_message(bearer(&token, req)).await.unwrap();
    }
}

/// Reads `total` messages, disconnecting after pseudo-random counts and resuming from the last id.
async fn read_with_reconnects(
    c: Client,
    token: String,
    room_id: i64,
    total: usize,
    seed: u64,
) -> Vec<ChatMessage> {
    read_keeping(c, token, room_id, total, seed, |m| m).await
}

/// [`read_with_reconnects`], keeping only `keep(message)` of each message read (so a test that
/// measures memory does not count the bodies it has read itself).
async fn read_keeping<T>(
    c: Client,
    token: String,
    room_id: i64,
    total: usize,
    seed: u64,
    keep: impl Fn(ChatMessage) -> T,
) -> Vec<T> {
    let mut rng = seed | 1;
    let mut got: Vec<T> = Vec::new();
    let mut last = 0;
    while got.len() < total {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let take = 1 + (rng % 60) as usize;
        let mut c = c.clone();
        let mut stream = c
            .stream_messages(bearer(
                &token,
                StreamMessagesRequest {
                    room_id,
                    last_message_id: last,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        for _ in 0..take.min(total - got.len()) {
            let m = tokio::time::timeout(Duration::from_secs(20), stream.next())
                .await
                .expect("no stall")
                .unwrap()
                .unwrap();
            last = m.message_id;
            got.push(keep(m));
        }
    }
    got
}

fn assert_exactly_once_in_order(got: &[ChatMessage], total: usize) {
    let ids: Vec<i64> = got.iter().map(|m| m.message_id).collect();
    assert_ids_exactly_once_in_order(&ids, total);
}

fn assert_ids_exactly_once_in_order(ids: &[i64], total: usize) {
    let expected: Vec<i64> = (1..=total as i64).collect();
    assert_eq!(ids, expected, "every message exactly once, in order");
}

async fn gap_free_resume_under_load(b: Backend) {
    let _memory = PROCESS_MEMORY.read().await;
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (room_id, tokens) = shared_room(&s, 4).await;
    let (senders, per_sender, readers) = (4, 60, 4);
    let total = senders * per_sender;
    let channel = s.channel().await;
    let mut reading = Vec::new();
    for r in 0..readers {
        let c = ChatServiceClient::new(channel.clone());
        reading.push(tokio::spawn(read_with_reconnects(
            c,
            tokens[r % tokens.len()].clone(),
            room_id,
            total,
            0x9e37_79b9 + r as u64,
        )));
    }
    let mut sending = Vec::new();
    for (t, token) in tokens.iter().enumerate().take(senders) {
        let c = ChatServiceClient::new(s.channel().await);
        sending.push(tokio::spawn(send_many(
            c,
            token.clone(),
            room_id,
            t,
            per_sender,
        )));
    }
    for h in sending {
        h.await.unwrap();
    }
    for h in reading {
        let got = h.await.unwrap();
        assert_exactly_once_in_order(&got, total);
        for t in 0..senders {
            let mine: Vec<usize> = got
                .iter()
                .filter_map(|m| {
                    m.content
                        .split_once(':')
                        .filter(|(tag, _)| *tag == t.to_string())
                        .map(|(_, i)| i.parse().unwrap())
                })
                .collect();
            assert_eq!(
                mine,
                (0..per_sender).collect::<Vec<_>>(),
                "each sender's messages in its own order"
            );
        }
    }
    s.stop().await;
}

on_both_backends!(gap_free_resume_under_load);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_rooms_over_nats() {
    let _memory = PROCESS_MEMORY.read().await;
    let Some(nats) = veza_tests::nats_url().await else {
        return;
    };
    let Some(a) =
        TestServer::start_with(Backend::Postgres, |c| c.nats_url = Some(nats.clone())).await
    else {
        return;
    };
    let b = a.sibling(|_| {}).await;
    let (room_id, tokens) = shared_room(&a, 2).await;
    let on_b = ChatServiceClient::new(b.channel().await);
    let mut bidi_client = on_b.clone();
    let mut bidi = bidi_client
        .chat_stream(bearer(
            &tokens[1],
            futures::stream::pending::<ChatMessage>(),
        ))
        .await
        .unwrap()
        .into_inner();
    let per_side = 50;
    let reader = tokio::spawn(read_with_reconnects(
        on_b.clone(),
        tokens[1].clone(),
        room_id,
        2 * per_side,
        7,
    ));
    let from_a = tokio::spawn(send_many(
        ChatServiceClient::new(a.channel().await),
        tokens[0].clone(),
        room_id,
        0,
        per_side,
    ));
    let from_b = tokio::spawn(send_many(
        on_b.clone(),
        tokens[1].clone(),
        room_id,
        1,
        per_side,
    ));
    from_a.await.unwrap();
    from_b.await.unwrap();
    assert_exactly_once_in_order(&reader.await.unwrap(), 2 * per_side);
    let mut pushed = Vec::new();
    while pushed.len() < 2 * per_side {
        let m = tokio::time::timeout(Duration::from_secs(20), bidi.next())
            .await
            .expect("ChatStream on B")
            .unwrap()
            .unwrap();
        pushed.push(m);
    }
    assert_exactly_once_in_order(&pushed, 2 * per_side);
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscriber_does_not_grow_memory() {
    let _memory = PROCESS_MEMORY.write().await;
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let (room_id, tokens) = shared_room(&s, 2).await;
    let body = "x".repeat(4000);
    // A subscriber on its own connection that never reads.
    let mut stalled_client = ChatServiceClient::new(s.channel().await);
    let _stalled = stalled_client
        .stream_messages(bearer(
            &tokens[1],
            StreamMessagesRequest {
                room_id,
                last_message_id: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let total = 12_000usize;
    // The reader is in this process too: it checks each body and keeps only the id, or the
    // 45 MB it read would count as the server's growth.
    let expected_body = body.clone();
    let reader = tokio::spawn(read_keeping(
        ChatServiceClient::new(s.channel().await),
        tokens[0].clone(),
        room_id,
        total,
        3,
        move |m| {
            assert!(
                m.content == expected_body,
                "message {} intact",
                m.message_id
            );
            m.message_id
        },
    ));
    let before = veza_control_plane::metrics::resident_bytes();
    let mut sending = Vec::new();
    for t in 0..6 {
        let (c, token, body) = (
            ChatServiceClient::new(s.channel().await),
            tokens[t % 2].clone(),
            body.clone(),
        );
        sending.push(tokio::spawn(async move {
            let mut c = c;
            for _ in 0..total / 6 {
                let req = SendMessageRequest {
                    room_id,
                    content: body.clone(),
                    ..Default::default()
                };
                c.send_message(bearer(&token, req)).await.unwrap();
            }
        }));
    }
    for h in sending {
        h.await.unwrap();
    }
    assert_ids_exactly_once_in_order(&reader.await.unwrap(), total);
    let grown = veza_control_plane::metrics::resident_bytes().saturating_sub(before);
    let sent = (total * body.len()) as u64;
    assert!(
        grown < sent / 2,
        "memory grew {} MB while {} MB went past a stalled subscriber",
        grown >> 20,
        sent >> 20
    );
    s.stop().await;
}
