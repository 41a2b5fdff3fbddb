//! `veza.stream.StreamService`: uploads, stream info and playback of tracks, and live streams
//! (`StartStream`, ingest over `UploadAudioChunks`, `StreamAudio` fan-out, `StopStream`,
//! `StreamAnalytics`). Tracks and live streams share one id space; each call routes by kind.

use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use veza_proto::stream::{self as pb, stream_service_server::StreamService};
use veza_storage::MediaRecord;

use super::{
    caller,
    live_frame::{live_audio_chunk, position},
    timestamp,
};
use crate::{
    domain::{
        DomainError,
        live::{ListenRequest, Live, LiveChunk, StartLive},
        media::{Media, NewTrack, PlayRequest, UploadChunk},
    },
    shutdown::{BoxStream, Shutdown, guard},
};

/// The Stream service.
pub struct StreamApi {
    media: Media,
    live: Live,
    shutdown: Shutdown,
}

impl StreamApi {
    /// The service over the media domain.
    pub fn new(media: Media, live: Live, shutdown: Shutdown) -> StreamApi {
        StreamApi {
            media,
            live,
            shutdown,
        }
    }

    fn info(&self, m: &MediaRecord) -> pb::GetStreamInfoResponse {
        let (audio_url, waveform_url) = if m.status == "ready" {
            self.media.urls(m.id)
        } else if m.kind == "live" && m.status == "live" {
            (self.media.live_url(m.id, m.is_private), String::new())
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
            listeners: self.live.listeners_total(m.id) as i32,
            audio_url,
            waveform_url,
            owner_id: m.owner_id,
            created_at: timestamp(m.created_at),
            updated_at: timestamp(m.updated_at),
            file_size: m.file_size,
            genre: m.genre.clone(),
            success: true,
            metadata: m.metadata.clone(),
            claimed_duration: i32::try_from(m.claimed_duration).unwrap_or(i32::MAX),
            is_private: m.is_private,
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
            metadata: r.metadata,
            claimed_duration: r.duration,
        };
        let m = self.media.create_track(&who, track).await?;
        Ok(Response::new(self.upload_response(&m)))
    }

    async fn upload_audio_chunks(
        &self,
        req: Request<Streaming<pb::AudioChunk>>,
    ) -> Result<Response<pb::UploadAudioResponse>, Status> {
        let who = caller(&req)?;
        let mut inbound = req.into_inner();
        let first = match inbound.next().await {
            Some(c) => c?,
            None => return Err(Status::invalid_argument("the upload stream has no chunks")),
        };
        let kind = self.media.info(&who, first.stream_id).await?.kind;
        let inbound = futures::stream::once(async { Ok(first) }).chain(inbound);
        let m = if kind == "live" {
            let mut chunks = Box::pin(inbound.map(|c| c.map(live_chunk).map_err(broken)));
            let first = match chunks.next().await {
                Some(c) => c?,
                None => return Err(Status::invalid_argument("the upload stream has no chunks")),
            };
            self.live.publish(&who, first, chunks).await?
        } else {
            let chunks = inbound.map(|c| match c {
                Ok(c) => Ok(UploadChunk {
                    media_id: c.stream_id,
                    index: i64::from(c.chunk_index),
                    data: c.audio_data,
                }),
                Err(s) => Err(broken(s)),
            });
            self.media.upload(&who, Box::pin(chunks)).await?
        };
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
        let country = req
            .metadata()
            .get("x-country")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let r = req.into_inner();
        if self.media.info(&who, r.track_id).await?.kind == "live" {
            return self.listen_live(&who, r, country).await;
        }
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
                timestamp: Some(position(c.timestamp_ms)),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(guard(out, self.shutdown.clone())))
    }

    async fn start_stream(
        &self,
        req: Request<pb::StartStreamRequest>,
    ) -> Result<Response<pb::StartStreamResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let started = self
            .live
            .start_stream(
                &who,
                StartLive {
                    title: r.title,
                    description: r.description,
                    sample_rate: r.sample_rate,
                    channels: r.channels,
                    codec: r.codec,
                    record: r.record,
                    is_private: r.is_private,
                },
            )
            .await?;
        let m = &started.record;
        Ok(Response::new(pb::StartStreamResponse {
            success: true,
            stream_id: m.id,
            info: Some(self.info(m)),
            ingest_url: self.media.live_url(m.id, false),
            stream_key: started.stream_key,
        }))
    }

    async fn stop_stream(
        &self,
        req: Request<pb::StopStreamRequest>,
    ) -> Result<Response<pb::StopStreamResponse>, Status> {
        let who = caller(&req)?;
        let track = self
            .live
            .stop_stream(&who, req.into_inner().stream_id)
            .await?;
        Ok(Response::new(pb::StopStreamResponse {
            success: true,
            track_id: track.unwrap_or(0),
        }))
    }

    async fn stream_analytics(
        &self,
        req: Request<pb::StreamAnalyticsRequest>,
    ) -> Result<Response<BoxStream<pb::AnalyticsData>>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let feed = self
            .live
            .analytics(&who, r.stream_id, r.interval_ms)
            .await?;
        let out = feed.map(|s| {
            Ok(pb::AnalyticsData {
                stream_id: s.stream_id,
                listeners: s.listeners as i32,
                bitrate: s.input_kbps,
                latency: s.latency_ms,
                countries: s.countries,
                timestamp: timestamp(veza_storage::now_ms()),
                plays: i32::try_from(s.plays).unwrap_or(i32::MAX),
            })
        });
        Ok(Response::new(guard(out, self.shutdown.clone())))
    }
}

impl StreamApi {
    /// `StreamAudio` on a live id: the shared pages from the live edge.
    async fn listen_live(
        &self,
        who: &crate::caller::Caller,
        r: pb::StreamAudioRequest,
        country: Option<String>,
    ) -> Result<Response<BoxStream<pb::AudioChunk>>, Status> {
        if !matches!(r.format.trim(), "" | "ogg" | "opus") {
            return Err(Status::invalid_argument(
                "format: live streams are sent as Ogg Opus (\"ogg\")",
            ));
        }
        if r.start_ms != 0 {
            return Err(Status::invalid_argument(
                "start_ms: a live stream starts at its live edge",
            ));
        }
        let req = ListenRequest {
            stream_id: r.track_id,
            country,
        };
        let (m, feed) = self.live.listen(who, req).await?;
        let id = m.id;
        let out = feed.map(move |p| Ok(live_audio_chunk(id, &p)));
        Ok(Response::new(guard(out, self.shutdown.clone())))
    }
}

fn live_chunk(c: pb::AudioChunk) -> LiveChunk {
    LiveChunk {
        stream_id: c.stream_id,
        data: c.audio_data,
        codec: c.codec,
        sample_rate: c.sample_rate,
        channels: c.channels,
    }
}

fn broken(s: Status) -> DomainError {
    DomainError::Unavailable(format!(
        "upload stream broken ({}); resume from GetStreamInfo.chunks_received",
        s.message()
    ))
}
