//! Media: tracks (and, later, live streams) in one id space. Resumable uploads stored as one
//! object per chunk, background processing by the media core, on-demand playback from an
//! in-memory rendition cache, and signed HTTP URLs. See docs/ARCHITECTURE.md, "Media".
//!
//! Object store layout: `uploads/<id>/<index>` (the uploaded file as its chunks, kept as the
//! source), `media/<id>/<kbps>k.opus` + `<kbps>k.index.json` (renditions),
//! `media/<id>/waveform.json` and `waveform.dat`.

mod cache;
mod claims;
mod listeners;
mod parts;
mod play;
mod process;
mod quota;
mod recording;
mod upload;
mod urls;

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Semaphore;
use veza_storage::{BlobStore, Db, MediaRecord, NewMedia};

pub use cache::Loaded;
pub use play::{Format, PlayRequest, Playback};
pub use quota::{QuotaGuard, Quotas};
pub use upload::{MAX_CHUNK_BYTES, UploadChunk};
pub use urls::UrlSigner;

use super::{
    Analytics, Notifier,
    error::{DomainError, Result},
};
use crate::{caller::Caller, shutdown::Shutdown};

/// Largest `UploadAudioRequest.metadata` kept with a track (opaque bytes, as chat's).
pub const MAX_METADATA: usize = 16 * 1024;

/// Settings of the media domain.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    pub max_upload_bytes: u64,
    pub processing_workers: usize,
    /// Rendition bitrates in kbps, ascending.
    pub renditions: Vec<u32>,
    pub cache_bytes: u64,
    pub url_ttl: Duration,
    /// Base of `audio_url` / `waveform_url`, e.g. `http://127.0.0.1:8080`.
    pub public_url: String,
    /// Where assembled uploads wait for probing and processing.
    pub tmp_dir: PathBuf,
    /// Longest decoded audio accepted (refused from the header at upload, else while decoding).
    pub max_track_duration: Duration,
    /// Processing attempts per track (crashes and restarts included) before it fails.
    pub processing_attempts: u32,
    /// Per-user limits of storage, uploads in progress and live streams.
    pub quotas: Quotas,
}

/// The fields of a track to create.
#[derive(Debug, Clone, Default)]
pub struct NewTrack {
    /// The owner asked for; 0 = the caller.
    pub user_id: i64,
    pub title: String,
    pub description: String,
    pub genre: String,
    pub file_format: String,
    pub file_size: i64,
    /// Only the owner (and admins) may see and play it.
    pub is_private: bool,
    /// Opaque, at most [`MAX_METADATA`] bytes.
    pub metadata: Vec<u8>,
    /// The client's claim in seconds (0 = none); never trusted, the duration is measured.
    pub claimed_duration: i32,
}

/// The media domain; cheap to clone.
#[derive(Clone)]
pub struct Media {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    blobs: BlobStore,
    notifier: Notifier,
    analytics: Analytics,
    metrics: Arc<crate::metrics::Metrics>,
    opts: MediaOptions,
    cache: cache::RenditionCache,
    signer: UrlSigner,
    workers: Arc<Semaphore>,
    shutdown: Shutdown,
    /// This instance's name in processing claims (stable across restarts of one data dir).
    instance: String,
    /// Tracks queued or processing here, so the claim sweep does not queue them twice.
    queued: Mutex<HashSet<i64>>,
    quota: quota::QuotaState,
    /// On-demand listeners of each track on this instance.
    listeners: listeners::TrackListeners,
}

impl Media {
    /// Loads (or creates) the URL signing secret and re-queues processing that a stop interrupted.
    pub async fn start(
        db: Db,
        blobs: BlobStore,
        notifier: Notifier,
        analytics: Analytics,
        metrics: Arc<crate::metrics::Metrics>,
        opts: MediaOptions,
        shutdown: Shutdown,
    ) -> anyhow::Result<Media> {
        std::fs::create_dir_all(&opts.tmp_dir)?;
        remove_work_dirs(&opts.tmp_dir);
        let instance = claims::instance_id(&opts.tmp_dir)?;
        let candidate = hex::encode(crate::auth::secrets::random_bytes::<32>());
        let quota = quota::QuotaState::new(opts.quotas);
        let secret = db.media_url_secret(&candidate).await?;
        let key = hex::decode(&secret).unwrap_or_else(|_| secret.into_bytes());
        let media = Media {
            inner: Arc::new(Inner {
                signer: UrlSigner::new(key, &opts.public_url, opts.url_ttl),
                cache: cache::RenditionCache::new(opts.cache_bytes),
                workers: Arc::new(Semaphore::new(opts.processing_workers.max(1))),
                db,
                blobs,
                notifier,
                analytics,
                metrics,
                opts,
                shutdown,
                instance,
                queued: Mutex::new(HashSet::new()),
                quota,
                listeners: listeners::TrackListeners::default(),
            }),
        };
        // Interrupted work (ours, or an instance's whose claim expired) is taken up now, and
        // then swept for periodically while claims are renewed.
        media.sweep_claims().await?;
        media.spawn_claim_keeper();
        Ok(media)
    }

    /// Creates a track in `uploading` (SPEC §6): the owner is the caller, or `user_id` when an
    /// admin or an API key with `stream:publish` (or `admin`) asks (it must name an existing
    /// owner).
    pub async fn create_track(&self, who: &Caller, t: NewTrack) -> Result<MediaRecord> {
        if matches!(who, Caller::ApiKey(_)) && !who.has_scope("stream:publish") {
            return Err(DomainError::denied(
                "uploading needs the stream:publish scope",
            ));
        }
        let owner = match (who, t.user_id) {
            (Caller::User(u), 0) => u.user_id,
            (Caller::User(u), id) if id == u.user_id => id,
            (Caller::User(_), id) if who.is_admin() => id,
            (Caller::User(_), _) => {
                return Err(DomainError::denied(
                    "user_id must be your own id unless you are an admin",
                ));
            }
            (Caller::ApiKey(_), 0) => {
                return Err(DomainError::invalid(
                    "user_id",
                    "an API key must name the track's owner",
                ));
            }
            (Caller::ApiKey(_), id) => id,
        };
        if owner != who.user_id().unwrap_or(0) && self.inner.db.user_by_id(owner).await?.is_none() {
            return Err(DomainError::NotFound(format!("user {owner} not found")));
        }
        let title = t.title.trim();
        check_len("title", title, 1, 200, false)?;
        check_len("description", &t.description, 0, 5000, true)?;
        check_len("genre", &t.genre, 0, 100, false)?;
        check_len("file_format", &t.file_format, 0, 32, false)?;
        if t.metadata.len() > MAX_METADATA {
            return Err(DomainError::invalid(
                "metadata",
                format!(
                    "must be at most {MAX_METADATA} bytes (got {})",
                    t.metadata.len()
                ),
            ));
        }
        if t.claimed_duration < 0 {
            return Err(DomainError::invalid(
                "duration",
                "must be the claimed duration in seconds (≥ 0; 0 = unknown)",
            ));
        }
        if t.file_size <= 0 {
            return Err(DomainError::invalid(
                "file_size",
                "must be the file's size in bytes (> 0)",
            ));
        }
        if t.file_size as u64 > self.inner.opts.max_upload_bytes {
            return Err(DomainError::ResourceExhausted(format!(
                "file_size {} exceeds the upload limit of {} bytes",
                t.file_size, self.inner.opts.max_upload_bytes
            )));
        }
        let _quota = self.check_quota(owner, t.file_size).await?;
        let m = self
            .inner
            .db
            .create_media(&NewMedia {
                kind: "track",
                owner_id: owner,
                title,
                description: &t.description,
                genre: &t.genre,
                file_format: &t.file_format,
                file_size: t.file_size,
                status: "uploading",
                is_private: t.is_private,
                metadata: &t.metadata,
                claimed_duration: i64::from(t.claimed_duration),
            })
            .await?;
        Ok(m)
    }

    /// Media `id` as stored, or `NOT_FOUND`; no visibility check (see [`Media::info`]).
    pub(super) async fn record(&self, id: i64) -> Result<MediaRecord> {
        self.inner.db.media(id).await?.ok_or_else(|| not_found(id))
    }

    /// A track or live stream. Public ones are visible to every authenticated caller; private
    /// ones only to their owner and admins, and to anyone else they do not exist (`NOT_FOUND`,
    /// like unknown ids).
    pub async fn info(&self, who: &Caller, id: i64) -> Result<MediaRecord> {
        let m = self.record(id).await?;
        if m.is_private && !who.may_act_for(m.owner_id) {
            return Err(not_found(id));
        }
        Ok(m)
    }

    /// Signed (audio_url, waveform_url) of media `id`.
    pub fn urls(&self, id: i64) -> (String, String) {
        let s = &self.inner.signer;
        (s.url(id, "audio.opus"), s.url(id, "waveform.json"))
    }

    /// The plain HTTP URL of live stream `id` (signed when `private`), also its ingest URL.
    pub fn live_url(&self, id: i64, private: bool) -> String {
        self.inner.signer.live_url(id, private)
    }

    /// The URL signer (the HTTP port checks signatures with it).
    pub fn signer(&self) -> &UrlSigner {
        &self.inner.signer
    }

    /// A stored file of a ready media (`waveform.json`, `waveform.dat`), for the HTTP port.
    pub async fn file(&self, id: i64, name: &str) -> Result<bytes::Bytes> {
        self.ready(id).await?;
        Ok(self.inner.blobs.get(&format!("media/{id}/{name}")).await?)
    }

    /// The rendition of a ready media nearest `kbps` (0 = highest), from the cache.
    pub async fn rendition(&self, id: i64, kbps: u32) -> Result<Arc<Loaded>> {
        let m = self.ready(id).await?;
        let pick = pick_rendition(&m.renditions, kbps).ok_or_else(|| {
            DomainError::FailedPrecondition(format!("track {id} has no renditions"))
        })?;
        self.load_rendition(id, pick).await
    }

    async fn ready(&self, id: i64) -> Result<MediaRecord> {
        let m = self.record(id).await?;
        if m.status != "ready" {
            return Err(DomainError::FailedPrecondition(format!(
                "track {id} is {}, not ready",
                m.status
            )));
        }
        Ok(m)
    }

    async fn load_rendition(&self, id: i64, kbps: u32) -> Result<Arc<Loaded>> {
        let blobs = self.inner.blobs.clone();
        self.inner
            .cache
            .get_or_load((id, kbps), || async move {
                let data = blobs.get(&format!("media/{id}/{kbps}k.opus")).await?;
                let index = match blobs.get(&format!("media/{id}/{kbps}k.index.json")).await {
                    Ok(json) => serde_json::from_slice(&json).ok(),
                    Err(_) => None,
                };
                let index = match index {
                    Some(i) => i,
                    None => {
                        let d = data.clone();
                        tokio::task::spawn_blocking(move || {
                            veza_media_core::SeekIndex::from_ogg(&d)
                        })
                        .await
                        .map_err(|e| DomainError::Internal(e.into()))?
                        .map_err(|e| DomainError::Internal(e.into()))?
                    }
                };
                Ok::<_, DomainError>(Loaded {
                    data,
                    index: Arc::new(index),
                })
            })
            .await
    }
}

/// The rendition nearest `kbps` (0 = the highest); ties go to the higher one.
pub fn pick_rendition(renditions: &[i32], kbps: u32) -> Option<u32> {
    let max = renditions.iter().copied().max()?;
    if kbps == 0 {
        return u32::try_from(max).ok();
    }
    renditions
        .iter()
        .copied()
        .min_by_key(|r| ((i64::from(*r) - i64::from(kbps)).abs(), -i64::from(*r)))
        .and_then(|r| u32::try_from(r).ok())
}

/// Removes processing working directories a previous run left (it stopped mid-attempt).
fn remove_work_dirs(tmp_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(tmp_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with(process::WORK_DIR_PREFIX)
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn not_found(id: i64) -> DomainError {
    DomainError::not_found("track", id)
}

/// A stored string of `min..=max` characters without control characters; `lines` also allows
/// newlines and tabs (descriptions).
pub(super) fn check_len(
    field: &'static str,
    v: &str,
    min: usize,
    max: usize,
    lines: bool,
) -> Result<()> {
    if lines {
        super::validate::body_chars(field, v)?;
    } else {
        super::validate::no_control(field, v)?;
    }
    let n = v.chars().count();
    if n < min || n > max {
        return Err(DomainError::invalid(
            field,
            format!("must be {min}–{max} characters (got {n})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pick_rendition;

    #[test]
    fn nearest_rendition() {
        let r = [32, 64, 128];
        assert_eq!(pick_rendition(&r, 0), Some(128));
        assert_eq!(pick_rendition(&r, 40), Some(32));
        assert_eq!(pick_rendition(&r, 48), Some(64));
        assert_eq!(pick_rendition(&r, 1000), Some(128));
        assert_eq!(pick_rendition(&[], 64), None);
    }
}
