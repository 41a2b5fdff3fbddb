//! `veza.stream.StreamService`: uploads, stream info and on-demand playback of tracks. Live
//! streams (`StartStream`, `StopStream`, `StreamAnalytics`) come with the next issue and answer
//! `UNIMPLEMENTED` until then.

use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use veza_proto::stream::{self as pb, stream_service_server::StreamService};
use veza_storage::MediaRecord;

use super::{caller, timestamp};
use crate::{
    domain::{
        DomainError,
        media::{Media, NewTrack, PlayRequest, UploadChunk},
    },
    shutdown::{BoxStream, Shutdown, guard},
};

/// The Stream service.
pub struct StreamApi {
    media: Media,
    shutdown: Shutdown,
}

impl StreamApi {
    /// The service over the media domain.
    pub fn new(media: Media, shutdown: Shutdown) -> StreamApi {
        StreamApi { media, shutdown }
    }

    fn info(&self, m: &MediaRecord) -> pb::GetStreamInfoResponse {
        let (audio_url, waveform_url) = if m.status == "ready" {
            self.media.urls(m.id)
        } else {
            (String::new(), String::new())
        };
        pb::GetStreamInfoResponse {
            stream_id: m.id,
            kind: m.kind.clone(),
            title: m.title.clone(),
            description: m.description.clone(),
            status: m.status.clone(),
            error_message: m.error_message.clone(),
            duration_ms: m.duration_ms,
            source_codec: m.source_codec.clone(),
            sample_rate: m.sample_rate as i32,
            channels: m.channels as i32,
            rendition_bitrates: m.renditions.clone(),
            bytes_received: m.bytes_received,
            chunks_received: m.chunks_received as i32,
            listeners: 0,
            audio_url,
            waveform_url,
            owner_id: m.owner_id,
            created_at: timestamp(m.created_at),
            updated_at: timestamp(m.updated_at),
            file_size: m.file_size,
            genre: m.genre.clone(),
            success: true,
        }
    }

    fn upload_response(&self, m: &MediaRecord) -> pb::UploadAudioResponse {
        // Stable once the track is ready; signed so a browser can use them without a token.
        let (audio_url, waveform_url) = self.media.urls(m.id);
        pb::UploadAudioResponse {
            success: true,
            track_id: m.id,
            audio_url,
            waveform_url,
            error_message: String::new(),
        }
    }
}

#[tonic::async_trait]
impl StreamService for StreamApi {
    async fn upload_audio(
        &self,
        req: Request<pb::UploadAudioRequest>,
    ) -> Result<Response<pb::UploadAudioResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let track = NewTrack {
            user_id: r.user_id,
            title: r.title,
            description: r.description,
            genre: r.genre,
            file_format: r.file_format,
            file_size: r.file_size,
            is_private: r.is_private,
        };
        let m = self.media.create_track(&who, track).await?;
        Ok(Response::new(self.upload_response(&m)))
    }

    async fn upload_audio_chunks(
        &self,
        req: Request<Streaming<pb::AudioChunk>>,
    ) -> Result<Response<pb::UploadAudioResponse>, Status> {
        let who = caller(&req)?;
        let inbound = req.into_inner().map(|c| match c {
            Ok(c) => Ok(UploadChunk {
                media_id: c.stream_id,
                index: i64::from(c.chunk_index),
                data: c.audio_data,
            }),
            Err(s) => Err(DomainError::Unavailable(format!(
                "upload stream broken ({}); resume from GetStreamInfo.chunks_received",
                s.message()
            ))),
        });
        let m = self.media.upload(&who, Box::pin(inbound)).await?;
        Ok(Response::new(self.upload_response(&m)))
    }

    async fn get_stream_info(
        &self,
        req: Request<pb::GetStreamInfoRequest>,
    ) -> Result<Response<pb::GetStreamInfoResponse>, Status> {
        let who = caller(&req)?;
        let m = self.media.info(&who, req.into_inner().stream_id).await?;
        Ok(Response::new(self.info(&m)))
    }

    async fn stream_audio(
        &self,
        req: Request<pb::StreamAudioRequest>,
    ) -> Result<Response<BoxStream<pb::AudioChunk>>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let (m, chunks) = self
            .media
            .play(
                &who,
                PlayRequest {
                    track_id: r.track_id,
                    quality: r.quality,
                    format: r.format,
                    start_ms: r.start_ms,
                },
            )
            .await?;
        let id = m.id;
        let out = chunks.map(move |c| {
            c.map(|c| pb::AudioChunk {
                stream_id: id,
                chunk_index: c.index as i32,
                audio_data: c.data,
                sample_rate: c.sample_rate as i32,
                channels: i32::from(c.channels),
                codec: c.codec.as_str().to_string(),
                timestamp: Some(prost_types::Timestamp {
                    seconds: (c.timestamp_ms / 1000) as i64,
                    nanos: ((c.timestamp_ms % 1000) * 1_000_000) as i32,
                }),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(guard(out, self.shutdown.clone())))
    }
}
