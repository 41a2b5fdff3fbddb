//! Helpers shared by the stream_* tests: fixtures, uploads, polling and playback.
#![allow(dead_code)]

use std::{path::PathBuf, time::Duration};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tonic::{Status, transport::Channel};
use veza_proto::stream::{stream_service_client::StreamServiceClient, *};
use veza_tests::{TestServer, bearer};

pub type Client = StreamServiceClient<Channel>;

pub async fn client(s: &TestServer) -> Client {
    StreamServiceClient::new(s.channel().await).max_decoding_message_size(8 << 20)
}

pub fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Creates a track for `len` bytes.
pub async fn create(c: &mut Client, token: &str, title: &str, len: usize) -> UploadAudioResponse {
    c.upload_audio(bearer(
        token,
        UploadAudioRequest {
            title: title.into(),
            file_size: len as i64,
            ..Default::default()
        },
    ))
    .await
    .expect("UploadAudio")
    .into_inner()
}

/// The chunks `from..` of `data` cut at `chunk` bytes.
pub fn chunks(id: i64, data: &[u8], chunk: usize, from: usize) -> Vec<AudioChunk> {
    data.chunks(chunk)
        .enumerate()
        .skip(from)
        .map(|(i, c)| AudioChunk {
            stream_id: id,
            chunk_index: i as i32,
            audio_data: c.to_vec().into(),
            ..Default::default()
        })
        .collect()
}

pub async fn send(
    c: &mut Client,
    token: &str,
    chunks: Vec<AudioChunk>,
) -> Result<UploadAudioResponse, Status> {
    c.upload_audio_chunks(bearer(token, tokio_stream::iter(chunks)))
        .await
        .map(|r| r.into_inner())
}

/// Uploads `data` whole; returns the track id.
pub async fn upload(s: &TestServer, token: &str, title: &str, data: &[u8]) -> i64 {
    let mut c = client(s).await;
    let id = create(&mut c, token, title, data.len()).await.track_id;
    send(&mut c, token, chunks(id, data, 256 << 10, 0))
        .await
        .expect("upload");
    id
}

pub async fn info(c: &mut Client, token: &str, id: i64) -> GetStreamInfoResponse {
    c.get_stream_info(bearer(token, GetStreamInfoRequest { stream_id: id }))
        .await
        .expect("GetStreamInfo")
        .into_inner()
}

/// Polls until the track leaves `processing` (or `uploading`), then returns its info.
pub async fn settle(s: &TestServer, token: &str, id: i64) -> GetStreamInfoResponse {
    let mut c = client(s).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let i = info(&mut c, token, id).await;
        if i.status != "processing" {
            return i;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "track {id} still processing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn play(
    s: &TestServer,
    token: &str,
    req: StreamAudioRequest,
) -> Result<Vec<AudioChunk>, Status> {
    let mut c = client(s).await;
    let mut stream = c.stream_audio(bearer(token, req)).await?.into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.push(chunk?);
    }
    Ok(out)
}

pub fn concat(chunks: &[AudioChunk]) -> Vec<u8> {
    chunks
        .iter()
        .flat_map(|c| c.audio_data.iter().copied())
        .collect()
}

/// Frames of the source at 48 kHz, as the renditions hold them.
pub fn source_frames_48k(data: &[u8]) -> (u64, u16) {
    let info = veza_media_core::probe(std::io::Cursor::new(data.to_vec())).expect("probe");
    let frames = if info.sample_rate == 48_000 {
        info.frames
    } else {
        (info.frames as f64 * 48_000.0 / f64::from(info.sample_rate)).round() as u64
    };
    (frames, info.channels.min(2))
}

/// Decodes an Ogg Opus file with the media core: (frames at 48 kHz, channels).
pub fn decode_opus(data: &[u8]) -> (u64, u16) {
    let (info, pcm) =
        veza_media_core::source_to_pcm(std::io::Cursor::new(data.to_vec())).expect("decodes");
    let ch = info.channels.min(2);
    (pcm.len() as u64 / 2 / u64::from(ch), ch)
}

/// Two instances sharing one database, blob folder and (when given) NATS, with a track uploaded
/// through the first and ready on it: `(a, b, token, id)`. `None` when a backend is absent.
pub async fn pair_with_track(
    backend: veza_tests::Backend,
    nats: Option<String>,
    user: &str,
) -> Option<(TestServer, TestServer, String, i64)> {
    let a = TestServer::start_with(backend, |c| {
        c.nats_url = nats;
        c.blob_url = Some(format!("file://{}/shared-blobs", c.data_dir.display()));
    })
    .await?;
    let shared = a.config.blob_url.clone();
    let b = a.sibling(|c| c.blob_url = shared).await;
    let (_, token) = a.user(user).await;
    let id = upload(&a, &token, user, &fixture("stereo_44k.ogg")).await;
    assert_eq!(settle(&a, &token, id).await.status, "ready");
    Some((a, b, token, id))
}

/// `StreamAnalytics` of `id` every `interval_ms`, as `token`.
pub async fn analytics_feed(
    c: &mut Client,
    token: &str,
    id: i64,
    interval_ms: i32,
) -> Result<tonic::Streaming<AnalyticsData>, Status> {
    let req = StreamAnalyticsRequest {
        stream_id: id,
        interval_ms,
    };
    Ok(c.stream_analytics(bearer(token, req)).await?.into_inner())
}
