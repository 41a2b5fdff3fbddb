//! `veza live FILE|-`: publishes a file (decoded by the media core) or raw pcm_s16le from
//! standard input as a live stream at real-time pace, printing listeners and bitrate as it goes.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use veza_proto::stream::{
    AudioChunk, StartStreamRequest, StopStreamRequest, StreamAnalyticsRequest,
    stream_service_client::StreamServiceClient,
};

use super::client::{ClientArgs, Session};

/// Arguments of `veza live`.
#[derive(clap::Args, Debug)]
pub struct LiveArgs {
    /// An audio file any supported format, or `-` for raw pcm_s16le on standard input.
    pub input: String,
    /// Title of the stream [default: the file name].
    #[arg(long)]
    pub title: Option<String>,
    /// Record the broadcast: it becomes a track with the same id when it ends.
    #[arg(long)]
    pub record: bool,
    /// Sample rate of raw PCM from standard input.
    #[arg(long, default_value_t = 48_000)]
    pub rate: u32,
    /// Channels of raw PCM from standard input.
    #[arg(long, default_value_t = 2)]
    pub channels: u16,
    /// Audio per chunk sent, in ms.
    #[arg(long, default_value_t = 100)]
    pub chunk_ms: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// PCM to publish: its format and its chunks as they come.
struct Pcm {
    rate: u32,
    channels: u16,
    chunks: mpsc::Receiver<anyhow::Result<Bytes>>,
}

/// Runs `veza live`.
pub async fn run(args: LiveArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (10..=1000).contains(&args.chunk_ms),
        "--chunk-ms must be 10–1000"
    );
    let pcm = if args.input == "-" {
        stdin_pcm(args.rate, args.channels, args.chunk_ms)
    } else {
        file_pcm(args.input.clone(), args.chunk_ms).await?
    };
    let session = args.client.connect().await?;
    let mut client = StreamServiceClient::new(session.channel.clone());
    let title = args.title.clone().unwrap_or_else(|| {
        std::path::Path::new(&args.input)
            .file_name()
            .map_or("live".into(), |n| n.to_string_lossy().into_owned())
    });
    let started = client
        .start_stream(session.request(StartStreamRequest {
            title,
            description: String::new(),
            sample_rate: pcm.rate as i32,
            channels: i32::from(pcm.channels),
            codec: "pcm_s16le".into(),
            record: args.record,
            is_private: false,
        })?)
        .await
        .map_err(status)?
        .into_inner();
    let id = started.stream_id;
    let audio_url = started.info.as_ref().map_or("", |i| i.audio_url.as_str());
    eprintln!(
        "live stream {id}: {} Hz, {} ch; listen with `veza listen {id}` or any player at {audio_url}",
        pcm.rate, pcm.channels
    );
    let stats = tokio::spawn(print_stats(session.clone(), id));
    let sent = publish(&session, id, pcm).await;
    let stop = client
        .stop_stream(session.request(StopStreamRequest { stream_id: id })?)
        .await
        .map_err(status)?
        .into_inner();
    stats.abort();
    let sent = sent?;
    eprintln!(
        "stream {id} ended after {:.1} s of audio",
        sent.as_secs_f64()
    );
    if stop.track_id != 0 {
        println!("recorded as track {}", stop.track_id);
    }
    Ok(())
}

/// Sends the chunks at real-time pace; returns the audio duration sent.
async fn publish(session: &Session, id: i64, mut pcm: Pcm) -> anyhow::Result<Duration> {
    let (tx, rx) = mpsc::channel::<AudioChunk>(4);
    let frame_bytes = 2 * u64::from(pcm.channels);
    let rate = pcm.rate;
    let channels = pcm.channels;
    let pacer = async move {
        let start = tokio::time::Instant::now();
        let mut frames = 0u64;
        let mut index = 0;
        while let Some(chunk) = pcm.chunks.recv().await {
            let chunk = chunk?;
            let due = start + Duration::from_micros(frames * 1_000_000 / u64::from(rate));
            tokio::time::sleep_until(due).await;
            frames += chunk.len() as u64 / frame_bytes;
            let msg = AudioChunk {
                stream_id: id,
                chunk_index: index,
                audio_data: chunk,
                sample_rate: rate as i32,
                channels: i32::from(channels),
                codec: "pcm_s16le".into(),
                timestamp: None,
            };
            index += 1;
            if tx.send(msg).await.is_err() {
                break;
            }
        }
        anyhow::Ok(Duration::from_micros(frames * 1_000_000 / u64::from(rate)))
    };
    let mut client = StreamServiceClient::new(session.channel.clone());
    let req = session.request(tokio_stream::wrappers::ReceiverStream::new(rx))?;
    let (sent, result) = tokio::join!(pacer, client.upload_audio_chunks(req));
    result.map_err(status)?;
    sent
}

/// Prints listeners, input bitrate and latency every second.
async fn print_stats(session: Session, id: i64) {
    let mut client = StreamServiceClient::new(session.channel.clone());
    let Ok(req) = session.request(StreamAnalyticsRequest {
        stream_id: id,
        interval_ms: 1000,
    }) else {
        return;
    };
    let Ok(resp) = client.stream_analytics(req).await else {
        return;
    };
    let mut feed = resp.into_inner();
    while let Some(Ok(d)) = feed.next().await {
        eprintln!(
            "listeners {:>5}  input {:>7.1} kbps  latency {:>5.0} ms  {}",
            d.listeners,
            d.bitrate,
            d.latency,
            d.countries.join(",")
        );
    }
}

/// Raw PCM from standard input, `chunk_ms` at a time.
fn stdin_pcm(rate: u32, channels: u16, chunk_ms: u32) -> Pcm {
    let (tx, rx) = mpsc::channel(4);
    let bytes = (rate as usize * chunk_ms as usize / 1000).max(1) * 2 * usize::from(channels);
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        loop {
            let mut buf = vec![0u8; bytes];
            let mut filled = 0;
            while filled < bytes {
                match stdin.read(&mut buf[filled..]).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
            if filled == 0 {
                return;
            }
            buf.truncate(filled);
            if tx.send(Ok(Bytes::from(buf))).await.is_err() || filled < bytes {
                return;
            }
        }
    });
    Pcm {
        rate,
        channels,
        chunks: rx,
    }
}

/// Decodes `path` on a blocking thread into pcm_s16le chunks of `chunk_ms`.
async fn file_pcm(path: String, chunk_ms: u32) -> anyhow::Result<Pcm> {
    let (tx, rx) = mpsc::channel(4);
    let (info_tx, info_rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = info_tx.send(Err(anyhow::anyhow!("opening {path}: {e}")));
                return;
            }
        };
        let mut dec = match veza_media_core::Decoder::open(std::io::BufReader::new(file)) {
            Ok(d) => d,
            Err(e) => {
                let _ = info_tx.send(Err(anyhow::anyhow!("{path}: {e}")));
                return;
            }
        };
        let (rate, channels) = (dec.sample_rate(), dec.channels() as u16);
        let _ = info_tx.send(Ok((rate, channels)));
        let chunk = (rate as usize * chunk_ms as usize / 1000).max(1) * usize::from(channels);
        let mut pending: Vec<f32> = Vec::with_capacity(chunk * 2);
        let mut out = Vec::new();
        loop {
            match dec.next_block() {
                Ok(Some(block)) => pending.extend_from_slice(block),
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.blocking_send(Err(anyhow::anyhow!("decoding: {e}")));
                    return;
                }
            }
            while pending.len() >= chunk {
                out.clear();
                veza_media_core::pcm::f32_to_s16le(&pending[..chunk], &mut out);
                pending.drain(..chunk);
                if tx.blocking_send(Ok(Bytes::copy_from_slice(&out))).is_err() {
                    return;
                }
            }
        }
        if !pending.is_empty() {
            out.clear();
            veza_media_core::pcm::f32_to_s16le(&pending, &mut out);
            let _ = tx.blocking_send(Ok(Bytes::copy_from_slice(&out)));
        }
    });
    let (rate, channels) = info_rx.await??;
    Ok(Pcm {
        rate,
        channels,
        chunks: rx,
    })
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}
