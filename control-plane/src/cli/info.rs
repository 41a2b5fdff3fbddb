//! `veza info ID`: what the server knows about a track or live stream.

use veza_proto::stream::{GetStreamInfoRequest, stream_service_client::StreamServiceClient};

use super::client::ClientArgs;

/// Runs `veza info`.
pub async fn run(id: i64, client: ClientArgs) -> anyhow::Result<()> {
    let session = client.connect().await?;
    let i = StreamServiceClient::new(session.channel.clone())
        .get_stream_info(session.request(GetStreamInfoRequest { stream_id: id })?)
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let ts = |t: Option<prost_types::Timestamp>| {
        t.map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
            .unwrap_or(0)
    };
    println!("id: {}", i.stream_id);
    println!("kind: {}", i.kind);
    println!("title: {}", i.title);
    if !i.description.is_empty() {
        println!("description: {}", i.description);
    }
    if !i.genre.is_empty() {
        println!("genre: {}", i.genre);
    }
    println!("status: {}", i.status);
    if !i.error_message.is_empty() {
        println!("error: {}", i.error_message);
    }
    println!("owner_id: {}", i.owner_id);
    println!("duration_ms: {}", i.duration_ms);
    println!(
        "source: {} {} Hz, {} ch",
        i.source_codec, i.sample_rate, i.channels
    );
    println!("renditions_kbps: {:?}", i.rendition_bitrates);
    println!(
        "received: {} of {} bytes in {} chunks",
        i.bytes_received, i.file_size, i.chunks_received
    );
    println!("listeners: {}", i.listeners);
    println!("created_at_ms: {}", ts(i.created_at));
    println!("updated_at_ms: {}", ts(i.updated_at));
    if !i.audio_url.is_empty() {
        println!("audio_url: {}", i.audio_url);
        println!("waveform_url: {}", i.waveform_url);
    }
    Ok(())
}
