//! NotificationService on SQLite and PostgreSQL: sending (admins and scoped API keys only),
//! listing with pagination, marking read (own notifications only), streaming with resume under
//! concurrent sends, across two instances over NATS, and the server's own producers.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::StreamExt;
use tonic::{Code, Request, transport::Channel};
use veza_control_plane::{bus::Bus, domain::Notifier, metrics::Metrics};
use veza_proto::{
    common::Pagination,
    notification::{notification_service_client::NotificationServiceClient as Client, *},
};
use veza_tests::{Backend, TestServer, api_key, bearer, nats_url, on_both_backends};

async fn client(s: &TestServer) -> Client<Channel> {
    Client::new(s.channel().await)
}

fn send_req(users: &[i64], title: &str) -> SendNotificationRequest {
    SendNotificationRequest {
        user_ids: users.to_vec(),
        r#type: "system".into(),
        title: title.into(),
        body: format!("body of {title}"),
        data: HashMap::from([("k".to_string(), title.to_string())]),
    }
}

fn page(page: i32, page_size: i32) -> Option<Pagination> {
    Some(Pagination {
        page,
        page_size,
        ..Default::default()
    })
}

async fn send_permissions_and_validation(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, admin) = s.admin().await;
    let (alice, alice_t) = s.user("alice").await;
    let (bob, _) = s.user("bob").await;
    let mut c = client(&s).await;

    let sent = c
        .send_notification(bearer(&admin, send_req(&[alice, bob, alice], "hello")))
        .await
        .unwrap()
        .into_inner();
    assert!(sent.success);
    assert_eq!(sent.notification_ids.len(), 2, "one per distinct recipient");
    assert!(sent.notification_ids[0] < sent.notification_ids[1]);

    let e = c
        .send_notification(bearer(&alice_t, send_req(&[bob], "spam")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let unscoped = s.new_api_key(&admin, "svc", &["analytics:write"]).await;
    let e = c
        .send_notification(api_key(&unscoped, send_req(&[bob], "x")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let scoped = s.new_api_key(&admin, "svc", &["notifications:send"]).await;
    let ok = c
        .send_notification(api_key(&scoped, send_req(&[bob], "from a service")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.notification_ids.len(), 1);
    let e = c
        .send_notification(Request::new(send_req(&[bob], "x")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    let invalid = [
        SendNotificationRequest {
            user_ids: vec![],
            ..send_req(&[], "x")
        },
        SendNotificationRequest {
            r#type: String::new(),
            ..send_req(&[bob], "x")
        },
        SendNotificationRequest {
            r#type: "bad type!".into(),
            ..send_req(&[bob], "x")
        },
        SendNotificationRequest {
            title: String::new(),
            ..send_req(&[bob], "x")
        },
        SendNotificationRequest {
            title: "t".repeat(201),
            ..send_req(&[bob], "x")
        },
        send_req(&[-3], "x"),
        send_req(&(1..=1001).collect::<Vec<_>>(), "x"),
    ];
    for req in invalid {
        let e = c.send_notification(bearer(&admin, req)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
    let e = c
        .send_notification(bearer(&admin, send_req(&[bob, 999_999], "x")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Nothing of a refused send was stored.
    let bobs = c.get_notifications(bearer(
        &s.login("bob@example.com", "correct horse battery").await.0,
        GetNotificationsRequest::default(),
    ));
    assert_eq!(
        bobs.await.unwrap().into_inner().pagination.unwrap().total,
        2
    );
    s.stop().await;
}

async fn list_paginates_newest_first_and_only_own(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, admin) = s.admin().await;
    let (alice, alice_t) = s.user("alice").await;
    let (bob, bob_t) = s.user("bob").await;
    let mut c = client(&s).await;
    let mut alice_ids = vec![];
    for i in 0..5 {
        let r = c
            .send_notification(bearer(&admin, send_req(&[alice, bob], &format!("n{i}"))))
            .await
            .unwrap()
            .into_inner();
        alice_ids.push(r.notification_ids[0]);
    }
    let all = c
        .get_notifications(bearer(&alice_t, GetNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let p = all.pagination.unwrap();
    assert_eq!((p.page, p.page_size, p.total, p.total_pages), (1, 20, 5, 1));
    assert_eq!(all.unread_count, 5);
    let ids: Vec<i64> = all
        .notifications
        .iter()
        .map(|n| n.notification_id)
        .collect();
    assert_eq!(
        ids,
        alice_ids.iter().rev().copied().collect::<Vec<_>>(),
        "newest first"
    );
    let n = &all.notifications[0];
    assert_eq!(
        (
            n.user_id,
            n.r#type.as_str(),
            n.title.as_str(),
            n.body.as_str(),
            n.read
        ),
        (alice, "system", "n4", "body of n4", false)
    );
    assert_eq!(n.data.get("k").map(String::as_str), Some("n4"));
    assert!(n.created_at.is_some() && n.read_at.is_none());

    let p2 = c
        .get_notifications(bearer(
            &alice_t,
            GetNotificationsRequest {
                pagination: page(2, 2),
                unread_only: false,
            },
        ))
        .await;
    let p2 = p2.unwrap().into_inner();
    assert_eq!(
        p2.notifications
            .iter()
            .map(|n| n.notification_id)
            .collect::<Vec<_>>(),
        vec![alice_ids[2], alice_ids[1]]
    );
    let pg = p2.pagination.unwrap();
    assert_eq!(
        (pg.page, pg.page_size, pg.total, pg.total_pages),
        (2, 2, 5, 3)
    );
    let beyond = c
        .get_notifications(bearer(
            &alice_t,
            GetNotificationsRequest {
                pagination: page(9, 2),
                unread_only: false,
            },
        ))
        .await;
    assert!(beyond.unwrap().into_inner().notifications.is_empty());
    let capped = c
        .get_notifications(bearer(
            &alice_t,
            GetNotificationsRequest {
                pagination: page(1, 1000),
                unread_only: false,
            },
        ))
        .await;
    assert_eq!(
        capped.unwrap().into_inner().pagination.unwrap().page_size,
        100
    );
    for bad in [page(-1, 10), page(1, -5)] {
        let e = c
            .get_notifications(bearer(
                &alice_t,
                GetNotificationsRequest {
                    pagination: bad,
                    unread_only: false,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }
    // Notifications belong to users: an API key has none to read.
    let svc = s.new_api_key(&admin, "svc", &["notifications:send"]).await;
    let e = c
        .get_notifications(api_key(&svc, GetNotificationsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .get_notifications(Request::new(GetNotificationsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // Marking: Alice cannot touch Bob's notifications (not updated, not counted).
    let bobs = c
        .get_notifications(bearer(&bob_t, GetNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let bob_ids: Vec<i64> = bobs
        .notifications
        .iter()
        .map(|n| n.notification_id)
        .collect();
    assert!(bob_ids.iter().all(|id| !alice_ids.contains(id)));
    let r = c
        .mark_as_read(bearer(
            &alice_t,
            MarkAsReadRequest {
                notification_ids: bob_ids.clone(),
                all: false,
            },
        ))
        .await;
    let r = r.unwrap().into_inner();
    assert_eq!((r.success, r.updated, r.unread_count), (true, 0, 5));
    let bobs = c
        .get_notifications(bearer(&bob_t, GetNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bobs.unread_count, 5, "Bob's notifications are untouched");

    let r = c.mark_as_read(bearer(
        &alice_t,
        MarkAsReadRequest {
            notification_ids: vec![alice_ids[0], alice_ids[1], bob_ids[0]],
            all: false,
        },
    ));
    let r = r.await.unwrap().into_inner();
    assert_eq!((r.updated, r.unread_count), (2, 3));
    let again = c
        .mark_as_read(bearer(
            &alice_t,
            MarkAsReadRequest {
                notification_ids: vec![alice_ids[0]],
                all: false,
            },
        ))
        .await;
    assert_eq!(again.unwrap().into_inner().updated, 0, "already read");
    let unread = c
        .get_notifications(bearer(
            &alice_t,
            GetNotificationsRequest {
                pagination: None,
                unread_only: true,
            },
        ))
        .await;
    let unread = unread.unwrap().into_inner();
    assert_eq!(
        unread
            .notifications
            .iter()
            .map(|n| n.notification_id)
            .collect::<Vec<_>>(),
        vec![alice_ids[4], alice_ids[3], alice_ids[2]]
    );
    assert_eq!(
        (unread.pagination.unwrap().total, unread.unread_count),
        (3, 3)
    );
    let read = c
        .get_notifications(bearer(
            &alice_t,
            GetNotificationsRequest {
                pagination: page(1, 5),
                unread_only: false,
            },
        ))
        .await;
    let oldest = read.unwrap().into_inner().notifications.pop().unwrap();
    assert!(oldest.read && oldest.read_at.is_some());

    let r = c
        .mark_as_read(bearer(
            &alice_t,
            MarkAsReadRequest {
                notification_ids: vec![],
                all: true,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.updated, r.unread_count), (3, 0));
    let bobs = c
        .get_notifications(bearer(&bob_t, GetNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bobs.unread_count, 5, "`all` means all of the caller's");

    for bad in [
        MarkAsReadRequest {
            notification_ids: vec![],
            all: false,
        },
        MarkAsReadRequest {
            notification_ids: vec![0],
            all: false,
        },
    ] {
        let e = c.mark_as_read(bearer(&alice_t, bad)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }
    let e = c
        .mark_as_read(api_key(
            &svc,
            MarkAsReadRequest {
                notification_ids: vec![],
                all: true,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    s.stop().await;
}

/// Reads `want` notifications from `stream`, failing after a timeout.
async fn take(stream: &mut tonic::Streaming<Notification>, want: usize) -> Vec<i64> {
    let mut got = vec![];
    while got.len() < want {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap_or_else(|_| panic!("timed out after {} of {want} notifications", got.len()))
            .expect("stream open")
            .expect("notification");
        got.push(n.notification_id);
    }
    got
}

/// Sends `per_task` notifications to `user` from each of `tasks` concurrent clients (of `senders`,
/// round-robin); returns every id.
async fn concurrent_sends(
    senders: Vec<Client<Channel>>,
    admin: Arc<str>,
    user: i64,
    tasks: usize,
    per_task: usize,
) -> Vec<i64> {
    let mut handles = vec![];
    for t in 0..tasks {
        let mut c = senders[t % senders.len()].clone();
        let admin = admin.clone();
        handles.push(tokio::spawn(async move {
            let mut ids = vec![];
            for i in 0..per_task {
                let r = c
                    .send_notification(bearer(&admin, send_req(&[user], &format!("t{t}-{i}"))))
                    .await
                    .unwrap();
                ids.extend(r.into_inner().notification_ids);
            }
            ids
        }));
    }
    let mut all = vec![];
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort_unstable();
    all
}

async fn stream_resumes_gap_free_under_concurrent_sends(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, admin) = s.admin().await;
    let (alice, alice_t) = s.user("alice").await;
    let mut c = client(&s).await;
    let mut stored = vec![];
    for i in 0..5 {
        stored.extend(
            c.send_notification(bearer(&admin, send_req(&[alice], &format!("s{i}"))))
                .await
                .unwrap()
                .into_inner()
                .notification_ids,
        );
    }
    let mut stream = c
        .stream_notifications(bearer(
            &alice_t,
            StreamNotificationsRequest {
                last_notification_id: stored[1],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let senders = vec![client(&s).await, client(&s).await];
    let sending = tokio::spawn(concurrent_sends(senders, admin.into(), alice, 4, 25));

    // Read some, disconnect, resume from the last id seen, read the rest.
    let mut got = take(&mut stream, 40).await;
    drop(stream);
    let last = *got.last().unwrap();
    let mut resumed = c
        .stream_notifications(bearer(
            &alice_t,
            StreamNotificationsRequest {
                last_notification_id: last,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    got.extend(take(&mut resumed, 3 + 100 - 40).await);
    let sent = sending.await.unwrap();

    let mut expected: Vec<i64> = stored[2..].to_vec();
    expected.extend(sent);
    expected.sort_unstable();
    assert_eq!(got, expected, "every notification exactly once, in order");
    // And nothing more arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), resumed.next())
            .await
            .is_err()
    );

    let e = c
        .stream_notifications(bearer(
            &alice_t,
            StreamNotificationsRequest {
                last_notification_id: -1,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let root = s.login("root@example.com", "admin password").await.0;
    let svc = s.new_api_key(&root, "svc", &["notifications:send"]).await;
    let e = c
        .stream_notifications(api_key(&svc, StreamNotificationsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .stream_notifications(Request::new(StreamNotificationsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    s.stop().await;
}

/// The server's own producers (`track_ready`, `track_failed`, `mention`) go through
/// [`Notifier::create`], which checks input but not permissions.
async fn server_side_producers_reach_the_user(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (alice, alice_t) = s.user("alice").await;
    let mut c = client(&s).await;
    let mut stream = c
        .stream_notifications(bearer(&alice_t, StreamNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    // A second handle on the same database, as the Stream service holds one.
    let db = veza_storage::Db::connect(&s.config.database_url)
        .await
        .unwrap();
    let notifier = Notifier::new(db.clone(), Bus::local(), Arc::new(Metrics::new()));
    let data = HashMap::from([("track_id".to_string(), "42".to_string())]);
    let ready = notifier
        .create(
            &[alice],
            "track_ready",
            "Your track is ready",
            "song.flac",
            data.clone(),
        )
        .await
        .unwrap();
    let failed = notifier
        .create(
            &[alice],
            "track_failed",
            "Processing failed",
            "not audio",
            HashMap::new(),
        )
        .await
        .unwrap();
    assert!(
        notifier
            .create(&[alice], "", "t", "b", HashMap::new())
            .await
            .is_err()
    );
    assert!(
        notifier
            .create(&[424_242], "mention", "t", "b", HashMap::new())
            .await
            .is_err()
    );
    db.close().await;

    let listed = c
        .get_notifications(bearer(&alice_t, GetNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<(i64, &str)> = listed
        .notifications
        .iter()
        .map(|n| (n.notification_id, n.r#type.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![(failed[0], "track_failed"), (ready[0], "track_ready")]
    );
    assert_eq!(listed.notifications[1].data, data);
    // That handle published on its own in-process bus; the open stream still gets both from the
    // database as soon as anything for Alice arrives on the server's bus.
    let (_, admin) = s.admin().await;
    let last = c
        .send_notification(bearer(&admin, send_req(&[alice], "poke")))
        .await
        .unwrap()
        .into_inner()
        .notification_ids;
    assert_eq!(
        take(&mut stream, 3).await,
        vec![ready[0], failed[0], last[0]]
    );
    s.stop().await;
}

on_both_backends!(
    send_permissions_and_validation,
    list_paginates_newest_first_and_only_own,
    stream_resumes_gap_free_under_concurrent_sends,
    server_side_producers_reach_the_user,
);

/// Two instances sharing PostgreSQL and NATS: a stream on one sees, gap-free, what is sent
/// through both, and resumes on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_across_two_instances() {
    let Some(nats) = nats_url().await else { return };
    let Some(a) =
        TestServer::start_with(Backend::Postgres, |c| c.nats_url = Some(nats.clone())).await
    else {
        return;
    };
    let b = a.sibling(|_| {}).await;
    let (_, admin) = a.admin().await;
    let (alice, alice_t) = a.user("alice").await;
    let mut on_b = client(&b).await;
    let mut stream = on_b
        .stream_notifications(bearer(&alice_t, StreamNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let senders = vec![client(&a).await, client(&b).await];
    let sending = tokio::spawn(concurrent_sends(senders, admin.into(), alice, 4, 15));
    let mut got = take(&mut stream, 30).await;
    drop(stream);
    let mut on_a = client(&a).await;
    let last = *got.last().unwrap();
    let mut resumed = on_a
        .stream_notifications(bearer(
            &alice_t,
            StreamNotificationsRequest {
                last_notification_id: last,
            },
        ))
        .await;
    got.extend(take(resumed.as_mut().unwrap().get_mut(), 30).await);
    assert_eq!(got, sending.await.unwrap());
    b.stop().await;
    a.stop().await;
}
