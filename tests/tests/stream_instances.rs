//! Two instances sharing the database and the object store (and NATS when present): a track
//! uploaded through one plays through the other, and its signed URLs open on both.

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
    let Some(a) = TestServer::start_with(b, |c| {
        c.nats_url = nats.clone();
        c.blob_url = Some(format!("file://{}/shared-blobs", c.data_dir.display()));
    })
    .await
    else {
        return;
    };
    let shared = a.config.blob_url.clone();
    let bi = a.sibling(|c| c.blob_url = shared).await;
    let (_, token) = a.user("multi").await;
    let data = fixture("stereo_44k.ogg");
    let id = upload(&a, &token, "multi", &data).await;
    assert_eq!(settle(&a, &token, id).await.status, "ready");
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

on_both_backends!(a_track_plays_on_every_instance);
