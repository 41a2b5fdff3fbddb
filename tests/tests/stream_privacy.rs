//! Private tracks: only the owner (and admins) see and play them; to anyone else they do not
//! exist (`NOT_FOUND`, like an unknown id), and their media URLs cannot be derived from another
//! track's signature.

mod stream_common;

use stream_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use veza_proto::stream::{GetStreamInfoRequest, StreamAudioRequest, UploadAudioRequest};
use veza_tests::{Backend, TestServer, bearer, on_both_backends};

/// The HTTP status of a GET.
async fn status_of(url: &str) -> u16 {
    let rest = url.trim_start_matches("http://");
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    String::from_utf8_lossy(&raw[..12])
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

async fn upload_as(s: &TestServer, token: &str, data: &[u8], is_private: bool) -> i64 {
    let mut c = client(s).await;
    let id = c
        .upload_audio(bearer(
            token,
            UploadAudioRequest {
                title: if is_private { "secret" } else { "open" }.into(),
                file_size: data.len() as i64,
                is_private,
                ..Default::default()
            },
        ))
        .await
        .expect("UploadAudio")
        .into_inner()
        .track_id;
    send(&mut c, token, chunks(id, data, 16 << 10, 0))
        .await
        .expect("upload");
    assert_eq!(settle(s, token, id).await.status, "ready");
    id
}

fn whole(id: i64) -> StreamAudioRequest {
    StreamAudioRequest {
        track_id: id,
        ..Default::default()
    }
}

async fn private_tracks_are_only_the_owners(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, owner) = s.user("owner").await;
    let (_, other) = s.user("other").await;
    let (_, admin) = s.admin().await;
    let data = fixture("mono_48k.flac");
    let secret = upload_as(&s, &owner, &data, true).await;
    let open = upload_as(&s, &other, &data, false).await;
    let mut c = client(&s).await;

    // The owner and admins see and play it.
    let mine = info(&mut c, &owner, secret).await;
    assert!(!mine.audio_url.is_empty());
    assert_eq!(info(&mut c, &admin, secret).await.status, "ready");
    assert!(!play(&s, &owner, whole(secret)).await.unwrap().is_empty());
    assert!(!play(&s, &admin, whole(secret)).await.unwrap().is_empty());

    // Anyone else: NOT_FOUND, worded like an unknown id.
    let e = c
        .get_stream_info(bearer(&other, GetStreamInfoRequest { stream_id: secret }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
    let unknown = c
        .get_stream_info(bearer(&other, GetStreamInfoRequest { stream_id: 999_999 }))
        .await
        .unwrap_err();
    assert_eq!(
        e.message().replace(&secret.to_string(), "ID"),
        unknown.message().replace("999999", "ID")
    );
    let e = play(&s, &other, whole(secret)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
    let e = play(
        &s,
        &other,
        StreamAudioRequest {
            track_id: secret,
            format: "pcm_s16le".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Public tracks stay public.
    assert_eq!(info(&mut c, &owner, open).await.status, "ready");
    assert!(!play(&s, &owner, whole(open)).await.unwrap().is_empty());

    // HTTP: the owner's signed URL plays; the other user's URL of their public track, pointed
    // at the private one, does not (a signature opens one media only).
    assert_eq!(status_of(&mine.audio_url).await, 200);
    let theirs = info(&mut c, &other, open).await.audio_url;
    assert_eq!(status_of(&theirs).await, 200);
    let forged = theirs.replace(&format!("/media/{open}/"), &format!("/media/{secret}/"));
    assert_ne!(forged, theirs);
    assert_eq!(status_of(&forged).await, 403);
    s.stop().await;
}

on_both_backends!(private_tracks_are_only_the_owners);
