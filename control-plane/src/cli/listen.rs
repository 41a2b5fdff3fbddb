//! `veza listen TRACK_ID`: plays a track to a file (`.opus` by default, playable as is) or to
//! standard output with `-o -`.

use std::path::PathBuf;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tonic::metadata::MetadataValue;
use veza_proto::stream::{StreamAudioRequest, stream_service_client::StreamServiceClient};

use super::client::ClientArgs;
use crate::grpc::direct::goaway::DEDICATED;

/// Arguments of `veza listen`.
#[derive(clap::Args, Debug)]
pub struct ListenArgs {
    pub track_id: i64,
    /// Output file, or `-` for standard output [default: <track_id>.opus or .pcm].
    #[arg(short, long)]
    pub output: Option<String>,
    /// Bitrate in kbps; the nearest rendition is used (0 = the highest).
    #[arg(long, default_value_t = 0)]
    pub quality: i32,
    /// Start position in seconds (e.g. 12.5).
    #[arg(long, default_value_t = 0.0)]
    pub start: f64,
    /// `ogg` (Ogg Opus) or `pcm_s16le` (48 kHz interleaved).
    #[arg(long, default_value = "ogg")]
    pub format: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `veza listen`.
pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.start >= 0.0 && args.start.is_finite(),
        "--start must be ≥ 0"
    );
    let session = args.client.connect().await?;
    let req = StreamAudioRequest {
        track_id: args.track_id,
        quality: args.quality,
        format: args.format.clone(),
        start_ms: (args.start * 1000.0).round() as i64,
    };
    let mut req = session.request(req)?;
    // Nothing else goes on this channel: a live stream's connection may be left by hyper.
    req.metadata_mut()
        .insert(DEDICATED, MetadataValue::from_static("dedicated"));
    let mut stream = StreamServiceClient::new(session.channel.clone())
        .max_decoding_message_size(16 << 20)
        .stream_audio(req)
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let ext = if args.format == "pcm_s16le" {
        "pcm"
    } else {
        "opus"
    };
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| format!("{}.{ext}", args.track_id));
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if output == "-" {
        Box::new(tokio::io::stdout())
    } else {
        Box::new(tokio::fs::File::create(PathBuf::from(&output)).await?)
    };
    let (mut bytes, mut chunks) = (0u64, 0u64);
    let mut format = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
        format.get_or_insert((chunk.codec.clone(), chunk.sample_rate, chunk.channels));
        out.write_all(&chunk.audio_data).await?;
        bytes += chunk.audio_data.len() as u64;
        chunks += 1;
    }
    out.flush().await?;
    if output != "-" {
        let (codec, rate, ch) = format.unwrap_or_default();
        eprintln!("{output}: {bytes} bytes in {chunks} chunks ({codec}, {rate} Hz, {ch} ch)");
    }
    Ok(())
}
