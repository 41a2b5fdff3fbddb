//! Upload fields kept rather than dropped: `metadata` and `duration` round-trip through
//! `GetStreamInfo` (bounded, refused whole when too large), `is_private` is exposed, and
//! `StreamAnalytics` works on tracks (listeners now, plays over the interval), also across
//! instances.

mod stream_common;

use futures::StreamExt;
use stream_common::*;
use tonic::{Code, Streaming, transport::Endpoint};
use veza_proto::stream::{
    AnalyticsData, StreamAnalyticsRequest, StreamAudioRequest, UploadAudioRequest,
    stream_service_client::StreamServiceClient,
};
use veza_tests::{Backend, TestServer, api_key, bearer, nats_url, on_air, on_both_backends};

/// Opaque bytes, not UTF-8: the server must keep them byte for byte.
fn opaque_metadata() -> Vec<u8> {
    let mut m = br#"{"artist":"Nobody","bpm":120}"#.to_vec();
    m.extend_from_slice(&[0, 0xff, 0xfe, 0x80, b'\n']);
    m
}

fn request(len: usize, metadata: Vec<u8>, duration: i32, is_private: bool) -> UploadAudioRequest {
    UploadAudioRequest {
        title: "fields".into(),
        file_size: len as i64,
        metadata,
        duration,
        is_private,
        ..Default::default()
    }
}

async fn metadata_and_duration_round_trip(b: Backend) {
    let Some(mut s) = TestServer::start(b).await else {
        return;
    };
    let (_, token) = s.user("tagger").await;
    let data = fixture("stereo_44k.ogg");
    let mut c = client(&s).await;
    // A claim far from the truth: it is kept as claimed, never used as the duration.
    let id = c
        .upload_audio(bearer(
            &token,
            request(data.len(), opaque_metadata(), 3600, false),
        ))
        .await
        .expect("UploadAudio")
        .into_inner()
        .track_id;
    let i = info(&mut c, &token, id).await;
    assert_eq!(i.status, "uploading");
    assert_eq!(i.metadata, opaque_metadata());
    assert_eq!(i.claimed_duration, 3600);
    assert_eq!(i.duration_ms, 0);
    assert!(!i.is_private);
    // The bytes go in over UploadAudioChunks, in two streams (a resume); the fields survive
    // the upload, the probe and processing.
    let all = chunks(id, &data, 4096, 0);
    let e = send(&mut c, &token, all[..2].to_vec()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    send(&mut c, &token, chunks(id, &data, 4096, 2))
        .await
        .expect("resumed upload");
    let i = settle(&s, &token, id).await;
    assert_eq!(i.status, "ready", "{}", i.error_message);
    assert_eq!(i.metadata, opaque_metadata());
    assert_eq!(i.claimed_duration, 3600);
    assert!(
        i.duration_ms > 0 && i.duration_ms < 60_000,
        "measured {} ms",
        i.duration_ms
    );
    // Stored, not cached: the same after a restart.
    s.restart().await;
    let token = s
        .login("tagger@example.com", "correct horse battery")
        .await
        .0;
    let mut c = client(&s).await;
    let i = info(&mut c, &token, id).await;
    assert_eq!((i.metadata, i.claimed_duration), (opaque_metadata(), 3600));
    // Without them: empty and 0.
    let plain = create(&mut c, &token, "plain", 10).await.track_id;
    let i = info(&mut c, &token, plain).await;
    assert!(i.metadata.is_empty());
    assert_eq!(i.claimed_duration, 0);
    s.stop().await;
}

async fn is_private_is_exposed(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, token) = s.user("hider").await;
    let (_, admin) = s.admin().await;
    let mut c = client(&s).await;
    let private = c
        .upload_audio(bearer(&token, request(10, vec![], 0, true)))
        .await
        .expect("private")
        .into_inner()
        .track_id;
    let public = create(&mut c, &token, "public", 10).await.track_id;
    assert!(info(&mut c, &token, private).await.is_private);
    assert!(info(&mut c, &admin, private).await.is_private);
    assert!(!info(&mut c, &token, public).await.is_private);
    // A live stream is public.
    let live = c
        .start_stream(bearer(&token, on_air()))
        .await
        .expect("on air")
        .into_inner();
    let i = live.info.expect("info");
    assert!(!i.is_private && i.metadata.is_empty() && i.claimed_duration == 0);
    s.stop().await;
}

async fn bad_metadata_or_duration_is_refused_and_nothing_stored(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, token) = s.user("stuffer").await;
    let mut c = client(&s).await;
    let refused = [
        (request(10, vec![b'x'; 16 * 1024 + 1], 0, false), "metadata"),
        (request(10, vec![0; 3 << 20], 0, false), "metadata"),
        (request(10, vec![], -1, false), "duration"),
        (request(10, vec![], i32::MIN, false), "duration"),
    ];
    for (req, field) in refused {
        let len = req.metadata.len();
        let e = c.upload_audio(bearer(&token, req)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{len} bytes: {e:?}");
        assert!(e.message().contains(field), "{}", e.message());
    }
    assert!(
        s.db()
            .media_ids_with_status("uploading")
            .await
            .unwrap()
            .is_empty(),
        "a refused upload created a track"
    );
    // Exactly at the bound: kept whole.
    let edge = vec![0xa5; 16 * 1024];
    let id = c
        .upload_audio(bearer(&token, request(10, edge.clone(), i32::MAX, false)))
        .await
        .expect("16 KiB of metadata")
        .into_inner()
        .track_id;
    let i = info(&mut c, &token, id).await;
    assert_eq!((i.metadata, i.claimed_duration), (edge, i32::MAX));
    s.stop().await;
}

/// A client whose small flow-control windows hold the server back: a playback it stops
/// reading stays in progress (with hyper's default 2 MiB window a short track is sent whole
/// at once and its playback is over on the server).
async fn held_client(s: &TestServer) -> Client {
    let channel = Endpoint::from_shared(s.grpc_url.clone())
        .expect("url")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connects");
    StreamServiceClient::new(channel).max_decoding_message_size(8 << 20)
}

/// Samples until one satisfies `f` (at most `n`).
async fn sample_until(
    feed: &mut Streaming<AnalyticsData>,
    n: usize,
    mut f: impl FnMut(&AnalyticsData) -> bool,
) -> Vec<AnalyticsData> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let d = feed.next().await.expect("a sample").expect("ok");
        let done = f(&d);
        seen.push(d);
        if done {
            return seen;
        }
    }
    panic!("no such sample in {seen:?}");
}

async fn stream_analytics_on_a_track(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, owner) = s.user("artist").await;
    let (_, fan) = s.user("fan").await;
    let (_, admin) = s.admin().await;
    let data = fixture("stereo_44k.ogg");
    let id = upload(&s, &owner, "analysed", &data).await;
    assert_eq!(settle(&s, &owner, id).await.status, "ready");
    let mut c = client(&s).await;
    let ask = |interval_ms| StreamAnalyticsRequest {
        stream_id: id,
        interval_ms,
    };
    // Same rules as for a live stream.
    let e = c
        .stream_analytics(bearer(&fan, ask(200)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = c
        .stream_analytics(bearer(&owner, ask(5)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let key = s.new_api_key(&admin, "dash", &["analytics:read"]).await;
    let mut by_key = c
        .stream_analytics(api_key(&key, ask(200)))
        .await
        .expect("an analytics:read key may")
        .into_inner();
    let mut feed = c
        .stream_analytics(bearer(&owner, ask(200)))
        .await
        .expect("the owner may")
        .into_inner();
    let first = feed.next().await.expect("a sample").expect("ok");
    assert_eq!((first.stream_id, first.listeners, first.plays), (id, 0, 0));
    // A listener that holds its playback open (reads one chunk, then waits).
    let mut listener = held_client(&s)
        .await
        .stream_audio(bearer(
            &fan,
            StreamAudioRequest {
                track_id: id,
                format: "pcm_s16le".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("plays")
        .into_inner();
    listener.next().await.expect("a chunk").expect("ok");
    let mut seen = sample_until(&mut feed, 20, |d| d.listeners == 1).await;
    assert_eq!(info(&mut c, &fan, id).await.listeners, 1);
    sample_until(&mut by_key, 20, |d| d.listeners == 1).await;
    // The play is counted once the settle delay has passed.
    seen.extend(sample_until(&mut feed, 30, |d| d.plays > 0).await);
    drop(listener);
    seen.extend(sample_until(&mut feed, 20, |d| d.listeners == 0).await);
    // Later windows (over the settle delay): no play counted twice.
    for _ in 0..8 {
        seen.push(feed.next().await.expect("a sample").expect("ok"));
    }
    let plays: i32 = seen.iter().map(|d| d.plays).sum();
    assert_eq!(plays, 1, "{seen:?}");
    assert!(seen.iter().all(|d| d.stream_id == id && d.bitrate == 0.0));
    assert_eq!(info(&mut c, &fan, id).await.listeners, 0);
    s.stop().await;
}

on_both_backends!(
    metadata_and_duration_round_trip,
    is_private_is_exposed,
    bad_metadata_or_duration_is_refused_and_nothing_stored,
    stream_analytics_on_a_track,
);

/// Two instances over PostgreSQL and NATS: a track's listener on B shows on A, in
/// `StreamAnalytics` and `GetStreamInfo`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_listeners_add_up_across_instances() {
    let Some(nats) = nats_url().await else {
        return;
    };
    let Some((a, bi, token, id)) =
        pair_with_track(Backend::Postgres, Some(nats), "everywhere").await
    else {
        return;
    };
    let mut ca = client(&a).await;
    let mut feed = analytics_feed(&mut ca, &token, id, 500)
        .await
        .expect("analytics on A");
    let mut on_b = held_client(&bi)
        .await
        .stream_audio(bearer(
            &token,
            StreamAudioRequest {
                track_id: id,
                format: "pcm_s16le".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("plays on B")
        .into_inner();
    on_b.next().await.expect("a chunk").expect("ok");
    let seen = sample_until(&mut feed, 20, |d| d.listeners == 1).await;
    let more = sample_until(&mut feed, 20, |d| d.plays > 0).await;
    assert_eq!(
        seen.iter().chain(&more).map(|d| d.plays).sum::<i32>(),
        1,
        "{seen:?} {more:?}"
    );
    assert_eq!(info(&mut ca, &token, id).await.listeners, 1);
    drop(on_b);
    sample_until(&mut feed, 20, |d| d.listeners == 0).await;
    bi.stop().await;
    a.stop().await;
}
