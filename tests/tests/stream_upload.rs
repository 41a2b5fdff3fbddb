//! Uploads: resume after a broken stream and after a restart (same SHA-256 as the source), and
//! every kind of bad input with its status code, on both backends.

mod stream_common;

use stream_common::*;
use tonic::Code;
use veza_proto::stream::{AudioChunk, StreamAudioRequest, UploadAudioRequest};
use veza_tests::{Backend, TestServer, api_key, bearer, on_both_backends};

const CHUNK: usize = 16 << 10;

async fn resume_after_a_broken_stream(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, token) = s.user("resumer").await;
    let data = fixture("stereo_44k_s16.wav");
    let mut c = client(&s).await;
    let id = create(&mut c, &token, "resume", data.len()).await.track_id;
    let all = chunks(id, &data, CHUNK, 0);
    // Send 4 chunks, then break the stream (the client goes away without closing it).
    let (tx, rx) = tokio::sync::mpsc::channel::<AudioChunk>(8);
    for ch in all.iter().take(4) {
        tx.send(ch.clone()).await.unwrap();
    }
    let mut c2 = client(&s).await;
    let call = tokio::spawn({
        let token = token.clone();
        async move {
            c2.upload_audio_chunks(bearer(
                &token,
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .await
        }
    });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while info(&mut c, &token, id).await.chunks_received < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "chunks never stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    call.abort();
    drop(tx);
    let i = info(&mut c, &token, id).await;
    assert_eq!((i.status.as_str(), i.chunks_received), ("uploading", 4));
    assert_eq!(i.bytes_received, (4 * CHUNK) as i64);
    // Resume from one chunk before the last stored one: the re-sent chunk is accepted again.
    let r = send(&mut c, &token, chunks(id, &data, CHUNK, 3))
        .await
        .expect("resumed");
    assert!(r.success);
    let i = settle(&s, &token, id).await;
    assert_eq!(i.status, "ready", "{}", i.error_message);
    let row = s.db().media(id).await.unwrap().unwrap();
    assert_eq!(row.sha256, sha256(&data));
    s.stop().await;
}

async fn resume_after_a_restart(b: Backend) {
    let Some(mut s) = TestServer::start(b).await else {
        return;
    };
    let (_, token) = s.user("restarter").await;
    let data = fixture("stereo_44k.flac");
    let mut c = client(&s).await;
    let id = create(&mut c, &token, "restart", data.len()).await.track_id;
    // A clean close before the end: kept, resumable, FAILED_PRECONDITION says where to resume.
    let part: Vec<_> = chunks(id, &data, CHUNK, 0).into_iter().take(2).collect();
    let e = send(&mut c, &token, part).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("resume at chunk 2"), "{}", e.message());
    s.restart().await;
    let mut c = client(&s).await;
    let token = s
        .login("restarter@example.com", "correct horse battery")
        .await
        .0;
    let i = info(&mut c, &token, id).await;
    assert_eq!((i.status.as_str(), i.chunks_received), ("uploading", 2));
    let from = i.chunks_received as usize;
    send(&mut c, &token, chunks(id, &data, CHUNK, from))
        .await
        .expect("resumed");
    let i = settle(&s, &token, id).await;
    assert_eq!(i.status, "ready", "{}", i.error_message);
    assert_eq!(
        s.db().media(id).await.unwrap().unwrap().sha256,
        sha256(&data)
    );
    // Re-sending a finished upload is refused without harm.
    let e = send(&mut c, &token, chunks(id, &data, CHUNK, 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    s.stop().await;
}

async fn processing_interrupted_by_a_restart_is_picked_up(b: Backend) {
    let Some(mut s) = TestServer::start(b).await else {
        return;
    };
    let (_, token) = s.user("requeue").await;
    let id = upload(&s, &token, "requeue", &fixture("mono_48k.flac")).await;
    settle(&s, &token, id).await;
    // Pretend the server died while processing it.
    let db = s.db();
    db.set_media_status(id, "processing").await.unwrap();
    s.restart().await;
    let token = s
        .login("requeue@example.com", "correct horse battery")
        .await
        .0;
    let i = settle(&s, &token, id).await;
    assert_eq!(i.status, "ready");
    s.stop().await;
}

async fn bad_input(b: Backend) {
    // Leaves more tracks uploading than the per-user default of 4.
    let Some(s) = TestServer::start_with(b, |c| c.max_uploads_per_user = 0).await else {
        return;
    };
    let (alice, token) = s.user("alice").await;
    let (_, other) = s.user("mallory").await;
    let mut c = client(&s).await;
    let wav = fixture("stereo_44k_s16.wav");

    // Garbage: INVALID_ARGUMENT with the reason, and the track is failed.
    let garbage = fixture("corrupt.bin");
    let id = create(&mut c, &token, "garbage", garbage.len())
        .await
        .track_id;
    let e = send(&mut c, &token, chunks(id, &garbage, CHUNK, 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(e.message().contains("audio_data"), "{}", e.message());
    let i = info(&mut c, &token, id).await;
    assert_eq!(i.status, "failed");
    assert!(!i.error_message.is_empty());

    // Truncated: refused at close or failed by processing; never ready.
    for name in [
        "truncated.flac",
        "truncated.wav",
        "truncated.opus",
        "corrupt.mp3",
    ] {
        let data = fixture(name);
        let id = create(&mut c, &token, name, data.len()).await.track_id;
        if let Err(e) = send(&mut c, &token, chunks(id, &data, CHUNK, 0)).await {
            assert_eq!(e.code(), Code::InvalidArgument, "{name}: {}", e.message());
        }
        let i = settle(&s, &token, id).await;
        assert!(
            i.status == "failed" || i.status == "ready",
            "{name}: {}",
            i.status
        );
        if i.status == "ready" {
            // Decodable prefix: it must then play.
            play(
                &s,
                &token,
                StreamAudioRequest {
                    track_id: id,
                    ..Default::default()
                },
            )
            .await
            .expect("plays");
        }
    }

    // A gap.
    let id = create(&mut c, &token, "gap", wav.len()).await.track_id;
    let mut cs = chunks(id, &wav, CHUNK, 0);
    cs.remove(1);
    let e = send(&mut c, &token, cs).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("chunk_index"), "{}", e.message());
    assert_eq!(info(&mut c, &token, id).await.chunks_received, 1);

    // Oversized chunk and more bytes than file_size.
    let big = vec![0u8; (1 << 20) + 1];
    let id = create(&mut c, &token, "big", big.len() + 10).await.track_id;
    let e = send(&mut c, &token, chunks(id, &big, big.len(), 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    let id = create(&mut c, &token, "short", 100).await.track_id;
    let e = send(&mut c, &token, chunks(id, &wav[..200], 200, 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    // Over the configured maximum.
    let e = c
        .upload_audio(bearer(
            &token,
            UploadAudioRequest {
                title: "huge".into(),
                file_size: 1 << 40,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    // Bad metadata.
    for req in [
        UploadAudioRequest {
            title: "".into(),
            file_size: 10,
            ..Default::default()
        },
        UploadAudioRequest {
            title: "x".into(),
            file_size: 0,
            ..Default::default()
        },
    ] {
        let e = c.upload_audio(bearer(&token, req)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }

    // Wrong owner: creating for someone else, and uploading into someone else's track.
    let e = c
        .upload_audio(bearer(
            &other,
            UploadAudioRequest {
                user_id: alice,
                title: "x".into(),
                file_size: 10,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let id = create(&mut c, &token, "mine", wav.len()).await.track_id;
    let e = send(&mut c, &other, chunks(id, &wav, CHUNK, 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(info(&mut c, &token, id).await.chunks_received, 0);

    // Unknown track.
    let e = send(&mut c, &token, chunks(987_654, &wav, CHUNK, 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .get_stream_info(bearer(
            &token,
            veza_proto::stream::GetStreamInfoRequest { stream_id: 987_654 },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = play(
        &s,
        &token,
        StreamAudioRequest {
            track_id: 987_654,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // No chunks at all.
    let e = send(&mut c, &token, vec![]).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Streaming a track that is not ready: FAILED_PRECONDITION.
    let e = play(
        &s,
        &token,
        StreamAudioRequest {
            track_id: id,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    // Bad format, negative start, start past the end.
    let ready = upload(&s, &token, "ok", &wav).await;
    assert_eq!(settle(&s, &token, ready).await.status, "ready");
    for (req, code) in [
        (
            StreamAudioRequest {
                track_id: ready,
                format: "mp3".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            StreamAudioRequest {
                track_id: ready,
                start_ms: -1,
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            StreamAudioRequest {
                track_id: ready,
                start_ms: 3_600_000,
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
    ] {
        let e = play(&s, &token, req).await.unwrap_err();
        assert_eq!(e.code(), code, "{}", e.message());
    }
    s.stop().await;
}

async fn streaming_while_processing_is_refused(b: Backend) {
    let Some(s) = TestServer::start_with(b, |c| c.processing_workers = 1).await else {
        return;
    };
    let (_, token) = s.user("eager").await;
    let wav = fixture("stereo_44k_s16.wav");
    // Several uploads queue behind one worker: the last is still processing when asked.
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(upload(&s, &token, &format!("t{n}"), &wav).await);
    }
    let last = *ids.last().unwrap();
    let mut c = client(&s).await;
    if info(&mut c, &token, last).await.status == "processing" {
        let e = play(
            &s,
            &token,
            StreamAudioRequest {
                track_id: last,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("processing"), "{}", e.message());
    }
    for id in ids {
        assert_eq!(settle(&s, &token, id).await.status, "ready");
    }
    s.stop().await;
}

async fn api_keys_upload_for_an_owner(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (owner, token) = s.user("owner").await;
    let (_, admin) = s.admin().await;
    let key = s
        .auth()
        .await
        .create_api_key(bearer(
            &admin,
            veza_proto::auth::CreateApiKeyRequest {
                name: "uploader".into(),
                scopes: vec!["stream:publish".into()],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .api_key;
    let mut c = client(&s).await;
    let e = c
        .upload_audio(api_key(
            &key,
            UploadAudioRequest {
                title: "k".into(),
                file_size: 10,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .upload_audio(api_key(
            &key,
            UploadAudioRequest {
                user_id: 99_999,
                title: "k".into(),
                file_size: 10,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let wav = fixture("mono_48k_f32.wav");
    let r = c
        .upload_audio(api_key(
            &key,
            UploadAudioRequest {
                user_id: owner,
                title: "k".into(),
                file_size: wav.len() as i64,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    c.upload_audio_chunks(api_key(
        &key,
        tokio_stream::iter(chunks(r.track_id, &wav, CHUNK, 0)),
    ))
    .await
    .unwrap();
    let i = settle(&s, &token, r.track_id).await;
    assert_eq!((i.owner_id, i.status.as_str()), (owner, "ready"));
    s.stop().await;
}

on_both_backends!(
    resume_after_a_broken_stream,
    resume_after_a_restart,
    resume_with_a_remote_blob_store,
    processing_interrupted_by_a_restart_is_picked_up,
    bad_input,
    streaming_while_processing_is_refused,
    api_keys_upload_for_an_owner,
);

/// With a blob store that is not a local directory the upload keeps a local working copy (for
/// the probe and the processing); a resumed upload rebuilds it and its hash from the store.
async fn resume_with_a_remote_blob_store(b: Backend) {
    let Some(s) = TestServer::start_with(b, |c| c.blob_url = Some("memory://".into())).await else {
        return;
    };
    let (_, token) = s.user("remote").await;
    let data = fixture("stereo_44k.mp3");
    let mut c = client(&s).await;
    let id = create(&mut c, &token, "remote", data.len()).await.track_id;
    let part: Vec<_> = chunks(id, &data, CHUNK, 0).into_iter().take(2).collect();
    let e = send(&mut c, &token, part).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    send(&mut c, &token, chunks(id, &data, CHUNK, 1))
        .await
        .expect("resumed");
    let i = settle(&s, &token, id).await;
    assert_eq!(i.status, "ready", "{}", i.error_message);
    assert_eq!(
        s.db().media(id).await.unwrap().unwrap().sha256,
        sha256(&data)
    );
    assert!(
        !play(
            &s,
            &token,
            StreamAudioRequest {
                track_id: id,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .is_empty()
    );
    s.stop().await;
}
