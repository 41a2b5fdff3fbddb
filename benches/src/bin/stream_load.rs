//! Stream load tool (loopback, embedded server with SQLite + local blobs in a temp dir):
//!
//! - `stream_load upload [MB]`: one client uploads MB megabytes of noise as 1 MiB chunks and the
//!   rate up to the server's answer to the close is printed (every chunk stored and hashed,
//!   progress recorded, the file probed; noise fails the probe, so no processing follows).
//! - `stream_load ready FILE`: uploads FILE (e.g. a 10-minute MP3 made by
//!   `fixtures/bench-inputs.sh`) and prints the time from upload close to `ready`.
//! - `stream_load listen [LISTENERS] [FILE]`: uploads FILE (default: the stereo WAV fixture),
//!   waits for ready, then LISTENERS concurrent `StreamAudio` calls read the whole track as fast
//!   as they can; prints aggregate throughput, server CPU seconds per GB sent and peak RSS.

use std::{
    sync::Arc,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use futures::StreamExt;
use tonic::transport::Channel;
use veza_benches::{authed, login};
use veza_control_plane::Config;
use veza_proto::stream::{
    AudioChunk, GetStreamInfoRequest, StreamAudioRequest, UploadAudioRequest,
    stream_service_client::StreamServiceClient,
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let mut config = Config::for_tests(dir.path().to_path_buf());
    // Every client connects from 127.0.0.1: no per-address or total connection cap.
    config.max_connections_per_ip = 0;
    config.max_connections = 0;
    let server = server_rt.block_on(veza_control_plane::start(config))?;
    let url = format!("http://{}", server.grpc_addr);
    let db = server.db.clone();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = client_rt.block_on(async {
        let token = login(&db, &url).await?;
        match args.first().map(String::as_str) {
            Some("upload") => {
                let mb = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(256u64);
                upload_rate(&url, &token, mb).await
            }
            Some("ready") => {
                let file = args.get(1).ok_or_else(|| anyhow::anyhow!("stream_load ready FILE"))?;
                let data = std::fs::read(file)?;
                let t = Instant::now();
                let id = upload(&url, &token, &data).await?;
                let closed = t.elapsed();
                let ready = wait_ready(&url, &token, id).await?;
                println!(
                    "upload {:.2}s, close → ready {:.2}s ({} bytes)",
                    closed.as_secs_f64(),
                    ready.as_secs_f64(),
                    data.len()
                );
                Ok(())
            }
            Some("listen") => {
                let n = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000usize);
                let file = args.get(2).cloned().unwrap_or_else(|| {
                    format!("{}/../fixtures/stereo_44k_s16.wav", env!("CARGO_MANIFEST_DIR"))
                });
                listen(&url, &token, n, &std::fs::read(file)?).await
            }
            _ => anyhow::bail!(
                "usage: stream_load upload [MB] | stream_load ready FILE | stream_load listen [N] [FILE]"
            ),
        }
    });
    server_rt.block_on(server.shutdown())?;
    result
}

async fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_string())?
        .initial_connection_window_size(8 << 20)
        .initial_stream_window_size(4 << 20)
        .connect()
        .await?)
}

/// Sends `data` as one upload; returns the track id once the server answered the close.
async fn upload(url: &str, token: &str, data: &[u8]) -> anyhow::Result<i64> {
    let mut c = StreamServiceClient::new(channel(url).await?);
    let id = c
        .upload_audio(authed(
            token,
            UploadAudioRequest {
                title: "load".into(),
                file_size: data.len() as i64,
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .track_id;
    let bytes = bytes::Bytes::copy_from_slice(data);
    let chunks: Vec<AudioChunk> = (0..data.len().div_ceil(1 << 20))
        .map(|i| AudioChunk {
            stream_id: id,
            chunk_index: i as i32,
            audio_data: bytes.slice(i << 20..((i + 1) << 20).min(data.len())),
            ..Default::default()
        })
        .collect();
    c.upload_audio_chunks(authed(token, tokio_stream::iter(chunks)))
        .await?;
    Ok(id)
}

async fn upload_rate(url: &str, token: &str, mb: u64) -> anyhow::Result<()> {
    // Noise: the close probes it and fails it (not audio), which is fine for the ingest figure.
    let len = (mb << 20) as usize;
    let mut data = vec![0u8; len];
    let mut x = 0x1234_5678_u32;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let t = Instant::now();
    let r = upload(url, token, &data).await;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "uploaded {mb} MiB in {secs:.2}s: {:.0} MB/s (up to the close's answer: stored, hashed, probed; close answered {:?})",
        len as f64 / secs / 1e6,
        r.err()
            .map(|e| e.to_string().chars().take(60).collect::<String>())
    );
    Ok(())
}

async fn wait_ready(url: &str, token: &str, id: i64) -> anyhow::Result<Duration> {
    let mut c = StreamServiceClient::new(channel(url).await?);
    let t = Instant::now();
    loop {
        let i = c
            .get_stream_info(authed(token, GetStreamInfoRequest { stream_id: id }))
            .await?
            .into_inner();
        match i.status.as_str() {
            "ready" => return Ok(t.elapsed()),
            "processing" => tokio::time::sleep(Duration::from_millis(20)).await,
            other => anyhow::bail!("track {id} is {other}: {}", i.error_message),
        }
    }
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process (server and clients share it: an upper bound for the server).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

async fn listen(url: &str, token: &str, n: usize, data: &[u8]) -> anyhow::Result<()> {
    let id = upload(url, token, data).await?;
    wait_ready(url, token, id).await?;
    let chans: Vec<Channel> = {
        let mut v = Vec::new();
        for _ in 0..16 {
            v.push(channel(url).await?);
        }
        v
    };
    let bytes = Arc::new(AtomicU64::new(0));
    let (cpu0, t) = (cpu_seconds(), Instant::now());
    let mut tasks = Vec::new();
    for i in 0..n {
        let (chan, token, bytes) = (
            chans[i % chans.len()].clone(),
            token.to_string(),
            bytes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut c = StreamServiceClient::new(chan);
            let mut s = c
                .stream_audio(authed(
                    &token,
                    StreamAudioRequest {
                        track_id: id,
                        ..Default::default()
                    },
                ))
                .await?
                .into_inner();
            while let Some(chunk) = s.next().await {
                bytes.fetch_add(chunk?.audio_data.len() as u64, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    let mut failed = 0;
    for t in tasks {
        if !matches!(t.await, Ok(Ok(()))) {
            failed += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let sent = bytes.load(Ordering::Relaxed) as f64;
    let cpu = cpu_seconds() - cpu0;
    println!(
        "{n} listeners ({failed} failed): {:.1} MB in {secs:.2}s = {:.0} MB/s; CPU {cpu:.2}s ({:.2} CPU-s/GB, clients included); peak RSS {:.0} MB (clients included)",
        sent / 1e6,
        sent / secs / 1e6,
        cpu / (sent / 1e9),
        rss_mb()
    );
    Ok(())
}
