//! AnalyticsService on SQLite and PostgreSQL: who may track and read, exact bucket counts from
//! events with known timestamps, live event streams, metrics, a full queue answering
//! RESOURCE_EXHAUSTED, the built-in login events, and retention pruning.

use std::{collections::HashMap, time::Duration};

use futures::StreamExt;
use tonic::{Code, Request, transport::Channel};
use veza_proto::{
    analytics::{analytics_service_client::AnalyticsServiceClient as Client, *},
    auth::AuthenticateRequest,
};
use veza_tests::{Backend, TestServer, WriteBlock, api_key, bearer, on_both_backends};

const HOUR: i64 = 3_600_000;

async fn client(s: &TestServer) -> Client<Channel> {
    Client::new(s.channel().await)
}

fn ts(ms: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

fn ms(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref()
        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

fn event(kind: &str, user_id: i64, at: Option<i64>, props: &[(&str, &str)]) -> TrackEventRequest {
    TrackEventRequest {
        event_type: kind.into(),
        user_id,
        properties: props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        timestamp: at.and_then(ts),
        source: "test".into(),
    }
}

fn query(kind: &str, from: i64, to: i64, interval_s: i64, group_by: &str) -> GetAnalyticsRequest {
    GetAnalyticsRequest {
        event_type: kind.into(),
        from: ts(from),
        to: ts(to),
        interval_seconds: interval_s,
        group_by: group_by.into(),
    }
}

/// Polls GetAnalytics until its total is `want` (events are written in the background).
async fn settled(
    c: &mut Client<Channel>,
    token: &str,
    q: GetAnalyticsRequest,
    want: i64,
) -> GetAnalyticsResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = c
            .get_analytics(bearer(token, q.clone()))
            .await
            .unwrap()
            .into_inner();
        if r.total_count == want {
            return r;
        }
        assert!(
            r.total_count < want,
            "more events than tracked: {} > {want}",
            r.total_count
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {want} events written",
            r.total_count
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn now_ms() -> i64 {
    veza_storage::now_ms()
}

async fn track_event_permissions_and_validation(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, admin) = s.admin().await;
    let (alice, alice_t) = s.user("alice").await;
    let (bob, _) = s.user("bob").await;
    let mut c = client(&s).await;

    let own = c
        .track_event(bearer(&alice_t, event("click", 0, None, &[])))
        .await
        .unwrap()
        .into_inner();
    assert!(own.success && own.event_id.parse::<i64>().unwrap() > 0);
    let explicit = c
        .track_event(bearer(&alice_t, event("click", alice, None, &[])))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(own.event_id, explicit.event_id);
    let e = c
        .track_event(bearer(&alice_t, event("click", bob, None, &[])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    c.track_event(bearer(&admin, event("click", bob, None, &[])))
        .await
        .unwrap();

    let writer = s.new_api_key(&admin, "svc", &["analytics:write"]).await;
    let reader = s.new_api_key(&admin, "svc", &["analytics:read"]).await;
    c.track_event(api_key(&writer, event("click", bob, None, &[])))
        .await
        .unwrap();
    c.track_event(api_key(
        &writer,
        event("page_view", 0, None, &[("anonymous", "yes")]),
    ))
    .await
    .unwrap();
    let e = c
        .track_event(api_key(&reader, event("click", bob, None, &[])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .track_event(Request::new(event("click", 0, None, &[])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    let now = now_ms();
    let long = "x".repeat(600);
    let many: Vec<(String, String)> = (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
    let invalid = [
        event("", 0, None, &[]),
        event("has space", 0, None, &[]),
        event(&"e".repeat(65), 0, None, &[]),
        event("click", -1, None, &[]),
        event("click", 0, Some(now - 91 * 24 * HOUR), &[]),
        event("click", 0, Some(now + 2 * HOUR), &[]),
        event("click", 0, None, &[("k", long.as_str())]),
        TrackEventRequest {
            properties: many.into_iter().collect(),
            ..event("click", 0, None, &[])
        },
        TrackEventRequest {
            timestamp: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: -5,
            }),
            ..event("click", 0, None, &[])
        },
    ];
    for req in invalid {
        let e = c.track_event(bearer(&alice_t, req)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
    let counted = settled(
        &mut c,
        &admin,
        query("click", now - HOUR, now + HOUR, 7200, ""),
        4,
    )
    .await;
    assert_eq!(
        (counted.buckets.len(), counted.buckets[0].unique_users),
        (1, 2),
        "alice and bob"
    );
    s.stop().await;
}

async fn buckets_count_exactly(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, admin) = s.admin().await;
    let writer = s.new_api_key(&admin, "svc", &["analytics:write"]).await;
    let mut c = client(&s).await;
    let base = (now_ms() - 5 * HOUR) / HOUR * HOUR;
    let m = 60_000;
    // (type, user, minute after base, country)
    let events: [(&str, i64, i64, Option<&str>); 10] = [
        ("play_started", 1, 10, Some("FR")),
        ("play_started", 2, 20, Some("FR")),
        ("play_started", 1, 30, Some("DE")),
        ("play_started", 1, 59, Some("FR")),
        ("play_started", 3, 70, Some("FR")),
        ("play_started", 0, 80, Some("FR")),
        ("play_started", 1, 130, None),
        ("play_started", 2, 200, Some("DE")),
        ("play_finished", 1, 15, Some("FR")),
        ("play_started", 9, -5, Some("FR")),
    ];
    for (kind, user, minute, country) in events {
        let props: Vec<(&str, &str)> = country
            .map(|c| ("country", c))
            .into_iter()
            .chain([("device", "web")])
            .collect();
        c.track_event(api_key(
            &writer,
            event(kind, user, Some(base + minute * m), &props),
        ))
        .await
        .unwrap();
    }
    let r = settled(
        &mut c,
        &admin,
        query("play_started", base, base + 3 * HOUR, 3600, ""),
        7,
    )
    .await;
    let got: Vec<(i64, i64, i64, i64, String)> = r
        .buckets
        .iter()
        .map(|b| {
            (
                ms(&b.start) - base,
                ms(&b.end) - base,
                b.count,
                b.unique_users,
                b.group.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (0, HOUR, 4, 2, String::new()),
            (HOUR, 2 * HOUR, 2, 1, String::new()),
            (2 * HOUR, 3 * HOUR, 1, 1, String::new())
        ],
        "anonymous events count but are not users"
    );
    let r = settled(
        &mut c,
        &admin,
        query("play_started", base, base + 4 * HOUR, 3600, "country"),
        8,
    )
    .await;
    let got: Vec<(i64, &str, i64, i64)> = r
        .buckets
        .iter()
        .map(|b| {
            (
                (ms(&b.start) - base) / HOUR,
                b.group.as_str(),
                b.count,
                b.unique_users,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (0, "DE", 1, 1),
            (0, "FR", 3, 2),
            (1, "FR", 2, 1),
            (2, "", 1, 1),
            (3, "DE", 1, 1)
        ]
    );
    // A partial last bucket ends at `to`; 30-minute buckets split the first hour.
    let r = settled(
        &mut c,
        &admin,
        query("play_started", base, base + 90 * m, 1800, ""),
        6,
    )
    .await;
    let counts: Vec<i64> = r.buckets.iter().map(|b| b.count).collect();
    assert_eq!(counts, vec![2, 2, 2]);
    assert_eq!(ms(&r.buckets[2].end) - base, 90 * m);
    let r = settled(
        &mut c,
        &admin,
        query("play_finished", base, base + HOUR, 0, ""),
        1,
    )
    .await;
    assert_eq!(r.buckets.len(), 1, "interval 0 means hourly");

    // Readers: admins and analytics:read keys only.
    let reader = s.new_api_key(&admin, "svc", &["analytics:read"]).await;
    let r = c
        .get_analytics(api_key(
            &reader,
            query("play_started", base, base + 3 * HOUR, 3600, ""),
        ))
        .await
        .unwrap();
    assert_eq!(r.into_inner().total_count, 7);
    let (_, user) = s.user("carol").await;
    for req in [
        bearer(&user, query("play_started", base, base + HOUR, 3600, "")),
        api_key(&writer, query("play_started", base, base + HOUR, 3600, "")),
    ] {
        assert_eq!(
            c.get_analytics(req).await.unwrap_err().code(),
            Code::PermissionDenied
        );
    }
    assert_eq!(
        c.get_analytics(Request::new(query("x", base, base + HOUR, 60, "")))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    for bad in [
        query("", base, base + HOUR, 60, ""),
        query("play_started", base + HOUR, base, 60, ""),
        query("play_started", base, base + HOUR, -1, ""),
        query("play_started", base, base + 30 * 24 * HOUR, 1, ""),
        query("play_started", base, base + HOUR, 60, &"g".repeat(65)),
    ] {
        assert_eq!(
            c.get_analytics(bearer(&admin, bad))
                .await
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
    }
    // Without a range: the last 24 h in hourly buckets starting on the hour (the rollup's
    // granularity), every event above included.
    let all = c
        .get_analytics(bearer(
            &admin,
            GetAnalyticsRequest {
                event_type: "play_started".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.total_count, 9);
    assert_eq!(all.buckets.len(), 25, "24 whole hours and the current one");
    let first = all.buckets[0].start.as_ref().expect("start");
    assert_eq!(
        (first.seconds % 3600, first.nanos),
        (0, 0),
        "starts on the hour"
    );
    s.stop().await;
}

async fn login_events_are_built_in(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, admin) = s.admin().await;
    let (alice, _) = s.user("alice").await;
    let mut auth = s.auth().await;
    let bad = AuthenticateRequest {
        email: "alice@example.com".into(),
        password: "wrong password".into(),
        ..Default::default()
    };
    assert_eq!(
        auth.authenticate(bad).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let ghost = AuthenticateRequest {
        email: "ghost@example.com".into(),
        password: "whatever".into(),
        ..Default::default()
    };
    assert_eq!(
        auth.authenticate(ghost).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut c = client(&s).await;
    let now = now_ms();
    // Logins so far: admin, alice.
    let ok = settled(
        &mut c,
        &admin,
        query("login_succeeded", now - HOUR, now + HOUR, 7200, ""),
        2,
    )
    .await;
    assert_eq!(ok.buckets[0].unique_users, 2);
    let failed = settled(
        &mut c,
        &admin,
        query("login_failed", now - HOUR, now + HOUR, 7200, "reason"),
        2,
    )
    .await;
    let groups: Vec<(&str, i64)> = failed
        .buckets
        .iter()
        .map(|b| (b.group.as_str(), b.unique_users))
        .collect();
    assert_eq!(groups, vec![("bad_password", 1), ("unknown_account", 0)]);
    let _ = alice;
    s.stop().await;
}

async fn stream_events_live_and_filtered(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, admin) = s.admin().await;
    let (alice, alice_t) = s.user("alice").await;
    let mut c = client(&s).await;
    let mut clicks = c
        .stream_events(bearer(
            &admin,
            StreamEventsRequest {
                event_types: vec!["click".into()],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let reader = s.new_api_key(&admin, "svc", &["analytics:read"]).await;
    let mut all = c
        .stream_events(api_key(&reader, StreamEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let at = now_ms() - 1000;
    let first = c
        .track_event(bearer(&alice_t, event("scroll", 0, None, &[])))
        .await
        .unwrap()
        .into_inner();
    let second = c
        .track_event(bearer(
            &alice_t,
            event("click", 0, Some(at), &[("button", "play")]),
        ))
        .await
        .unwrap()
        .into_inner();
    let got = tokio::time::timeout(Duration::from_secs(10), clicks.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.event_id.as_str(), got.event_type.as_str(), got.user_id),
        (second.event_id.as_str(), "click", alice)
    );
    assert_eq!(
        (got.properties, ms(&got.timestamp), got.source.as_str()),
        (
            HashMap::from([("button".into(), "play".into())]),
            at,
            "test"
        )
    );
    let mut seen = vec![];
    while seen.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(10), all.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if e.event_type != "login_succeeded" {
            seen.push(e.event_id);
        }
    }
    assert_eq!(seen, vec![first.event_id, second.event_id]);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), clicks.next())
            .await
            .is_err(),
        "only clicks"
    );

    let e = c
        .stream_events(bearer(&alice_t, StreamEventsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .stream_events(bearer(
            &admin,
            StreamEventsRequest {
                event_types: vec!["bad type".into()],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .stream_events(Request::new(StreamEventsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    s.stop().await;
}

async fn metrics_rpcs(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, admin) = s.admin().await;
    let (_, alice_t) = s.user("alice").await;
    let mut c = client(&s).await;
    c.track_event(bearer(&alice_t, event("click", 0, None, &[])))
        .await
        .unwrap();
    let names = vec![
        "grpc_server_handled_total".to_string(),
        "process_resident_memory_bytes".into(),
    ];
    let m = c
        .get_metrics(bearer(
            &admin,
            GetMetricsRequest {
                names: names.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .metrics;
    let tracked = m
        .iter()
        .find(|d| {
            d.name == "grpc_server_handled_total"
                && d.labels.get("grpc_method").map(String::as_str) == Some("TrackEvent")
        })
        .expect("TrackEvent counted");
    assert_eq!(
        (
            tracked.kind.as_str(),
            tracked.value,
            tracked.labels["grpc_code"].as_str()
        ),
        ("counter", 1.0, "OK")
    );
    assert_eq!(tracked.labels["grpc_type"], "unary");
    assert!(
        m.iter().any(|d| d.name == "process_resident_memory_bytes"
            && d.value > 1e6
            && d.kind == "gauge")
    );
    assert!(m.iter().all(|d| names.contains(&d.name)));
    let all = c
        .get_metrics(bearer(&admin, GetMetricsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .metrics;
    assert!(
        all.iter()
            .any(|d| d.name == "grpc_server_handling_seconds" && d.labels.contains_key("quantile")),
        "latency quantiles"
    );
    assert!(
        all.iter()
            .any(|d| d.name == "veza_analytics_events_queued_total" && d.value >= 1.0)
    );

    let mut ticks = c
        .stream_metrics(bearer(
            &admin,
            StreamMetricsRequest {
                names: vec!["veza_open_streams".into()],
                interval_ms: 100,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut stamps = vec![];
    for _ in 0..3 {
        let d = tokio::time::timeout(Duration::from_secs(5), ticks.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.name.as_str(), d.kind.as_str()),
            ("veza_open_streams", "gauge")
        );
        assert!(d.value >= 1.0, "this very stream is open");
        stamps.push(ms(&d.timestamp));
    }
    assert!(stamps[2] - stamps[0] >= 150, "periodic: {stamps:?}");

    let e = c
        .get_metrics(bearer(&alice_t, GetMetricsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .stream_metrics(bearer(&alice_t, StreamMetricsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .stream_metrics(bearer(
            &admin,
            StreamMetricsRequest {
                names: vec![],
                interval_ms: 5,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .get_metrics(bearer(
            &admin,
            GetMetricsRequest {
                names: vec![String::new()],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        c.get_metrics(Request::new(GetMetricsRequest::default()))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    s.stop().await;
}

async fn full_queue_answers_resource_exhausted(b: Backend) {
    let Some(s) = TestServer::start_with(b, |c| c.analytics_queue_capacity = 4).await else {
        return;
    };
    let (_, admin) = s.admin().await;
    let mut c = client(&s).await;
    let at = now_ms() - 1000;
    // Let the admin's login event reach the database before the writer is blocked.
    settled(
        &mut c,
        &admin,
        query("login_succeeded", at - HOUR, at + HOUR, 7200, ""),
        1,
    )
    .await;
    let block = WriteBlock::take(&s).await;
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..100 {
        match c
            .track_event(bearer(&admin, event("burst", 7, Some(at), &[])))
            .await
        {
            Ok(_) => accepted += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("a full queue refuses");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!((4..=100).contains(&accepted), "{accepted}");
    block.release().await;
    // Every accepted event is written once the database is free again, and the queue takes more.
    settled(
        &mut c,
        &admin,
        query("burst", at - HOUR, at + HOUR, 7200, ""),
        accepted,
    )
    .await;
    c.track_event(bearer(&admin, event("burst", 7, Some(at), &[])))
        .await
        .unwrap();
    settled(
        &mut c,
        &admin,
        query("burst", at - HOUR, at + HOUR, 7200, ""),
        accepted + 1,
    )
    .await;
    s.stop().await;
}

/// Hourly buckets come from the rollup the writer maintains: distinct users stay exact across
/// batches, anonymous events count but are not users, and a partial last hour is counted from
/// the events up to `to`.
async fn hourly_rollup_is_exact_across_batches(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let db = veza_storage::Db::connect(&s.config.database_url)
        .await
        .unwrap();
    let kind = format!("rollup_{}", now_ms());
    let hour = 3_600_000;
    // Three whole hours ago: inside the retention window, whose sweep would otherwise delete
    // the rollup rows between the two batches.
    let h = (now_ms() / hour - 3) * hour;
    let mut next_id = (now_ms() - 1_704_067_200_000) << 22;
    let mut batch = |events: &[(i64, i64)]| {
        events
            .iter()
            .map(|(ts, user_id)| {
                next_id += 1;
                veza_storage::EventRecord {
                    id: next_id,
                    event_type: kind.clone(),
                    user_id: *user_id,
                    ts: *ts,
                    source: String::new(),
                    properties: vec![],
                }
            })
            .collect::<Vec<_>>()
    };
    let first = batch(&[(h, 1), (h + 1, 2), (h + 2, 3), (h + 3, 0), (h + hour, 1)]);
    let second = batch(&[
        (h + 10, 2),
        (h + 11, 4),
        (h + 12, 0),
        (h + hour + 5, 1),
        (h + hour + 6, 5),
        (h + 2 * hour + 600_000, 7),
        (h + 2 * hour + 600_001, 8),
        (h + 2 * hour + 3_000_000, 9),
    ]);
    db.insert_events(&first).await.unwrap();
    db.insert_events(&second).await.unwrap();
    let q = veza_storage::BucketQuery {
        event_type: &kind,
        from: h,
        to: h + 2 * hour + 1_800_000,
        interval_ms: hour,
        group_by: None,
    };
    let rows = db.event_buckets(&q).await.unwrap();
    let got: Vec<(i64, i64, i64)> = rows
        .iter()
        .map(|r| (r.bucket, r.count, r.unique_users))
        .collect();
    assert_eq!(got, vec![(0, 7, 4), (1, 3, 2), (2, 2, 2)]);
    db.close().await;
    s.stop().await;
}

/// Retention deletes events by age (their id encodes when they were accepted), properties too.
async fn retention_prunes_old_events(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let db = veza_storage::Db::connect(&s.config.database_url)
        .await
        .unwrap();
    // Ids as the server assigns them now (ms since 2024 in the high bits), so the server's own
    // pruning (90 days) leaves them alone.
    let base = (now_ms() - 1_704_067_200_000) << 22;
    let rec = |i: i64| veza_storage::EventRecord {
        id: base + i,
        event_type: "old".into(),
        user_id: 1,
        ts: 1_000,
        source: String::new(),
        properties: vec![("k".into(), "v".into())],
    };
    db.insert_events(&(1..=25).map(rec).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(db.prune_events(base + 11, 4).await.unwrap(), 4);
    assert_eq!(db.prune_events(base + 11, 100).await.unwrap(), 6);
    assert_eq!(db.prune_events(base + 11, 100).await.unwrap(), 0);
    let q = veza_storage::BucketQuery {
        event_type: "old",
        from: 0,
        to: 10_000,
        interval_ms: 10_000,
        group_by: Some("k"),
    };
    let rows = db.event_buckets(&q).await.unwrap();
    assert_eq!(
        (rows.len(), rows[0].count, rows[0].group.as_str()),
        (1, 15, "v")
    );
    db.close().await;
    s.stop().await;
}

on_both_backends!(
    track_event_permissions_and_validation,
    buckets_count_exactly,
    login_events_are_built_in,
    stream_events_live_and_filtered,
    metrics_rpcs,
    full_queue_answers_resource_exhausted,
    retention_prunes_old_events,
    hourly_rollup_is_exact_across_batches,
);
