//! Decompression bombs and processing bounds (issue 15, item 1): a FLAC holding a day of silence
//! in a few hundred KiB is refused at upload when its header says how long it is, and fails
//! while decoding when it does not; memory stays bounded, the server stays SERVING and restarts
//! cleanly; a track gets at most `processing_attempts` attempts, restarts included; and
//! `GetAnalytics` bucket arithmetic does not overflow.

mod stream_common;

use std::{
    path::PathBuf,
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use stream_common::*;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use veza_proto::{
    analytics::{GetAnalyticsRequest, analytics_service_client::AnalyticsServiceClient},
    notification::{
        GetNotificationsRequest, notification_service_client::NotificationServiceClient,
    },
};
use veza_tests::{Backend, TestServer, bearer, on_both_backends};

/// Hours of silence in the bomb.
const BOMB_HOURS: u64 = 24;

/// A FLAC of `BOMB_HOURS` hours of 8 kHz mono silence in 65,535-sample frames (≈ 170 KiB),
/// made once per test process with ffmpeg.
fn bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let out: PathBuf = dir.path().join("bomb.flac");
        let seconds = (BOMB_HOURS * 3600).to_string();
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("anullsrc=r=8000:cl=mono:nb_samples=65535")
            .args(["-t", &seconds, "-c:a", "flac", "-frame_size", "65535"])
            .args(["-compression_level", "0"])
            .arg(&out)
            .status()
            .expect("ffmpeg is installed (./dev test installs it)");
        assert!(status.success(), "ffmpeg failed");
        std::fs::read(&out).expect("bomb written")
    })
}

/// The bomb with its STREAMINFO total-samples field zeroed: the duration is unknown until
/// decoded.
fn undeclared_bomb() -> Vec<u8> {
    let mut d = bomb().to_vec();
    assert_eq!(&d[..4], b"fLaC");
    d[21] &= 0xf0;
    d[22..26].fill(0);
    d
}

/// (VmRSS, VmHWM) of this process (the server runs in it), in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn assert_serving(s: &TestServer) {
    let status = HealthClient::new(s.channel().await)
        .check(HealthCheckRequest::default())
        .await
        .expect("health check")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
}

/// Polls until track `id` is `failed` (within `limit`); returns its error message.
async fn wait_failed(s: &TestServer, token: &str, id: i64, limit: Duration) -> String {
    let mut c = client(s).await;
    let deadline = Instant::now() + limit;
    loop {
        let i = info(&mut c, token, id).await;
        match i.status.as_str() {
            "failed" => return i.error_message,
            "processing" | "uploading" => {}
            other => panic!("track {id} is {other}, not failed"),
        }
        assert!(Instant::now() < deadline, "track {id} still {}", i.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The owner's `track_failed` notifications for `id`, once there is one (within 5 s: the
/// notification follows the status change).
async fn failure_notices(s: &TestServer, token: &str, id: i64) -> Vec<String> {
    let mut client = NotificationServiceClient::new(s.channel().await);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = client
            .get_notifications(bearer(token, GetNotificationsRequest::default()))
            .await
            .expect("GetNotifications")
            .into_inner();
        let found: Vec<String> = resp
            .notifications
            .into_iter()
            .filter(|n| n.r#type == "track_failed")
            .filter(|n| n.data.get("track_id") == Some(&id.to_string()))
            .map(|n| n.body)
            .collect();
        if !found.is_empty() || Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_declared_bomb_is_refused_at_upload(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let data = bomb();
    assert!(data.len() < 512 << 10, "bomb is {} bytes", data.len());
    let (_, token) = s.user("bomber").await;
    let mut c = client(&s).await;
    let id = create(&mut c, &token, "a day of silence", data.len())
        .await
        .track_id;
    let started = Instant::now();
    let err = send(&mut c, &token, chunks(id, data, 64 << 10, 0))
        .await
        .expect_err("refused");
    println!(
        "declared bomb: {} bytes, {BOMB_HOURS} h, refused in {:?}",
        data.len(),
        started.elapsed()
    );
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("longer than"), "{}", err.message());
    assert!(started.elapsed() < Duration::from_secs(5));
    let i = info(&mut c, &token, id).await;
    assert_eq!(i.status, "failed");
    assert_serving(&s).await;
    s.stop().await;
}

async fn an_undeclared_bomb_fails_while_decoding(b: Backend) {
    let Some(mut s) = TestServer::start_with(b, |c| {
        c.max_track_duration = Duration::from_secs(120);
    })
    .await
    else {
        return;
    };
    let data = undeclared_bomb();
    let (_, token) = s.user("bomber").await;
    let (rss_before, _) = memory_kib();
    let started = Instant::now();
    let id = upload(&s, &token, "silence, length unknown", &data).await;
    let reason = wait_failed(&s, &token, id, Duration::from_secs(30)).await;
    let (rss_after, hwm) = memory_kib();
    println!(
        "undeclared bomb: {} bytes, failed in {:?} ({reason}); RSS {rss_before} → {rss_after} KiB, peak {hwm} KiB",
        data.len(),
        started.elapsed(),
    );
    assert!(reason.contains("longer than"), "{reason}");
    assert!(
        rss_after.saturating_sub(rss_before) < 256 << 10,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    assert!(hwm < 2 << 20, "peak RSS {hwm} KiB");
    assert_eq!(failure_notices(&s, &token, id).await.len(), 1);
    assert_serving(&s).await;
    s.restart().await;
    assert_serving(&s).await;
    let mut c = client(&s).await;
    assert_eq!(info(&mut c, &token, id).await.status, "failed");
    // The working directory is gone.
    let tmp = s.data_dir().join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .expect("tmp dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("processing-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    s.stop().await;
}

async fn every_attempt_failing_ends_failed_after_the_last(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    // A file where the track's output directory would go: storing the outputs fails, every time.
    let blobs = s.data_dir().join("blobs");
    std::fs::create_dir_all(&blobs).expect("blob dir");
    std::fs::write(blobs.join("media"), b"not a directory").expect("blocker");
    let (_, token) = s.user("unlucky").await;
    let id = upload(&s, &token, "never stored", &fixture("mono_48k.flac")).await;
    let reason = wait_failed(&s, &token, id, Duration::from_secs(60)).await;
    assert!(reason.contains("attempt 3 of 3"), "{reason}");
    assert_eq!(failure_notices(&s, &token, id).await, vec![reason]);
    assert_serving(&s).await;
    s.stop().await;
}

async fn restarts_mid_processing_count_as_attempts(b: Backend) {
    let Some(mut s) = TestServer::start_with(b, |c| {
        c.max_track_duration = Duration::from_secs(48 * 3600);
    })
    .await
    else {
        return;
    };
    let (_, token) = s.user("restarter").await;
    let id = upload(&s, &token, "interrupted", &undeclared_bomb()).await;
    // Each start takes the track up again (one attempt each) and is stopped mid-attempt.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut c = client(&s).await;
        assert_eq!(info(&mut c, &token, id).await.status, "processing");
        s.restart().await;
    }
    // The fourth start gives up on it instead of handing it out again.
    let reason = wait_failed(&s, &token, id, Duration::from_secs(20)).await;
    assert!(
        reason.contains("did not complete in 3 attempts"),
        "{reason}"
    );
    assert_eq!(failure_notices(&s, &token, id).await.len(), 1);
    assert_serving(&s).await;
    s.stop().await;
}

on_both_backends!(
    a_declared_bomb_is_refused_at_upload,
    an_undeclared_bomb_fails_while_decoding,
    every_attempt_failing_ends_failed_after_the_last,
    restarts_mid_processing_count_as_attempts,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_buckets_of_a_huge_interval_do_not_overflow() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let (_, token) = s.admin().await;
    let to = 1_700_000_000_000i64;
    let ts = |ms: i64| {
        Some(prost_types::Timestamp {
            seconds: ms / 1000,
            nanos: 0,
        })
    };
    let resp = AnalyticsServiceClient::new(s.channel().await)
        .get_analytics(bearer(
            &token,
            GetAnalyticsRequest {
                event_type: "play_started".into(),
                from: ts(to - 3_600_000),
                to: ts(to),
                interval_seconds: i64::MAX,
                group_by: String::new(),
            },
        ))
        .await
        .expect("GetAnalytics")
        .into_inner();
    assert_eq!(resp.buckets.len(), 1);
    let end = resp.buckets[0].end.as_ref().expect("end");
    assert_eq!(end.seconds * 1000, to, "the bucket ends at `to`");
    s.stop().await;
}
