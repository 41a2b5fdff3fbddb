//! The media repository: tracks and live streams (one id space), their upload progress and
//! processing results, and the secret that signs media URLs.

use sqlx::{Row, any::AnyRow};

use crate::{Db, error::Result, now_ms};

/// A stored track or live stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRecord {
    pub id: i64,
    /// `track` or `live`.
    pub kind: String,
    pub owner_id: i64,
    pub title: String,
    pub description: String,
    pub genre: String,
    pub file_format: String,
    pub file_size: i64,
    /// `uploading`, `processing`, `ready`, `failed`, `live` or `ended`.
    pub status: String,
    pub error_message: String,
    pub bytes_received: i64,
    pub chunks_received: i64,
    /// Hex SHA-256 of the uploaded file, once complete.
    pub sha256: String,
    pub duration_ms: i64,
    pub source_codec: String,
    pub sample_rate: i64,
    pub channels: i64,
    /// Rendition bitrates in kbps, ascending.
    pub renditions: Vec<i32>,
    /// Only the owner (and admins) may see and play it.
    pub is_private: bool,
    /// The uploader's opaque metadata (`UploadAudioRequest.metadata`).
    pub metadata: Vec<u8>,
    /// The uploader's claim of the duration in seconds (0 = none); `duration_ms` is measured.
    pub claimed_duration: i64,
    /// The instance processing it (while `processing`), and until when (ms) its claim holds.
    pub claimed_by: String,
    pub claim_until: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The fields of a media row to create.
#[derive(Debug, Clone)]
pub struct NewMedia<'a> {
    pub kind: &'a str,
    pub owner_id: i64,
    pub title: &'a str,
    pub description: &'a str,
    pub genre: &'a str,
    pub file_format: &'a str,
    pub file_size: i64,
    pub status: &'a str,
    pub is_private: bool,
    pub metadata: &'a [u8],
    /// Seconds, as the uploader claims them.
    pub claimed_duration: i64,
}

/// What probing an upload found.
#[derive(Debug, Clone, Default)]
pub struct ProbedMedia<'a> {
    pub sha256: &'a str,
    pub duration_ms: i64,
    pub source_codec: &'a str,
    pub sample_rate: i64,
    pub channels: i64,
}

const COLUMNS: &str = "id, kind, owner_id, title, description, genre, file_format, file_size, status, \
     error_message, bytes_received, chunks_received, sha256, duration_ms, source_codec, sample_rate, \
     channels, renditions, is_private, metadata, claimed_duration, claimed_by, claim_until, created_at, updated_at";

impl Db {
    /// Creates a media row.
    pub async fn create_media(&self, m: &NewMedia<'_>) -> Result<MediaRecord> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO media (kind, owner_id, title, description, genre, file_format, file_size, status, is_private, \
             metadata, claimed_duration, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) RETURNING id",
        )
        .bind(m.kind)
        .bind(m.owner_id)
        .bind(m.title)
        .bind(m.description)
        .bind(m.genre)
        .bind(m.file_format)
        .bind(m.file_size)
        .bind(m.status)
        .bind(i64::from(m.is_private))
        .bind(hex::encode(m.metadata))
        .bind(m.claimed_duration)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        self.inserted_media(row.try_get(0)?).await
    }

    /// The media row just inserted with `id`.
    pub(crate) async fn inserted_media(&self, id: i64) -> Result<MediaRecord> {
        self.media(id)
            .await?
            .ok_or_else(|| crate::StorageError::Config("media row vanished".into()))
    }

    /// One media row.
    pub async fn media(&self, id: i64) -> Result<Option<MediaRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM media WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(media_from_row).transpose()
    }

    /// Starts an upload stream: bumps the upload generation of a track still `uploading` and
    /// returns (generation, chunks_received, bytes_received), or `None` when it is not uploading.
    /// Only the stream holding the newest generation records progress, so a client resuming on a
    /// new stream supersedes its old one.
    pub async fn begin_media_upload(&self, id: i64) -> Result<Option<(i64, i64, i64)>> {
        let row = sqlx::query(
            "UPDATE media SET upload_gen = upload_gen + 1 WHERE id = $1 AND status = 'uploading' \
             RETURNING upload_gen, chunks_received, bytes_received",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .transpose()
    }

    /// Records that the first `chunks` chunks (`bytes` bytes) of an upload are durable. `false`
    /// when the stream of generation `gen` no longer owns the upload (superseded, or complete).
    pub async fn record_media_progress(
        &self,
        id: i64,
        generation: i64,
        chunks: i64,
        bytes: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE media SET chunks_received = $1, bytes_received = $2, updated_at = $3 \
             WHERE id = $4 AND upload_gen = $5 AND status = 'uploading' AND chunks_received <= $1",
        )
        .bind(chunks)
        .bind(bytes)
        .bind(now_ms())
        .bind(id)
        .bind(generation)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a complete, probed upload from `uploading` to `processing`, claimed by `claimer`
    /// until `claim_until` (ms). `false` when generation `gen` no longer owns the upload.
    pub async fn set_media_processing(
        &self,
        id: i64,
        generation: i64,
        p: &ProbedMedia<'_>,
        claimer: &str,
        claim_until: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE media SET status = 'processing', sha256 = $1, duration_ms = $2, source_codec = $3, sample_rate = $4, \
             channels = $5, updated_at = $6, claimed_by = $7, claim_until = $8, processing_attempts = 0 \
             WHERE id = $9 AND status = 'uploading' AND upload_gen = $10",
        )
        .bind(p.sha256)
        .bind(p.duration_ms)
        .bind(p.source_codec)
        .bind(p.sample_rate)
        .bind(p.channels)
        .bind(now_ms())
        .bind(claimer)
        .bind(claim_until)
        .bind(id)
        .bind(generation)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Claims a `processing` track for `claimer` until `until` (ms) when nobody holds it: its
    /// claim expired, or `claimer` holds it already. `true` when the claim is `claimer`'s.
    /// One conditional `UPDATE`, so among instances racing for a track exactly one wins.
    pub async fn claim_media(&self, id: i64, claimer: &str, until: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE media SET claimed_by = $1, claim_until = $2 \
             WHERE id = $3 AND status = 'processing' AND (claim_until < $4 OR claimed_by = $1)",
        )
        .bind(claimer)
        .bind(until)
        .bind(id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Counts a new processing attempt of track `id` held by `claimer` and returns the number
    /// of attempts so far (this one included); `None` when the claim is not `claimer`'s.
    pub async fn start_media_attempt(&self, id: i64, claimer: &str) -> Result<Option<i64>> {
        let row = sqlx::query(
            "UPDATE media SET processing_attempts = processing_attempts + 1 \
             WHERE id = $1 AND status = 'processing' AND claimed_by = $2 RETURNING processing_attempts",
        )
        .bind(id)
        .bind(claimer)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok(r.try_get(0)?)).transpose()
    }

    /// Extends every claim `claimer` holds to `until` (ms); returns how many.
    pub async fn renew_media_claims(&self, claimer: &str, until: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE media SET claim_until = $1 WHERE claimed_by = $2 AND status = 'processing'",
        )
        .bind(until)
        .bind(claimer)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Gives up `claimer`'s claim on track `id` (work left for any instance to take).
    pub async fn release_media_claim(&self, id: i64, claimer: &str) -> Result<()> {
        sqlx::query(
            "UPDATE media SET claim_until = 0 WHERE id = $1 AND claimed_by = $2 AND status = 'processing'",
        )
        .bind(id)
        .bind(claimer)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ids of `processing` tracks that `claimer` may claim (expired claims, or its own), oldest
    /// first.
    pub async fn claimable_media(&self, claimer: &str) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT id FROM media WHERE status = 'processing' AND (claim_until < $1 OR claimed_by = $2) ORDER BY id",
        )
        .bind(now_ms())
        .bind(claimer)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Marks a media row `failed` with `reason` (and the file's hash when known).
    pub async fn set_media_failed(&self, id: i64, reason: &str, sha256: &str) -> Result<()> {
        sqlx::query(
            "UPDATE media SET status = 'failed', error_message = $1, sha256 = CASE WHEN $2 = '' THEN sha256 ELSE $2 END, \
             updated_at = $3 WHERE id = $4",
        )
        .bind(reason)
        .bind(sha256)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a track that `claimer` processed `failed`; `false` when its claim was lost.
    pub async fn set_media_processing_failed(
        &self,
        id: i64,
        claimer: &str,
        reason: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE media SET status = 'failed', error_message = $1, updated_at = $2, claim_until = 0 \
             WHERE id = $3 AND status = 'processing' AND claimed_by = $4",
        )
        .bind(reason)
        .bind(now_ms())
        .bind(id)
        .bind(claimer)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a track that `claimer` processed `ready` with its renditions (kbps) and measured
    /// duration; `false` when its claim was lost (another instance took it over).
    pub async fn set_media_ready(
        &self,
        id: i64,
        claimer: &str,
        renditions: &[i32],
        duration_ms: i64,
        channels: i64,
    ) -> Result<bool> {
        let list = renditions
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let done = sqlx::query(
            "UPDATE media SET status = 'ready', renditions = $1, duration_ms = $2, channels = $3, error_message = '', \
             updated_at = $4, claim_until = 0 WHERE id = $5 AND status = 'processing' AND claimed_by = $6",
        )
        .bind(list)
        .bind(duration_ms)
        .bind(channels)
        .bind(now_ms())
        .bind(id)
        .bind(claimer)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets the status of a media row as is (live streams ending, operators re-queueing); any
    /// processing claim is dropped, so a track set back to `processing` is taken up at once.
    pub async fn set_media_status(&self, id: i64, status: &str) -> Result<()> {
        sqlx::query(
            "UPDATE media SET status = $1, updated_at = $2, claimed_by = '', claim_until = 0, \
             processing_attempts = 0 WHERE id = $3",
        )
        .bind(status)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ids of the media rows in `status`, oldest first.
    pub async fn media_ids_with_status(&self, status: &str) -> Result<Vec<i64>> {
        let rows = sqlx::query("SELECT id FROM media WHERE status = $1 ORDER BY id")
            .bind(status)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// The media URL signing secret: `candidate` is stored when there is none yet; the stored
    /// one is returned either way, so every instance signs with the same secret.
    pub async fn media_url_secret(&self, candidate: &str) -> Result<String> {
        sqlx::query(
            "INSERT INTO media_url_keys (id, secret, created_at) VALUES (1, $1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(candidate)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT secret FROM media_url_keys WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }
}

fn media_from_row(r: &AnyRow) -> Result<MediaRecord> {
    let renditions: String = r.try_get("renditions")?;
    let metadata: String = r.try_get("metadata")?;
    Ok(MediaRecord {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        owner_id: r.try_get("owner_id")?,
        title: r.try_get("title")?,
        description: r.try_get("description")?,
        genre: r.try_get("genre")?,
        file_format: r.try_get("file_format")?,
        file_size: r.try_get("file_size")?,
        status: r.try_get("status")?,
        error_message: r.try_get("error_message")?,
        bytes_received: r.try_get("bytes_received")?,
        chunks_received: r.try_get("chunks_received")?,
        sha256: r.try_get("sha256")?,
        duration_ms: r.try_get("duration_ms")?,
        source_codec: r.try_get("source_codec")?,
        sample_rate: r.try_get("sample_rate")?,
        channels: r.try_get("channels")?,
        renditions: renditions
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect(),
        is_private: r.try_get::<i64, _>("is_private")? != 0,
        metadata: hex::decode(metadata).unwrap_or_default(),
        claimed_duration: r.try_get("claimed_duration")?,
        claimed_by: r.try_get("claimed_by")?,
        claim_until: r.try_get("claim_until")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}
