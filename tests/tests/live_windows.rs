//! The live direct-write path under the largest flow-control windows: a raw HTTP/2 listener
//! opens its stream and connection windows to 2³¹−1 and hands every byte it receives straight
//! back in WINDOW_UPDATEs, so the windows sit at the maximum for the whole stream. Live pages
//! go onto the socket beside hyper's frames; whatever hyper then believes about the windows,
//! the client's updates must never take it past 2³¹−1 (RFC 9113 §6.9.1), or it answers
//! FLOW_CONTROL_ERROR and the listener is cut off.

use std::time::Duration;

use prost::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};
use veza_proto::stream::{stream_service_client::StreamServiceClient, *};
use veza_tests::{Backend, TestServer, bearer};

const RATE: u32 = 48_000;
const MAX_WINDOW: u32 = (1 << 31) - 1;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;

/// Stereo pcm_s16le of a 440 Hz tone, `ms` long.
fn tone(ms: u64) -> Vec<u8> {
    let n = ms * u64::from(RATE) / 1000;
    let mut out = Vec::with_capacity(n as usize * 4);
    for i in 0..n {
        let t = i as f64 / f64::from(RATE);
        let v = ((t * 440.0 * std::f64::consts::TAU).sin() * 16_000.0) as i16;
        out.extend_from_slice(&v.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literal fields without indexing, no Huffman.
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// What the raw listener saw.
#[derive(Debug, Default)]
struct Seen {
    chunks: Vec<AudioChunk>,
    data_bytes: u64,
    /// RST_STREAM or GOAWAY error codes, END_STREAM, a closed socket.
    ended: Option<String>,
}

fn ts_ms(c: &AudioChunk) -> u64 {
    c.timestamp
        .as_ref()
        .map_or(0, |t| t.seconds as u64 * 1000 + t.nanos as u64 / 1_000_000)
}

/// Listens to `id` for `secs` over a raw HTTP/2 connection whose windows stay at 2³¹−1.
async fn max_window_listener(addr: &str, token: &str, id: i64, secs: u64) -> Seen {
    let mut sock = TcpStream::connect(addr).await.expect("connects");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let mut settings = Vec::new();
    settings.extend_from_slice(&0x4u16.to_be_bytes());
    settings.extend_from_slice(&MAX_WINDOW.to_be_bytes());
    out.extend(frame(SETTINGS, 0, 0, &settings));
    out.extend(window_update(0, MAX_WINDOW - 65_535));
    let auth = format!("Bearer {token}");
    let block = header_block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/veza.stream.StreamService/StreamAudio"),
        (":authority", addr),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("authorization", &auth),
    ]);
    out.extend(frame(HEADERS, END_HEADERS, 1, &block));
    let msg = StreamAudioRequest {
        track_id: id,
        ..Default::default()
    }
    .encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend(msg);
    out.extend(frame(DATA, END_STREAM, 1, &body));
    sock.write_all(&out).await.expect("request sent");

    let mut seen = Seen::default();
    let mut grpc = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut head = [0u8; 9];
    loop {
        let read = tokio::time::timeout_at(deadline, sock.read_exact(&mut head)).await;
        let Ok(read) = read else { return seen };
        if read.is_err() {
            seen.ended = Some("connection closed".into());
            return seen;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (ty, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if sock.read_exact(&mut payload).await.is_err() {
            seen.ended = Some("connection closed mid-frame".into());
            return seen;
        }
        let mut reply = Vec::new();
        match ty {
            SETTINGS if flags & 1 == 0 => reply.extend(frame(SETTINGS, 1, 0, &[])),
            PING if flags & 1 == 0 => reply.extend(frame(PING, 1, 0, &payload)),
            DATA if stream == 1 => {
                seen.data_bytes += len as u64;
                let mut body = &payload[..];
                if flags & PADDED != 0 && !body.is_empty() {
                    let pad = body[0] as usize;
                    body = &body[1..body.len().saturating_sub(pad)];
                }
                grpc.extend_from_slice(body);
                while grpc.len() >= 5 {
                    let n = u32::from_be_bytes([grpc[1], grpc[2], grpc[3], grpc[4]]) as usize;
                    if grpc.len() < 5 + n {
                        break;
                    }
                    let chunk = AudioChunk::decode(&grpc[5..5 + n]).expect("an AudioChunk");
                    seen.chunks.push(chunk);
                    grpc.drain(..5 + n);
                }
                // Everything received goes straight back: both windows stay at 2³¹−1.
                if len > 0 {
                    reply.extend(window_update(0, len as u32));
                    reply.extend(window_update(1, len as u32));
                }
                if flags & END_STREAM != 0 {
                    seen.ended = Some("END_STREAM on DATA".into());
                }
            }
            HEADERS if stream == 1 && flags & END_STREAM != 0 => {
                seen.ended = Some("trailers".into());
            }
            RST_STREAM => {
                let code = u32::from_be_bytes(payload[..4].try_into().expect("4 bytes"));
                seen.ended = Some(format!("RST_STREAM {code:#x} on stream {stream}"));
            }
            GOAWAY => {
                let code = u32::from_be_bytes(payload[4..8].try_into().expect("code"));
                // NO_ERROR: the connection left hyper (`--live-detach`), the stream goes on.
                if code != 0 {
                    seen.ended = Some(format!("GOAWAY {code:#x}"));
                }
            }
            _ => {}
        }
        if !reply.is_empty() && sock.write_all(&reply).await.is_err() {
            seen.ended.get_or_insert_with(|| "write failed".into());
        }
        if seen.ended.is_some() {
            return seen;
        }
    }
}

/// 30 s of a live stream in 20 ms pages at 510 kbps: every page arrives, at the pace of the
/// producer, with no reset of the stream or the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_window_listener_keeps_real_time() {
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| {
        c.live_chunk_ms = 20;
        c.live_bitrate = 510;
    })
    .await
    else {
        return;
    };
    let (_, dj) = s.user("dj").await;
    let (_, fan) = s.user("fan").await;
    let mut c = StreamServiceClient::new(s.channel().await);
    let id = c
        .start_stream(bearer(
            &dj,
            StartStreamRequest {
                title: "max window".into(),
                sample_rate: RATE as i32,
                channels: 2,
                codec: "pcm_s16le".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("StartStream")
        .into_inner()
        .stream_id;

    // The producer: 100 ms chunks at real-time pace for the whole test.
    let (tx, rx) = mpsc::channel(16);
    let channel = s.channel().await;
    let token = dj.clone();
    let upload = tokio::spawn(async move {
        StreamServiceClient::new(channel)
            .upload_audio_chunks(bearer(
                &token,
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .await
    });
    let pcm = tone(100);
    let feed = tokio::spawn(async move {
        let t0 = tokio::time::Instant::now();
        for k in 0..400u64 {
            tokio::time::sleep_until(t0 + Duration::from_millis(k * 100)).await;
            let chunk = AudioChunk {
                stream_id: id,
                chunk_index: k as i32,
                audio_data: pcm.clone().into(),
                sample_rate: RATE as i32,
                channels: 2,
                codec: "pcm_s16le".into(),
                timestamp: None,
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let addr = s.grpc_url.trim_start_matches("http://").to_string();
    let secs = 30;
    let seen = max_window_listener(&addr, &fan, id, secs).await;
    assert_eq!(
        seen.ended,
        None,
        "the listener was cut off after {} pages ({} bytes)",
        seen.chunks.len(),
        seen.data_bytes
    );
    let pages = seen.chunks.len();
    let first = seen.chunks.first().map_or(0, ts_ms);
    let last = seen.chunks.last().map_or(0, ts_ms);
    let media_ms = last.saturating_sub(first);
    assert!(
        media_ms >= (secs - 3) * 1000,
        "{media_ms} ms of audio in {secs} s ({pages} pages, {} bytes)",
        seen.data_bytes
    );
    // The first message carries the Ogg headers; the pages follow it from the join burst on.
    let indexes: Vec<i32> = seen.chunks.iter().skip(1).map(|c| c.chunk_index).collect();
    let gaps: Vec<&[i32]> = indexes.windows(2).filter(|w| w[1] != w[0] + 1).collect();
    assert!(gaps.is_empty(), "pages skipped or out of order: {gaps:?}");
    assert!(
        pages >= 1_300,
        "{pages} pages of 20 ms in {secs} s: the listener fell behind"
    );
    feed.abort();
    upload.abort();
    s.stop().await;
}
