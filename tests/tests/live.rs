//! Live streams end to end: a producer publishing over `UploadAudioChunks`, listeners on
//! `StreamAudio` (joining mid-stream, stalling, on another instance), stop and grace, recording,
//! `StreamAnalytics`, and every rejection.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::{Code, transport::Channel};
use veza_control_plane::Config;
use veza_proto::stream::{stream_service_client::StreamServiceClient, *};
use veza_tests::{Backend, TestServer, bearer, nats_url, on_both_backends, with_header};

type Client = StreamServiceClient<Channel>;

const RATE: u32 = 48_000;

/// The stalled-listener test measures this process's memory: it runs alone (write), the other
/// tests of this file share (read).
static PROCESS_MEMORY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Source frequency at `t_ms`: a 300 Hz tone rising by 100 Hz each second.
fn freq_at(t_ms: u64) -> f64 {
    300.0 + 100.0 * (t_ms / 1000) as f64
}

/// Stereo pcm_s16le of the source from `from_ms` for `ms`.
fn pcm(from_ms: u64, ms: u64) -> Vec<u8> {
    let first = from_ms * u64::from(RATE) / 1000;
    let n = ms * u64::from(RATE) / 1000;
    let mut out = Vec::with_capacity(n as usize * 4);
    let mut phase = 0.0f64;
    // Phase of a piecewise-constant frequency: integrate from 0.
    for i in 0..first {
        phase += freq_at(i * 1000 / u64::from(RATE)) / f64::from(RATE);
    }
    for i in first..first + n {
        let s = (phase.fract() * std::f64::consts::TAU).sin() * 0.5;
        phase += freq_at(i * 1000 / u64::from(RATE)) / f64::from(RATE);
        let v = (s * 32767.0) as i16;
        out.extend_from_slice(&v.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

async fn client(s: &TestServer) -> Client {
    StreamServiceClient::new(s.channel().await).max_decoding_message_size(8 << 20)
}

/// A client on its own connection whose HTTP/2 stream and connection windows are `window` bytes.
async fn windowed_client(s: &TestServer, window: u32) -> Client {
    let ch = tonic::transport::Endpoint::from_shared(s.grpc_url.clone())
        .expect("url")
        .initial_stream_window_size(Some(window))
        .initial_connection_window_size(Some(window))
        .connect()
        .await
        .expect("connects");
    StreamServiceClient::new(ch).max_decoding_message_size(8 << 20)
}

/// A live stream started by a new user, its producer already `ms` of audio in, and a second
/// user (`listener`) to listen with.
struct OnAir {
    token: String,
    fan: String,
    c: Client,
    id: i64,
    p: Producer,
}

async fn on_air(s: &TestServer, listener: &str, ms: u64) -> OnAir {
    let (_, token) = s.user("dj").await;
    let (_, fan) = s.user(listener).await;
    let mut c = client(s).await;
    let id = start(&mut c, &token, false).await;
    let p = producer(s.channel().await, &token);
    send_audio(&p.tx, id, 0, ms, true).await;
    OnAir {
        token,
        fan,
        c,
        id,
        p,
    }
}

async fn start(c: &mut Client, token: &str, record: bool) -> i64 {
    c.start_stream(bearer(
        token,
        StartStreamRequest {
            title: "on air".into(),
            sample_rate: RATE as i32,
            channels: 2,
            codec: "pcm_s16le".into(),
            record,
            ..Default::default()
        },
    ))
    .await
    .expect("StartStream")
    .into_inner()
    .stream_id
}

fn chunk(id: i64, index: i32, data: Vec<u8>) -> AudioChunk {
    AudioChunk {
        stream_id: id,
        chunk_index: index,
        audio_data: data.into(),
        sample_rate: RATE as i32,
        channels: 2,
        codec: "pcm_s16le".into(),
        timestamp: None,
    }
}

/// An open `UploadAudioChunks` call: the sender feeding it (see `send_audio`) and its result.
struct Producer {
    tx: mpsc::Sender<AudioChunk>,
    call: tokio::task::JoinHandle<Result<UploadAudioResponse, tonic::Status>>,
}

fn producer(s_channel: Channel, token: &str) -> Producer {
    let (tx, rx) = mpsc::channel(16);
    let token = token.to_string();
    let call = tokio::spawn(async move {
        let mut c = StreamServiceClient::new(s_channel);
        c.upload_audio_chunks(bearer(
            &token,
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await
        .map(|r| r.into_inner())
    });
    Producer { tx, call }
}

/// Sends `[from_ms, from_ms + ms)` in 100 ms chunks, paced to real time when `paced`.
async fn send_audio(tx: &mpsc::Sender<AudioChunk>, id: i64, from_ms: u64, ms: u64, paced: bool) {
    let t0 = tokio::time::Instant::now();
    for k in 0..ms / 100 {
        if paced {
            tokio::time::sleep_until(t0 + Duration::from_millis(k * 100)).await;
        }
        let at = from_ms + k * 100;
        tx.send(chunk(id, (at / 100) as i32, pcm(at, 100)))
            .await
            .expect("producer open");
    }
}

/// Reads a listener's chunks until it ends or `until` is reached.
async fn listen_for(
    mut stream: tonic::Streaming<AudioChunk>,
    until: Duration,
) -> (Vec<AudioChunk>, Option<tonic::Status>, bool) {
    let mut out = Vec::new();
    let deadline = tokio::time::sleep(until);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(c)) => out.push(c),
                Some(Err(e)) => return (out, Some(e), true),
                None => return (out, None, true),
            },
            _ = &mut deadline => return (out, None, false),
        }
    }
}

async fn open_listener(c: &mut Client, token: &str, id: i64) -> tonic::Streaming<AudioChunk> {
    c.stream_audio(bearer(
        token,
        StreamAudioRequest {
            track_id: id,
            ..Default::default()
        },
    ))
    .await
    .expect("StreamAudio")
    .into_inner()
}

/// [`open_listener`] saying that its connection carries nothing else, so that hyper may leave
/// it although the client is tonic (see `grpc/direct/goaway.rs`).
async fn open_dedicated_listener(
    c: &mut Client,
    token: &str,
    id: i64,
) -> tonic::Streaming<AudioChunk> {
    let mut req = bearer(
        token,
        StreamAudioRequest {
            track_id: id,
            ..Default::default()
        },
    );
    let dedicated = tonic::metadata::MetadataValue::from_static("dedicated");
    req.metadata_mut().insert("x-veza-connection", dedicated);
    c.stream_audio(req).await.expect("StreamAudio").into_inner()
}

/// Decodes the audio packets of an Ogg Opus byte stream (which must start with its headers).
fn decode(bytes: &[u8]) -> (Vec<f32>, u16) {
    use veza_media_core::ogg;
    let pages = ogg::parse_pages(bytes).expect("valid Ogg pages from the first byte");
    assert!(pages.len() >= 3, "headers and audio");
    let head = &bytes[pages[0].offset..pages[0].offset + pages[0].len];
    let head_packet = ogg::page_packets(bytes, &pages[0]);
    let opus_head = veza_media_core::opus_head::OpusHead::parse(&bytes[head_packet[0].clone()])
        .expect("OpusHead first");
    assert!(head.starts_with(b"OggS"));
    let tags = ogg::page_packets(bytes, &pages[1]);
    assert!(
        bytes[tags[0].clone()].starts_with(b"OpusTags"),
        "OpusTags second"
    );
    let ch = u16::from(opus_head.channels);
    let channels = if ch == 1 {
        opus::Channels::Mono
    } else {
        opus::Channels::Stereo
    };
    let mut dec = opus::Decoder::new(48_000, channels).expect("decoder");
    let mut out = Vec::new();
    let mut buf = vec![0f32; 5760 * 2];
    for p in &pages[2..] {
        for r in ogg::page_packets(bytes, p) {
            let n = dec
                .decode_float(&bytes[r], &mut buf, false)
                .expect("packet decodes");
            out.extend_from_slice(&buf[..n * usize::from(ch)]);
        }
    }
    (out, ch)
}

/// Dominant frequency of the left channel over `samples` by zero crossings.
fn frequency(pcm: &[f32], ch: u16, from: usize, len: usize) -> f64 {
    let left: Vec<f32> = pcm
        .chunks(usize::from(ch))
        .skip(from)
        .take(len)
        .map(|f| f[0])
        .collect();
    let crossings = left
        .windows(2)
        .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
        .count();
    crossings as f64 / 2.0 / (left.len() as f64 / 48_000.0)
}

fn ts_ms(c: &AudioChunk) -> u64 {
    c.timestamp
        .as_ref()
        .map_or(0, |t| t.seconds as u64 * 1000 + t.nanos as u64 / 1_000_000)
}

async fn listener_joins_mid_stream(b: Backend) {
    let _memory = PROCESS_MEMORY.read().await;
    let Some(s) = TestServer::start_with(b, |c| c.live_chunk_ms = 100).await else {
        return;
    };
    let OnAir {
        token,
        fan,
        mut c,
        id,
        p,
    } = on_air(&s, "fan", 1500).await;
    let stream = open_listener(&mut c, &fan, id).await;
    let listening = tokio::spawn(listen_for(stream, Duration::from_secs(30)));
    send_audio(&p.tx, id, 1500, 2500, true).await;
    let stop = c
        .stop_stream(bearer(&token, StopStreamRequest { stream_id: id }))
        .await
        .expect("StopStream")
        .into_inner();
    assert!(stop.success);
    assert_eq!(stop.track_id, 0, "not recorded");
    let (chunks, err, ended) = listening.await.expect("listener");
    assert!(err.is_none() && ended, "listener ends with OK: {err:?}");
    assert_eq!(chunks[0].chunk_index, 0, "headers first");
    let indexes: Vec<i32> = chunks.iter().map(|c| c.chunk_index).collect();
    assert!(
        indexes.windows(2).all(|w| w[1] > w[0]),
        "increasing: {indexes:?}"
    );
    let bytes: Vec<u8> = chunks
        .iter()
        .flat_map(|c| c.audio_data.iter().copied())
        .collect();
    let (audio, ch) = decode(&bytes);
    assert_eq!(ch, 2);
    let t0 = ts_ms(&chunks[1]);
    assert!(
        (600..=1700).contains(&t0),
        "joined near the live edge with a burst: {t0} ms"
    );
    // Well inside each one-second step of the source, the decoded tone has the source's
    // frequency at that time.
    let mut checked = 0;
    for step in (t0 / 1000 + 1)..4 {
        let at_ms = step * 1000 + 300;
        let from = ((at_ms - t0) * 48) as usize;
        if from + 19_200 > audio.len() / 2 {
            break;
        }
        let f = frequency(&audio, ch, from, 19_200);
        let want = freq_at(at_ms);
        assert!(
            (f - want).abs() < want * 0.03,
            "at {at_ms} ms: {f:.0} Hz, source {want} Hz"
        );
        checked += 1;
    }
    assert!(checked >= 2, "compared {checked} seconds");
    let last = chunks.last().expect("chunks");
    let pages = veza_media_core::ogg::parse_pages(&last.audio_data).expect("last page");
    assert_eq!(
        pages.last().map(|p| p.flags & 4),
        Some(4),
        "EOS on the last page"
    );
    drop(p.tx);
    let _ = p.call.await;
}

async fn stop_grace_and_rejections(b: Backend) {
    let _memory = PROCESS_MEMORY.read().await;
    let Some(s) = TestServer::start_with(b, |c| {
        c.live_chunk_ms = 100;
        c.live_grace = Duration::from_millis(1500);
    })
    .await
    else {
        return;
    };
    let (_, token) = s.user("host").await;
    let (_, other) = s.user("stranger").await;
    let mut c = client(&s).await;
    // StartStream validation.
    for (codec, rate, channels, field) in [
        ("mp3", 48_000, 2, "codec"),
        ("pcm_s16le", 1234, 2, "sample_rate"),
        ("pcm_s16le", 48_000, 0, "channels"),
        ("opus", 44_100, 2, "sample_rate"),
        ("opus", 48_000, 6, "channels"),
    ] {
        let e = c
            .start_stream(bearer(
                &token,
                StartStreamRequest {
                    title: "x".into(),
                    sample_rate: rate,
                    channels,
                    codec: codec.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect_err("invalid input format");
        assert_eq!(e.code(), Code::InvalidArgument, "{codec} {rate} {channels}");
        assert!(e.message().contains(field), "{}", e.message());
    }
    let id = start(&mut c, &token, false).await;
    let info = c
        .get_stream_info(bearer(&token, GetStreamInfoRequest { stream_id: id }))
        .await
        .expect("info")
        .into_inner();
    assert_eq!((info.kind.as_str(), info.status.as_str()), ("live", "live"));
    // Publishing by someone else.
    let e = c
        .upload_audio_chunks(bearer(
            &other,
            tokio_stream::iter(vec![chunk(id, 0, pcm(0, 100))]),
        ))
        .await
        .expect_err("not the owner");
    assert_eq!(e.code(), Code::PermissionDenied);
    // A chunk whose format contradicts StartStream.
    let mut wrong = chunk(id, 0, pcm(0, 100));
    wrong.sample_rate = 44_100;
    let e = c
        .upload_audio_chunks(bearer(&token, tokio_stream::iter(vec![wrong])))
        .await
        .expect_err("wrong rate");
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut wrong = chunk(id, 0, pcm(0, 100));
    wrong.codec = "opus".into();
    let e = c
        .upload_audio_chunks(bearer(&token, tokio_stream::iter(vec![wrong])))
        .await
        .expect_err("wrong codec");
    assert_eq!(e.code(), Code::InvalidArgument);
    // Listening to a live stream with a format or seek it does not have.
    let e = c
        .stream_audio(bearer(
            &other,
            StreamAudioRequest {
                track_id: id,
                format: "pcm_s16le".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("pcm of live");
    assert_eq!(e.code(), Code::InvalidArgument);

    // Producer disconnects and reconnects within the grace: one continuous stream.
    let stream = open_listener(&mut c, &other, id).await;
    let listening = tokio::spawn(listen_for(stream, Duration::from_secs(30)));
    let p = producer(s.channel().await, &token);
    send_audio(&p.tx, id, 0, 1000, true).await;
    drop(p.tx);
    p.call.await.expect("join").expect("clean close is OK");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = c
        .get_stream_info(bearer(&token, GetStreamInfoRequest { stream_id: id }))
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.status, "live", "still live within the grace");
    let p = producer(s.channel().await, &token);
    send_audio(&p.tx, id, 1000, 1000, true).await;
    // Stop by a stranger is refused; by the owner it ends every listener cleanly.
    let e = c
        .stop_stream(bearer(&other, StopStreamRequest { stream_id: id }))
        .await
        .expect_err("not the owner");
    assert_eq!(e.code(), Code::PermissionDenied);
    c.stop_stream(bearer(&token, StopStreamRequest { stream_id: id }))
        .await
        .expect("stop");
    let (chunks, err, ended) = listening.await.expect("listener");
    assert!(ended && err.is_none(), "OK after the last chunk: {err:?}");
    let bytes: Vec<u8> = chunks
        .iter()
        .flat_map(|c| c.audio_data.iter().copied())
        .collect();
    let (audio, _) = decode(&bytes);
    let secs = audio.len() as f64 / 2.0 / 48_000.0;
    assert!(
        (1.8..=2.2).contains(&secs),
        "both sessions heard as one stream: {secs:.2} s"
    );
    let headers = chunks.iter().filter(|c| c.chunk_index == 0).count();
    assert_eq!(headers, 1, "one logical stream");
    drop(p.tx);
    let _ = p.call.await;
    let e = c
        .stop_stream(bearer(&token, StopStreamRequest { stream_id: id }))
        .await
        .expect_err("already ended");
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = c
        .stream_audio(bearer(
            &other,
            StreamAudioRequest {
                track_id: id,
                ..Default::default()
            },
        ))
        .await
        .expect_err("ended");
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = c
        .stop_stream(bearer(&token, StopStreamRequest { stream_id: 987_654 }))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound);

    // A producer gone past the grace ends the stream for its listeners.
    let id = start(&mut c, &token, false).await;
    let p = producer(s.channel().await, &token);
    send_audio(&p.tx, id, 0, 300, false).await;
    let stream = open_listener(&mut c, &other, id).await;
    drop(p.tx);
    let _ = p.call.await;
    let (_, err, ended) = listen_for(stream, Duration::from_secs(10)).await;
    assert!(
        ended && err.is_none(),
        "listener ends with OK after the grace: {err:?}"
    );
    let info = c
        .get_stream_info(bearer(&token, GetStreamInfoRequest { stream_id: id }))
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.status, "ended");
}

async fn recording_becomes_a_track(b: Backend) {
    let _memory = PROCESS_MEMORY.read().await;
    let Some(s) = TestServer::start_with(b, |c| c.live_chunk_ms = 200).await else {
        return;
    };
    let (_, token) = s.user("recorder").await;
    let mut c = client(&s).await;
    let id = start(&mut c, &token, true).await;
    let p = producer(s.channel().await, &token);
    send_audio(&p.tx, id, 0, 3000, false).await;
    drop(p.tx);
    p.call.await.expect("join").expect("published");
    let stop = c
        .stop_stream(bearer(&token, StopStreamRequest { stream_id: id }))
        .await
        .expect("stop")
        .into_inner();
    assert_eq!(stop.track_id, id, "the recording keeps the id");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let info = loop {
        let i = c
            .get_stream_info(bearer(&token, GetStreamInfoRequest { stream_id: id }))
            .await
            .expect("info")
            .into_inner();
        if i.status != "processing" {
            break i;
        }
        assert!(tokio::time::Instant::now() < deadline, "still processing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (info.kind.as_str(), info.status.as_str()),
        ("track", "ready"),
        "{}",
        info.error_message
    );
    assert!(
        (2900..=3100).contains(&info.duration_ms),
        "duration {} ms",
        info.duration_ms
    );
    // It plays like any track.
    let mut stream = c
        .stream_audio(bearer(
            &token,
            StreamAudioRequest {
                track_id: id,
                ..Default::default()
            },
        ))
        .await
        .expect("plays")
        .into_inner();
    let mut n = 0;
    while let Some(m) = stream.next().await {
        m.expect("chunk");
        n += 1;
    }
    assert!(n >= 3);
}

async fn analytics_of_a_live_stream(b: Backend) {
    let _memory = PROCESS_MEMORY.read().await;
    let Some(s) = TestServer::start_with(b, |c| c.live_chunk_ms = 100).await else {
        return;
    };
    let (_, token) = s.user("caster").await;
    let (_, fan) = s.user("listener").await;
    let mut c = client(&s).await;
    let id = start(&mut c, &token, false).await;
    let e = c
        .stream_analytics(bearer(
            &fan,
            StreamAnalyticsRequest {
                stream_id: id,
                interval_ms: 200,
            },
        ))
        .await
        .expect_err("not the owner");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .stream_analytics(bearer(
            &token,
            StreamAnalyticsRequest {
                stream_id: id,
                interval_ms: 5,
            },
        ))
        .await
        .expect_err("interval too short");
    assert_eq!(e.code(), Code::InvalidArgument);
    let p = producer(s.channel().await, &token);
    let sending = {
        let tx = p.tx.clone();
        tokio::spawn(async move {
            send_audio(&tx, id, 0, 4000, true).await;
        })
    };
    let mut listeners = Vec::new();
    for country in ["fr", "DE"] {
        let req = with_header(
            StreamAudioRequest {
                track_id: id,
                ..Default::default()
            },
            "x-country",
            country,
        );
        let mut req = req;
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {fan}").parse().expect("header"),
        );
        let stream = c.stream_audio(req).await.expect("listen").into_inner();
        listeners.push(tokio::spawn(listen_for(stream, Duration::from_secs(20))));
    }
    let mut feed = c
        .stream_analytics(bearer(
            &token,
            StreamAnalyticsRequest {
                stream_id: id,
                interval_ms: 500,
            },
        ))
        .await
        .expect("analytics")
        .into_inner();
    let mut seen = None;
    for _ in 0..8 {
        let d = feed.next().await.expect("sample").expect("ok");
        if d.listeners == 2 && d.bitrate > 0.0 {
            seen = Some(d);
            break;
        }
    }
    let d = seen.expect("a sample with both listeners and input");
    assert_eq!(d.stream_id, id);
    assert_eq!(d.countries, vec!["DE".to_string(), "FR".to_string()]);
    // 48 kHz stereo s16 is 1536 kbps of input.
    assert!(
        (1200.0..=1900.0).contains(&d.bitrate),
        "input {} kbps",
        d.bitrate
    );
    assert!(
        d.latency >= 0.0 && d.latency < 200.0,
        "latency {} ms",
        d.latency
    );
    let info = c
        .get_stream_info(bearer(&fan, GetStreamInfoRequest { stream_id: id }))
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.listeners, 2);
    sending.await.expect("sent");
    c.stop_stream(bearer(&token, StopStreamRequest { stream_id: id }))
        .await
        .expect("stop");
    // The analytics stream ends with the broadcast.
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(m) = feed.next().await {
            m.expect("ok");
        }
    })
    .await;
    assert!(rest.is_ok(), "StreamAnalytics ends when the stream does");
    for l in listeners {
        let (_, err, ended) = l.await.expect("listener");
        assert!(ended && err.is_none());
    }
    drop(p.tx);
    let _ = p.call.await;
}

on_both_backends!(
    listener_joins_mid_stream,
    stop_grace_and_rejections,
    recording_becomes_a_track,
    analytics_of_a_live_stream,
);

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A listener that reads nothing is skipped to the live edge when it reads again, the server's
/// memory stays put, and 100 others keep real time meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_listener_skips_ahead() {
    let _memory = PROCESS_MEMORY.write().await;
    let adjust = |c: &mut Config| {
        c.live_chunk_ms = 100;
        c.live_max_lag_ms = 1000;
        c.live_bitrate = 256;
    };
    let Some(s) = TestServer::start_with(Backend::Sqlite, adjust).await else {
        return;
    };
    let OnAir { fan, c, id, p, .. } = on_air(&s, "crowd", 500).await;
    // The stalled listener: a connection with a tiny window that it never reads.
    let mut stalled = open_listener(&mut windowed_client(&s, 2048).await, &fan, id).await;
    let mut crowd = Vec::new();
    for i in 0..100 {
        let mut cc = if i % 25 == 0 {
            client(&s).await
        } else {
            c.clone()
        };
        let stream = open_listener(&mut cc, &fan, id).await;
        crowd.push(tokio::spawn(listen_for(
            stream,
            Duration::from_millis(6500),
        )));
    }
    let rss_before = rss_kb();
    send_audio(&p.tx, id, 500, 6000, true).await;
    let rss_after = rss_kb();
    // The crowd heard (nearly) every page of those 6 s, in real time.
    for l in crowd {
        let (chunks, err, _) = l.await.expect("listener");
        assert!(err.is_none());
        let audio = chunks.iter().filter(|c| c.chunk_index > 0).count();
        assert!(audio >= 55, "a crowd listener got {audio} of ~60 pages");
    }
    // Now the stalled one reads: a jump in chunk_index shows the skip to the live edge.
    let mut last = 0;
    let mut jumped = false;
    let more = {
        let tx = p.tx.clone();
        tokio::spawn(async move {
            send_audio(&tx, id, 6500, 1500, true).await;
        })
    };
    while let Ok(Some(Ok(m))) =
        tokio::time::timeout(Duration::from_millis(500), stalled.next()).await
    {
        if last > 0 && m.chunk_index > last + 1 {
            jumped = true;
        }
        last = m.chunk_index;
    }
    assert!(
        jumped,
        "the stalled listener skipped ahead (last index {last})"
    );
    more.await.expect("sent");
    let mut skips = 0.0;
    for _ in 0..20 {
        skips = metric(&s, "veza_live_skips_total").await;
        if skips >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(skips >= 1.0, "skip counted in /metrics: {skips}");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory stayed bounded: {rss_before} → {rss_after} kB"
    );
    drop(p.tx);
    let _ = p.call.await;
}

/// The value of counter or gauge `name` in the server's `/metrics`.
async fn metric(s: &TestServer, name: &str) -> f64 {
    s.metric(name).await
}

/// Two live listeners and unary calls share one HTTP/2 connection whose windows are the
/// protocol's 64 KiB defaults: the listeners' audio (written straight to the socket) goes
/// between hyper's frames and within the windows, so it needs the client's WINDOW_UPDATEs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_listeners_share_a_connection() {
    let _memory = PROCESS_MEMORY.read().await;
    let adjust = |c: &mut Config| {
        c.live_chunk_ms = 100;
        c.live_bitrate = 256;
    };
    let Some(s) = TestServer::start_with(Backend::Sqlite, adjust).await else {
        return;
    };
    let OnAir {
        token,
        fan,
        mut c,
        id,
        p,
    } = on_air(&s, "fan", 500).await;
    let direct_before = metric(&s, "veza_live_direct_listeners_total").await;
    let mut sc = windowed_client(&s, 65_535).await;
    let a = open_listener(&mut sc, &fan, id).await;
    let b = open_listener(&mut sc, &fan, id).await;
    let a = tokio::spawn(listen_for(a, Duration::from_secs(30)));
    let b = tokio::spawn(listen_for(b, Duration::from_secs(30)));
    let infos = {
        let (mut sc, fan) = (sc.clone(), fan.clone());
        tokio::spawn(async move {
            for _ in 0..20 {
                let info = sc
                    .get_stream_info(bearer(&fan, GetStreamInfoRequest { stream_id: id }))
                    .await
                    .expect("GetStreamInfo on the listeners' connection")
                    .into_inner();
                assert_eq!(info.status, "live");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // 3 s at 256 kbps: about 96 KB each, more than either window.
    send_audio(&p.tx, id, 500, 3000, true).await;
    infos.await.expect("unary calls");
    c.stop_stream(bearer(&token, StopStreamRequest { stream_id: id }))
        .await
        .expect("StopStream");
    let mut heard = Vec::new();
    for l in [a, b] {
        let (chunks, err, ended) = l.await.expect("listener");
        let bytes = heard_whole(&chunks, err, ended, 3);
        assert!(bytes > 65_535, "{bytes} bytes");
        heard.push(chunks);
    }
    // The same page carries the same bytes for both.
    let mut same = 0;
    for x in &heard[1][1..] {
        if let Some(y) = heard[0].iter().find(|y| y.chunk_index == x.chunk_index) {
            assert_eq!(x.audio_data, y.audio_data, "page {}", x.chunk_index);
            same += 1;
        }
    }
    assert!(same >= 30, "{same} pages in common");
    let direct = metric(&s, "veza_live_direct_listeners_total").await - direct_before;
    assert!(direct >= 2.0, "both listeners served directly ({direct})");
    drop(p.tx);
    let _ = p.call.await;
}

/// A stream's first few listeners are written by its fan-out task, the rest by the writer
/// threads: listeners joining one by one across that line each hear every page once, in order.
#[tokio::test]
async fn listeners_joining_past_the_inline_few_miss_no_page() {
    let _memory = PROCESS_MEMORY.read().await;
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| c.live_chunk_ms = 100).await else {
        return;
    };
    let mut on = on_air(&s, "fan", 500).await;
    let (id, p) = (on.id, on.p);
    let sending = {
        let tx = p.tx.clone();
        tokio::spawn(async move { send_audio(&tx, id, 500, 4000, true).await })
    };
    let mut listeners = Vec::new();
    for _ in 0..12 {
        let mut lc = client(&s).await;
        let stream = open_listener(&mut lc, &on.fan, id).await;
        listeners.push(tokio::spawn(listen_for(stream, Duration::from_secs(30))));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    sending.await.expect("sent");
    on.c.stop_stream(bearer(&on.token, StopStreamRequest { stream_id: id }))
        .await
        .expect("StopStream");
    for l in listeners {
        let (chunks, err, ended) = l.await.expect("listener");
        heard_whole(&chunks, err, ended, 1);
    }
    drop(p.tx);
    let _ = p.call.await;
}

/// Checks what a listener heard: the end with OK, the headers first, every page once, and at
/// least `secs` of stereo audio; returns the number of Ogg bytes.
fn heard_whole(
    chunks: &[AudioChunk],
    err: Option<tonic::Status>,
    ended: bool,
    secs: usize,
) -> usize {
    assert!(err.is_none() && ended, "listener ends with OK: {err:?}");
    assert_eq!(chunks[0].chunk_index, 0, "headers first");
    let indexes: Vec<i32> = chunks[1..].iter().map(|c| c.chunk_index).collect();
    assert!(
        indexes.windows(2).all(|w| w[1] == w[0] + 1),
        "no page lost or repeated: {indexes:?}"
    );
    let bytes: Vec<u8> = chunks
        .iter()
        .flat_map(|c| c.audio_data.iter().copied())
        .collect();
    let (audio, ch) = decode(&bytes);
    assert_eq!(ch, 2);
    assert!(
        audio.len() >= 2 * 48_000 * secs,
        "{secs} s or more of audio"
    );
    bytes.len()
}

/// GET over a raw TCP connection (the tests carry no HTTP client).
async fn reqwest_like_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').expect("path");
    let mut sock = tokio::net::TcpStream::connect(host)
        .await
        .expect("connects");
    sock.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("writes");
    let mut out = String::new();
    sock.read_to_string(&mut out).await.expect("reads");
    out
}

/// Two instances over PostgreSQL and NATS: a stream published on A is heard on B, and the
/// listener counts of both add up everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_relay_and_count() {
    let _memory = PROCESS_MEMORY.read().await;
    let Some(nats) = nats_url().await else {
        return;
    };
    let Some(a) = TestServer::start_with(Backend::Postgres, |c| {
        c.nats_url = Some(nats.clone());
        c.live_chunk_ms = 100;
    })
    .await
    else {
        return;
    };
    let bi = a.sibling(|c| c.live_chunk_ms = 100).await;
    let (_, token) = a.user("origin").await;
    let mut ca = client(&a).await;
    let mut cb = client(&bi).await;
    let id = start(&mut ca, &token, false).await;
    let p = producer(a.channel().await, &token);
    send_audio(&p.tx, id, 0, 500, true).await;
    let mut on_b = Vec::new();
    for _ in 0..2 {
        let stream = open_listener(&mut cb, &token, id).await;
        on_b.push(tokio::spawn(listen_for(stream, Duration::from_secs(30))));
    }
    let on_a = tokio::spawn(listen_for(
        open_listener(&mut ca, &token, id).await,
        Duration::from_secs(30),
    ));
    let mut feed = ca
        .stream_analytics(bearer(
            &token,
            StreamAnalyticsRequest {
                stream_id: id,
                interval_ms: 500,
            },
        ))
        .await
        .expect("analytics")
        .into_inner();
    let sending = tokio::spawn({
        let tx = p.tx.clone();
        async move {
            send_audio(&tx, id, 500, 3500, true).await;
        }
    });
    let mut total = 0;
    for _ in 0..10 {
        let d = feed.next().await.expect("sample").expect("ok");
        total = d.listeners;
        if total == 3 {
            break;
        }
    }
    assert_eq!(total, 3, "StreamAnalytics on A counts B's listeners");
    let info_b = cb
        .get_stream_info(bearer(&token, GetStreamInfoRequest { stream_id: id }))
        .await
        .expect("info")
        .into_inner();
    assert_eq!(
        info_b.listeners, 3,
        "GetStreamInfo on B counts A's listener"
    );
    sending.await.expect("sent");
    // Stopping through B ends the stream that A ingests.
    cb.stop_stream(bearer(&token, StopStreamRequest { stream_id: id }))
        .await
        .expect("stop via B");
    for l in on_b {
        let (chunks, err, ended) = l.await.expect("listener");
        assert!(ended && err.is_none(), "B's listener ends OK: {err:?}");
        let bytes: Vec<u8> = chunks
            .iter()
            .flat_map(|c| c.audio_data.iter().copied())
            .collect();
        let (audio, _) = decode(&bytes);
        assert!(
            audio.len() / 2 > 48_000 * 3,
            "B heard the stream: {} frames",
            audio.len() / 2
        );
    }
    let (_, err, ended) = on_a.await.expect("listener");
    assert!(ended && err.is_none());
    drop(p.tx);
    let _ = p.call.await;
}

/// Shutting the server down ends a live listener with `UNAVAILABLE` (it can reconnect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_live_listeners_with_unavailable() {
    let _memory = PROCESS_MEMORY.read().await;
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| c.live_chunk_ms = 100).await else {
        return;
    };
    let (_, token) = s.user("late-show").await;
    let mut c = client(&s).await;
    let id = start(&mut c, &token, false).await;
    let p = producer(s.channel().await, &token);
    send_audio(&p.tx, id, 0, 300, false).await;
    let mut stream = open_listener(&mut c, &token, id).await;
    let first = stream.next().await.expect("headers").expect("ok");
    assert_eq!(first.chunk_index, 0);
    let stopping = tokio::spawn(s.stop());
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("ends");
    assert_eq!(
        end.expect("a status").expect_err("not OK").code(),
        Code::Unavailable
    );
    drop(p.tx);
    stopping.await.expect("stops");
}

/// `grpc_server_handled_total` of `StreamService/method` with `code`.
async fn handled(s: &TestServer, method: &str, code: &str) -> f64 {
    let text = reqwest_like_get(&format!("{}/metrics", s.http_url)).await;
    let (m, c) = (
        format!("grpc_method=\"{method}\""),
        format!("grpc_code=\"{code}\""),
    );
    text.lines()
        .filter(|l| l.starts_with("grpc_server_handled_total{") && l.contains(&m))
        .filter(|l| l.contains(&c))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum()
}

/// A server with 100 ms pages and `--live-detach` (the default).
async fn detaching_server() -> Option<TestServer> {
    let detach = |c: &mut Config| {
        c.live_chunk_ms = 100;
        assert!(c.live_detach, "on by default");
    };
    TestServer::start_with(Backend::Sqlite, detach).await
}

/// A listener on its own connection that pings the server every 300 ms and gives up after 1 s
/// without an answer.
async fn pinging_client(s: &TestServer) -> Client {
    let ch = tonic::transport::Endpoint::from_shared(s.grpc_url.clone())
        .expect("url")
        .http2_keep_alive_interval(Duration::from_millis(300))
        .keep_alive_timeout(Duration::from_secs(1))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .expect("connects");
    StreamServiceClient::new(ch).max_decoding_message_size(8 << 20)
}

/// Polls `value` until it is `want` (or 10 s went by), returning the last value.
async fn settles<F, Fut>(want: f64, mut value: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let mut v = value().await;
    for _ in 0..100 {
        if v == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        v = value().await;
    }
    v
}

/// A live stream alone on its connection for a second leaves hyper (whose buffers are freed):
/// the listener, answering its keepalive pings all along, hears every page and ends with OK,
/// the call counts as any other, and the next call on the same channel takes a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_live_stream_leaves_hyper() {
    let _memory = PROCESS_MEMORY.read().await;
    let Some(s) = detaching_server().await else {
        return;
    };
    let OnAir {
        token,
        fan,
        mut c,
        id,
        p,
    } = on_air(&s, "fan", 500).await;
    let before = metric(&s, "veza_live_detached_total").await;
    let ok_before = handled(&s, "StreamAudio", "OK").await;
    let mut sc = pinging_client(&s).await;
    let l = open_dedicated_listener(&mut sc, &fan, id).await;
    let l = tokio::spawn(listen_for(l, Duration::from_secs(30)));
    send_audio(&p.tx, id, 500, 2500, true).await;
    let detached = metric(&s, "veza_live_detached_total").await - before;
    assert_eq!(detached, 1.0, "the listener's connection left hyper");
    // tonic sends the first call after the GOAWAY on the old connection, which refuses it
    // (why tonic is detached only when it says its connection is dedicated); the channel then
    // reconnects.
    let info = |mut sc: Client| {
        let fan = fan.clone();
        async move {
            sc.get_stream_info(bearer(&fan, GetStreamInfoRequest { stream_id: id }))
                .await
        }
    };
    let first = info(sc.clone()).await;
    if let Err(e) = &first {
        assert_eq!(e.code(), Code::Cancelled, "{e:?}");
    }
    let info = match first {
        Ok(r) => r,
        Err(_) => info(sc.clone())
            .await
            .expect("the call again, on a new connection"),
    }
    .into_inner();
    assert_eq!((info.status.as_str(), info.listeners), ("live", 1));
    send_audio(&p.tx, id, 3000, 1500, true).await;
    c.stop_stream(bearer(&token, StopStreamRequest { stream_id: id }))
        .await
        .expect("StopStream");
    let (chunks, err, ended) = l.await.expect("listener");
    heard_whole(&chunks, err, ended, 3);
    let ok = settles(ok_before + 1.0, || handled(&s, "StreamAudio", "OK")).await;
    assert_eq!(ok - ok_before, 1.0, "the detached call counted as OK");
    drop(p.tx);
    let _ = p.call.await;
}

/// A tonic listener that does not say its connection is dedicated is left on hyper, so the next
/// call on its channel, while the stream plays, succeeds at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_listener_stays_on_hyper_and_its_channel_works() {
    let _memory = PROCESS_MEMORY.read().await;
    let Some(s) = detaching_server().await else {
        return;
    };
    let OnAir {
        token,
        fan,
        mut c,
        id,
        p,
    } = on_air(&s, "fan", 500).await;
    let before = metric(&s, "veza_live_detached_total").await;
    let mut sc = pinging_client(&s).await;
    let l = open_listener(&mut sc, &fan, id).await;
    let l = tokio::spawn(listen_for(l, Duration::from_secs(30)));
    send_audio(&p.tx, id, 500, 2500, true).await;
    let detached = metric(&s, "veza_live_detached_total").await - before;
    assert_eq!(detached, 0.0, "tonic's connection stays with hyper");
    let info = sc
        .get_stream_info(bearer(&fan, GetStreamInfoRequest { stream_id: id }))
        .await
        .expect("the next call on the listener's channel")
        .into_inner();
    assert_eq!((info.status.as_str(), info.listeners), ("live", 1));
    send_audio(&p.tx, id, 3000, 1000, true).await;
    c.stop_stream(bearer(&token, StopStreamRequest { stream_id: id }))
        .await
        .expect("StopStream");
    let (chunks, err, ended) = l.await.expect("listener");
    heard_whole(&chunks, err, ended, 3);
    drop(p.tx);
    let _ = p.call.await;
}

/// A detached listener that goes away (its stream reset by the client) leaves the listener
/// count, and its call counts as canceled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_listener_that_leaves_is_counted_out() {
    let _memory = PROCESS_MEMORY.read().await;
    let Some(s) = detaching_server().await else {
        return;
    };
    let OnAir { fan, id, p, .. } = on_air(&s, "fan", 500).await;
    let before = metric(&s, "veza_live_detached_total").await;
    let canceled_before = handled(&s, "StreamAudio", "Canceled").await;
    let mut sc = pinging_client(&s).await;
    let l = open_dedicated_listener(&mut sc, &fan, id).await;
    let feed = {
        let tx = p.tx.clone();
        tokio::spawn(async move { send_audio(&tx, id, 500, 6000, true).await })
    };
    let (chunks, err, ended) = listen_for(l, Duration::from_millis(2500)).await;
    assert!(err.is_none() && !ended && chunks.len() > 15, "{err:?}");
    assert_eq!(metric(&s, "veza_live_detached_total").await - before, 1.0);
    let listeners = settles(0.0, || metric(&s, "veza_live_listeners")).await;
    assert_eq!(listeners, 0.0, "the listener left");
    let canceled = settles(canceled_before + 1.0, || {
        handled(&s, "StreamAudio", "Canceled")
    })
    .await;
    assert_eq!(canceled - canceled_before, 1.0);
    feed.abort();
    drop(p.tx);
    let _ = p.call.await;
}
