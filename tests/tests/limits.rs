//! Limits and abuse (SPEC §13): login throttling that holds under a burst (per account and per
//! client IP, unknown accounts like known ones), the per-credential request rate, `Register`
//! per IP, per-user quotas (storage, uploads in progress, live streams) that hold under
//! concurrency, and fair shares of the analytics queue.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use futures::future::join_all;
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;
use veza_proto::{
    analytics::{TrackEventRequest, analytics_service_client::AnalyticsServiceClient},
    auth::{
        AuthenticateRequest, GetUserInfoRequest, RegisterRequest,
        auth_service_client::AuthServiceClient,
    },
    stream::{UploadAudioRequest, stream_service_client::StreamServiceClient},
};
use veza_tests::{Backend, TestServer, WriteBlock, bearer, on_air, on_both_backends};

/// Free failures per account before the first wait (`LoginPolicy::ACCOUNT`).
const ACCOUNT_FREE: usize = 30;
/// Free failures per client IP (`LoginPolicy::CLIENT_IP`).
const IP_FREE: usize = 100;

fn login(email: &str, password: &str) -> AuthenticateRequest {
    AuthenticateRequest {
        email: email.into(),
        password: password.into(),
        ..Default::default()
    }
}

fn retry_delay(s: &Status) -> Option<Duration> {
    s.get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
}

/// `n` parallel logins; the codes counted (OK counts as `Code::Ok`), every refusal checked to
/// carry a RetryInfo.
async fn burst(auth: &AuthServiceClient<Channel>, n: usize, email: &str, pw: &str) -> Vec<Code> {
    let calls = (0..n).map(|_| {
        let mut a = auth.clone();
        let req = login(email, pw);
        async move { a.authenticate(req).await }
    });
    let mut codes: Vec<Code> = join_all(calls)
        .await
        .into_iter()
        .map(|r| match r {
            Ok(_) => Code::Ok,
            Err(e) => {
                if e.code() == Code::ResourceExhausted {
                    let d = retry_delay(&e).expect("RetryInfo on a throttled login");
                    assert!(d >= Duration::from_secs(1), "{d:?}");
                }
                e.code()
            }
        })
        .collect();
    codes.sort_by_key(|c| *c as i32);
    codes
}

fn count(codes: &[Code]) -> BTreeMap<i32, usize> {
    let mut m = BTreeMap::new();
    for c in codes {
        *m.entry(*c as i32).or_default() += 1;
    }
    m
}

async fn a_burst_of_guesses_is_counted_before_it_is_checked(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    s.register("victim@x.io", "the right one").await;
    let auth = s.auth().await;
    let known = burst(&auth, 200, "victim@x.io", "wrong guess").await;
    let unknown = burst(&auth, 200, "nobody@x.io", "wrong guess").await;
    let expected = BTreeMap::from([
        (Code::Unauthenticated as i32, ACCOUNT_FREE),
        (Code::ResourceExhausted as i32, 200 - ACCOUNT_FREE),
    ]);
    assert_eq!(count(&known), expected, "known account");
    assert_eq!(known, unknown, "known and unknown emails answer alike");
    // The account now waits: even the right password is refused, for at most the first wait.
    let e = auth
        .clone()
        .authenticate(login("victim@x.io", "the right one"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    let d = retry_delay(&e).expect("RetryInfo");
    assert!(
        d <= Duration::from_secs(60) && d > Duration::from_secs(50),
        "{d:?}"
    );
    // Another account from the same client is not affected.
    s.register("other@x.io", "another right one").await;
    s.login("other@x.io", "another right one").await;
    s.stop().await;
}

/// A gRPC channel whose connections come from `source` (another loopback address).
async fn channel_from(source: &str, server: SocketAddr) -> Channel {
    let source: std::net::IpAddr = source.parse().unwrap();
    tonic::transport::Endpoint::from_static("http://127.0.0.1")
        .connect_with_connector(tower::service_fn(move |_| async move {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(SocketAddr::new(source, 0))?;
            let stream = sock.connect(server).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }))
        .await
        .expect("connect from another address")
}

async fn guesses_over_many_accounts_are_throttled_per_client_ip(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    s.register("me@x.io", "my right password").await;
    let auth = s.auth().await;
    // IP_FREE failures spread over accounts that each stay under their own threshold.
    for batch in 0..IP_FREE / 10 {
        let calls = (0..10).map(|i| {
            let mut a = auth.clone();
            let req = login(&format!("guess{batch}-{i}@x.io"), "wrong guess");
            async move { a.authenticate(req).await.unwrap_err().code() }
        });
        for code in join_all(calls).await {
            assert_eq!(code, Code::Unauthenticated);
        }
    }
    let e = auth
        .clone()
        .authenticate(login("fresh@x.io", "wrong guess"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(retry_delay(&e).is_some());
    let e = auth
        .clone()
        .authenticate(login("me@x.io", "my right password"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "this IP waits: {e:?}");
    // From another address the same account logs in.
    let grpc: SocketAddr = s.grpc_url.trim_start_matches("http://").parse().unwrap();
    let mut other = AuthServiceClient::new(channel_from("127.0.0.2", grpc).await);
    other
        .authenticate(login("me@x.io", "my right password"))
        .await
        .expect("another client IP is not throttled");
    s.stop().await;
}

async fn each_credential_has_a_request_rate(b: Backend) {
    let Some(s) = TestServer::start_with(b, |c| {
        c.rate_limit_rps = 5;
        c.rate_limit_burst = 10;
    })
    .await
    else {
        return;
    };
    let (_, alice) = s.user("alice").await;
    let (_, bob) = s.user("bob").await;
    let auth = s.auth().await;
    let info = |token: &str| {
        let mut a = auth.clone();
        let req = bearer(token, GetUserInfoRequest::default());
        async move { a.get_user_info(req).await }
    };
    let results = join_all((0..30).map(|_| info(&alice))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(
        (10..=12).contains(&ok),
        "a burst of 10 (and what refills meanwhile): {ok}"
    );
    let refused = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("over the rate");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let d = retry_delay(refused).expect("RetryInfo");
    assert!(d <= Duration::from_secs(1), "{d:?}");
    // Another user has its own budget; public calls are not counted.
    info(&bob).await.expect("bob is not limited by alice");
    s.login("alice@example.com", "correct horse battery").await;
    // The budget refills (5/s).
    tokio::time::sleep(Duration::from_millis(400)).await;
    info(&alice).await.expect("refilled");
    s.stop().await;
}

async fn register_is_limited_per_client_ip(b: Backend) {
    let Some(s) = TestServer::start_with(b, |c| c.register_per_hour = 3).await else {
        return;
    };
    let mut auth = s.auth().await;
    let reg = |i: usize| RegisterRequest {
        email: format!("new{i}@x.io"),
        password: "long enough password".into(),
        ..Default::default()
    };
    for i in 0..3 {
        auth.register(reg(i)).await.expect("within the limit");
    }
    let e = auth.register(reg(3)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    let d = retry_delay(&e).expect("RetryInfo");
    assert!(
        d > Duration::from_secs(600) && d <= Duration::from_secs(1200),
        "{d:?}"
    );
    let grpc: SocketAddr = s.grpc_url.trim_start_matches("http://").parse().unwrap();
    AuthServiceClient::new(channel_from("127.0.0.3", grpc).await)
        .register(reg(4))
        .await
        .expect("another IP has its own count");
    s.stop().await;
}

fn track(title: &str, size: i64) -> UploadAudioRequest {
    UploadAudioRequest {
        title: title.into(),
        file_size: size,
        ..Default::default()
    }
}

async fn a_user_over_quota_gets_resource_exhausted(b: Backend) {
    let Some(s) = TestServer::start_with(b, |c| {
        c.storage_quota_bytes = 1000;
        c.max_uploads_per_user = 2;
    })
    .await
    else {
        return;
    };
    let (_, alice) = s.user("alice").await;
    let (_, bob) = s.user("bob").await;
    let mut c = StreamServiceClient::new(s.channel().await);
    c.upload_audio(bearer(&alice, track("a", 600)))
        .await
        .unwrap();
    let e = c
        .upload_audio(bearer(&alice, track("b", 401)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "storage: {e:?}");
    assert!(e.message().contains("quota"), "{}", e.message());
    c.upload_audio(bearer(&alice, track("c", 400)))
        .await
        .unwrap();
    let e = c
        .upload_audio(bearer(&alice, track("d", 1)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "uploads: {e:?}");
    assert!(
        e.message().contains("uploads in progress"),
        "{}",
        e.message()
    );
    // Concurrent creations by one user: exactly the quota passes.
    let calls = (0..12).map(|i| {
        let mut c = c.clone();
        let req = bearer(&bob, track(&format!("t{i}"), 10));
        async move { c.upload_audio(req).await.map_err(|e| e.code()) }
    });
    let results = join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 2, "{results:?}");
    assert!(results.iter().all(|r| {
        r.as_ref()
            .err()
            .is_none_or(|c| *c == Code::ResourceExhausted)
    }));
    s.stop().await;
}

async fn live_streams_on_air_are_limited_per_user(b: Backend) {
    let Some(s) = TestServer::start_with(b, |c| c.max_live_per_user = 1).await else {
        return;
    };
    let (_, alice) = s.user("alice").await;
    let (_, bob) = s.user("bob").await;
    let c = StreamServiceClient::new(s.channel().await);
    let start = |token: &str| {
        let mut c = c.clone();
        let req = bearer(token, on_air());
        async move { c.start_stream(req).await.map_err(|e| e.code()) }
    };
    let results = join_all((0..8).map(|_| start(&alice))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    assert!(results.iter().all(|r| {
        r.as_ref()
            .err()
            .is_none_or(|c| *c == Code::ResourceExhausted)
    }));
    start(&bob).await.expect("bob has his own quota");
    s.stop().await;
}

fn event() -> TrackEventRequest {
    TrackEventRequest {
        event_type: "flood".into(),
        source: "test".into(),
        ..Default::default()
    }
}

async fn one_caller_cannot_fill_the_event_queue(b: Backend) {
    let Some(s) = TestServer::start_with(b, |c| c.analytics_queue_capacity = 16).await else {
        return;
    };
    let (_, alice) = s.user("alice").await;
    let (_, bob) = s.user("bob").await;
    let mut c = AnalyticsServiceClient::new(s.channel().await);
    // The login events are written before the writer is blocked.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let block = WriteBlock::take(&s).await;
    let mut accepted = 0;
    let refused = loop {
        match c.track_event(bearer(&alice, event())).await {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100, "alice is never refused");
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    c.track_event(bearer(&bob, event()))
        .await
        .expect("alice filling her share leaves room for bob");
    block.release().await;
    s.stop().await;
}

on_both_backends!(
    a_burst_of_guesses_is_counted_before_it_is_checked,
    guesses_over_many_accounts_are_throttled_per_client_ip,
    each_credential_has_a_request_rate,
    register_is_limited_per_client_ip,
    a_user_over_quota_gets_resource_exhausted,
    live_streams_on_air_are_limited_per_user,
    one_caller_cannot_fill_the_event_queue,
);
