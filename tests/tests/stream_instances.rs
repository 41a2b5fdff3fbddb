//! Instances sharing the database and the object store (and NATS when present): a track
//! uploaded through one plays through the other, its signed URLs open on both, and exactly one
//! instance processes each track (claims), also when several race for interrupted work.

mod stream_common;

use stream_common::*;
use veza_proto::stream::StreamAudioRequest;
use veza_tests::{Backend, TestServer, nats_url, on_both_backends};

async fn a_track_plays_on_every_instance(b: Backend) {
    let nats = if b == Backend::Postgres {
        nats_url().await
    } else {
        None
    };
    let Some((a, bi, token, id)) = pair_with_track(b, nats, "multi").await else {
        return;
    };
    let on_b = settle(&bi, &token, id).await;
    assert_eq!(on_b.status, "ready");
    let from_a = concat(
        &play(
            &a,
            &token,
            StreamAudioRequest {
                track_id: id,
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    let from_b = concat(
        &play(
            &bi,
            &token,
            StreamAudioRequest {
                track_id: id,
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    assert_eq!(from_a, from_b);
    // A URL signed by B opens on A (one secret in the database).
    let url_on_a = on_b.audio_url.replace(
        bi.http_url.trim_start_matches("http://"),
        a.http_url.trim_start_matches("http://"),
    );
    let rest = url_on_a.trim_start_matches("http://");
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw[..40])
    );
    bi.stop().await;
    a.stop().await;
}

/// The user's notification count once it reaches `n` (or after 10 s).
async fn notifications(db: &veza_storage::Db, uid: i64, n: i64) -> i64 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let total = db.notification_counts(uid).await.unwrap().total;
        if total >= n || tokio::time::Instant::now() > deadline {
            return total;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn exactly_one_instance_processes_a_track(b: Backend) {
    let nats = if b == Backend::Postgres {
        nats_url().await
    } else {
        None
    };
    let Some(a) = TestServer::start_with(b, |c| {
        c.nats_url = nats.clone();
        c.blob_url = Some(format!("file://{}/shared-blobs", c.data_dir.display()));
    })
    .await
    else {
        return;
    };
    let shared = a.config.blob_url.clone();
    let (uid, token) = a.user("claims").await;
    let data = fixture("mono_48k.flac");
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = upload(&a, &token, "claimed", &data).await;
        assert_eq!(settle(&a, &token, id).await.status, "ready");
        ids.push(id);
    }
    let db = a.db();
    let notified = notifications(&db, uid, 4).await;
    assert_eq!(notified, 4, "one track_ready per upload");
    // The instance processing them died: back to `processing`, unclaimed, except the last one,
    // whose claim is still held (until a minute from now) by a live instance "ghost".
    for id in &ids {
        db.set_media_status(*id, "processing").await.unwrap();
    }
    let held = ids[3];
    let until = veza_storage::now_ms() + 60_000;
    assert!(db.claim_media(held, "ghost", until).await.unwrap());
    // Two more instances start at once; each takes up unclaimed work at start-up.
    let (b1, b2) = tokio::join!(
        a.sibling(|c| c.blob_url = shared.clone()),
        a.sibling(|c| c.blob_url = shared.clone())
    );
    for id in &ids[..3] {
        assert_eq!(settle(&b1, &token, *id).await.status, "ready");
    }
    // Give a duplicate run time to show up.
    notifications(&db, uid, notified + 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        db.notification_counts(uid).await.unwrap().total,
        notified + 3,
        "each interrupted track was processed exactly once"
    );
    let row = db.media(held).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.claimed_by.as_str()),
        ("processing", "ghost"),
        "a held claim is respected"
    );
    // The ghost gives up its claim: the next sweep or start takes it.
    db.release_media_claim(held, "ghost").await.unwrap();
    let b3 = a.sibling(|c| c.blob_url = shared.clone()).await;
    assert_eq!(settle(&b3, &token, held).await.status, "ready");
    notifications(&db, uid, notified + 4).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        db.notification_counts(uid).await.unwrap().total,
        notified + 4
    );
    b3.stop().await;
    b2.stop().await;
    b1.stop().await;
    a.stop().await;
}

on_both_backends!(
    a_track_plays_on_every_instance,
    exactly_one_instance_processes_a_track
);
