//! On-demand playback: chunks of ~1 s sliced without copying from a cached rendition (Ogg Opus),
//! or decoded to pcm_s16le on blocking threads one chunk at a time. The stream is lazy, so
//! HTTP/2 flow control is the only pacing and nothing queues up per listener.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use veza_media_core::{AudioChunk, Chunker, PcmChunks, TRACK_CHUNK_MS};
use veza_storage::MediaRecord;

use super::{DomainError, Media, Result, not_found, pick_rendition};
use crate::{caller::Caller, domain::Analytics};

/// Output format of `StreamAudio`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ogg,
    PcmS16le,
}

impl Format {
    /// `ogg` (or empty) and `pcm_s16le`.
    pub fn parse(s: &str) -> Result<Format> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "ogg" | "opus" => Ok(Format::Ogg),
            "pcm_s16le" | "pcm" => Ok(Format::PcmS16le),
            other => Err(DomainError::invalid(
                "format",
                format!("{other:?} is not a format: use \"ogg\" or \"pcm_s16le\""),
            )),
        }
    }
}

/// What a listener asks for.
#[derive(Debug, Clone)]
pub struct PlayRequest {
    pub track_id: i64,
    /// kbps; 0 = the highest rendition.
    pub quality: i32,
    pub format: String,
    pub start_ms: i64,
}

/// The chunks of one playback.
pub type Playback = Pin<Box<dyn Stream<Item = Result<AudioChunk>> + Send + 'static>>;

impl Media {
    /// Starts playing a ready track.
    pub async fn play(&self, who: &Caller, req: PlayRequest) -> Result<(MediaRecord, Playback)> {
        let format = Format::parse(&req.format)?;
        if req.start_ms < 0 {
            return Err(DomainError::invalid("start_ms", "must be ≥ 0"));
        }
        if req.quality < 0 {
            return Err(DomainError::invalid(
                "quality",
                "must be a bitrate in kbps ≥ 0",
            ));
        }
        let id = req.track_id;
        let m = self.info(who, id).await?;
        if m.kind != "track" {
            return Err(DomainError::FailedPrecondition(format!(
                "media {id} is a live stream, not a track: listen to it live"
            )));
        }
        if m.status != "ready" {
            return Err(DomainError::FailedPrecondition(format!(
                "track {id} is {}, not ready",
                m.status
            )));
        }
        let kbps =
            pick_rendition(&m.renditions, req.quality as u32).ok_or_else(|| not_found(id))?;
        let r = self.load_rendition(id, kbps).await?;
        let start_ms = req.start_ms as u64;
        if start_ms >= r.index.duration_ms().max(1) {
            return Err(DomainError::invalid(
                "start_ms",
                format!(
                    "{start_ms} is beyond the track's {} ms",
                    r.index.duration_ms()
                ),
            ));
        }
        let user = who.user_id().unwrap_or(0);
        self.inner.metrics.live_listeners.inc();
        let finished = PlayFinished {
            analytics: self.inner.analytics.clone(),
            metrics: self.inner.metrics.clone(),
            user,
            track: id,
            chunks: 0,
            _listening: self.inner.listeners.join(id),
        };
        self.inner.analytics.emit(
            "play_started",
            user,
            vec![
                ("track_id".into(), id.to_string()),
                ("kbps".into(), kbps.to_string()),
                ("format".into(), format!("{format:?}").to_ascii_lowercase()),
            ],
        );
        let chunks: Playback = match format {
            Format::Ogg => {
                let it = Chunker::new(r.data.clone(), r.index.clone(), start_ms, TRACK_CHUNK_MS);
                Box::pin(futures::stream::iter(it).map(Ok))
            }
            Format::PcmS16le => {
                let (data, index) = (r.data.clone(), r.index.clone());
                let it = tokio::task::spawn_blocking(move || {
                    PcmChunks::new(data, index, start_ms, TRACK_CHUNK_MS)
                })
                .await
                .map_err(|e| DomainError::Internal(e.into()))?
                .map_err(|e| DomainError::Internal(e.into()))?;
                pcm_stream(it)
            }
        };
        let counted = chunks.scan(finished, |f, c| {
            f.chunks += 1;
            futures::future::ready(Some(c))
        });
        Ok((m, Box::pin(counted)))
    }
}

/// Decodes one chunk per blocking task, only when the listener wants the next one.
fn pcm_stream(it: PcmChunks) -> Playback {
    Box::pin(futures::stream::unfold(Some(it), |state| async move {
        let mut it = state?;
        let (next, it) = match tokio::task::spawn_blocking(move || (it.next(), it)).await {
            Ok(v) => v,
            Err(e) => return Some((Err(DomainError::Internal(e.into())), None)),
        };
        match next {
            Some(Ok(c)) => Some((Ok(c), Some(it))),
            Some(Err(e)) => Some((Err(DomainError::Internal(e.into())), None)),
            None => None,
        }
    }))
}

/// Emits `play_finished` and counts the listener out when the playback stream is dropped
/// (ended or abandoned).
struct PlayFinished {
    analytics: Analytics,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    user: i64,
    track: i64,
    chunks: u64,
    /// Counts the listener in for this track until dropped.
    _listening: super::listeners::Listening,
}

impl Drop for PlayFinished {
    fn drop(&mut self) {
        self.metrics.live_listeners.dec();
        self.analytics.emit(
            "play_finished",
            self.user,
            vec![
                ("track_id".into(), self.track.to_string()),
                ("chunks".into(), self.chunks.to_string()),
            ],
        );
    }
}
