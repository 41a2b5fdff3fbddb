//! `veza upload FILE`: creates a track and uploads the file in chunks, with a progress line on
//! stderr, resuming by itself after a dropped connection (from GetStreamInfo's byte and chunk
//! counts), then waits for processing and prints the track's URLs.

use std::{
    io::Write,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tonic::Code;
use veza_proto::stream::{
    AudioChunk, GetStreamInfoRequest, GetStreamInfoResponse, UploadAudioRequest,
    stream_service_client::StreamServiceClient,
};

use super::client::{ClientArgs, Session};

/// Arguments of `veza upload`.
#[derive(clap::Args, Debug)]
pub struct UploadArgs {
    /// The audio file (MP3, FLAC, WAV, Ogg Vorbis, Ogg Opus).
    pub file: PathBuf,
    /// Title [default: the file name without extension].
    #[arg(long)]
    pub title: Option<String>,
    #[arg(long, default_value = "")]
    pub description: String,
    #[arg(long, default_value = "")]
    pub genre: String,
    /// Continue the upload of this existing track instead of creating one.
    #[arg(long)]
    pub resume: Option<i64>,
    /// Bytes per chunk (at most 1 MiB).
    #[arg(long, default_value_t = 1 << 20)]
    pub chunk_size: usize,
    /// Don't wait for processing to finish.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up after this many failed attempts in a row.
    #[arg(long, default_value_t = 30)]
    pub retries: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `veza upload`.
pub async fn run(args: UploadArgs) -> anyhow::Result<()> {
    let size = tokio::fs::metadata(&args.file)
        .await
        .with_context(|| format!("reading {}", args.file.display()))?
        .len();
    anyhow::ensure!(size > 0, "{} is empty", args.file.display());
    let chunk_size = args.chunk_size.clamp(1, 1 << 20);
    let mut session = args.client.connect().await?;
    let id = match args.resume {
        Some(id) => id,
        None => {
            let title = args.title.clone().unwrap_or_else(|| {
                args.file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "untitled".into())
            });
            let req = UploadAudioRequest {
                title,
                description: args.description.clone(),
                genre: args.genre.clone(),
                file_size: size as i64,
                file_format: args
                    .file
                    .extension()
                    .map(|e| e.to_string_lossy().to_ascii_lowercase())
                    .unwrap_or_default(),
                ..Default::default()
            };
            let r = StreamServiceClient::new(session.channel.clone())
                .upload_audio(session.request(req)?)
                .await
                .map_err(status_error)?
                .into_inner();
            eprintln!("track {}: uploading {size} bytes", r.track_id);
            r.track_id
        }
    };
    let started = Instant::now();
    let mut failures = 0;
    let mut sent_total = 0u64;
    loop {
        let info = match info(&session, id).await {
            Ok(i) => i,
            Err(e) if failures < args.retries => {
                failures += 1;
                eprintln!("\nconnection problem ({e}); retrying");
                tokio::time::sleep(backoff(failures)).await;
                if let Ok(s) = args.client.connect().await {
                    session = s;
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if info.status != "uploading" {
            break;
        }
        if info.bytes_received > 0 || failures > 0 {
            eprintln!(
                "\nresuming at chunk {} ({} of {size} bytes stored)",
                info.chunks_received, info.bytes_received
            );
        }
        match send(
            &session,
            id,
            &args,
            &info,
            size,
            chunk_size,
            started,
            &mut sent_total,
        )
        .await
        {
            Ok(()) => break,
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unavailable
                        | Code::Unknown
                        | Code::Cancelled
                        | Code::Internal
                        | Code::DeadlineExceeded
                        | Code::Aborted
                ) && failures < args.retries =>
            {
                failures += 1;
                eprintln!("\nupload interrupted ({}); resuming", status.message());
                tokio::time::sleep(backoff(failures)).await;
                if let Ok(s) = args.client.connect().await {
                    session = s;
                }
            }
            Err(status) => return Err(status_error(status)),
        }
    }
    eprintln!();
    let mut info = info(&session, id).await?;
    while !args.no_wait && info.status == "processing" {
        tokio::time::sleep(Duration::from_millis(250)).await;
        info = self::info(&session, id).await?;
    }
    if info.status == "failed" {
        anyhow::bail!("track {id} failed: {}", info.error_message);
    }
    println!("track_id: {id}");
    println!("status: {}", info.status);
    if !info.audio_url.is_empty() {
        println!("audio_url: {}", info.audio_url);
        println!("waveform_url: {}", info.waveform_url);
    }
    Ok(())
}

async fn info(session: &Session, id: i64) -> anyhow::Result<GetStreamInfoResponse> {
    Ok(StreamServiceClient::new(session.channel.clone())
        .get_stream_info(session.request(GetStreamInfoRequest { stream_id: id })?)
        .await
        .map_err(status_error)?
        .into_inner())
}

/// Sends the file from where the server's counts say, until closed.
#[allow(clippy::too_many_arguments)]
async fn send(
    session: &Session,
    id: i64,
    args: &UploadArgs,
    info: &GetStreamInfoResponse,
    size: u64,
    chunk_size: usize,
    started: Instant,
    sent_total: &mut u64,
) -> Result<(), tonic::Status> {
    let io =
        |e: std::io::Error| tonic::Status::failed_precondition(format!("reading the file: {e}"));
    let mut file = tokio::fs::File::open(&args.file).await.map_err(io)?;
    let offset = info.bytes_received.max(0) as u64;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(io)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<AudioChunk>(4);
    let first_index = info.chunks_received;
    let sent_before = *sent_total;
    let reader = async move {
        let mut index = first_index;
        let mut done = offset;
        if done >= size && index > 0 {
            // Everything is stored: re-send (idempotently) the last chunk index to close.
            let _ = tx
                .send(AudioChunk {
                    stream_id: id,
                    chunk_index: index - 1,
                    ..Default::default()
                })
                .await;
            return Ok::<u64, std::io::Error>(0);
        }
        let mut last_print = Instant::now();
        let mut sent = 0u64;
        while done < size {
            let mut buf = vec![0u8; chunk_size.min((size - done) as usize)];
            file.read_exact(&mut buf).await?;
            let n = buf.len() as u64;
            let chunk = AudioChunk {
                stream_id: id,
                chunk_index: index,
                audio_data: buf.into(),
                ..Default::default()
            };
            if tx.send(chunk).await.is_err() {
                break;
            }
            index += 1;
            done += n;
            sent += n;
            if last_print.elapsed() >= Duration::from_millis(200) || done == size {
                last_print = Instant::now();
                progress(done, size, sent_before + sent, started);
            }
        }
        Ok(sent)
    };
    let call = async {
        let mut client = StreamServiceClient::new(session.channel.clone());
        let req = session
            .request(tokio_stream::wrappers::ReceiverStream::new(rx))
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        client.upload_audio_chunks(req).await
    };
    let (read, result) = tokio::join!(reader, call);
    *sent_total += read.as_ref().copied().unwrap_or(0);
    read.map_err(io)?;
    result.map(|_| ())
}

fn progress(done: u64, size: u64, sent: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let rate = sent as f64 / secs;
    let eta = if rate > 0.0 {
        (size - done) as f64 / rate
    } else {
        0.0
    };
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r{:>10} / {} bytes ({:5.1}%)  {:7.2} MB/s  ETA {:5.1}s ",
        done,
        size,
        done as f64 * 100.0 / size as f64,
        rate / 1e6,
        eta
    );
    let _ = err.flush();
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(200 * u64::from(failures.min(10)))
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}
