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
     channels, renditions, created_at, updated_at";

impl Db {
    /// Creates a media row.
    pub async fn create_media(&self, m: &NewMedia<'_>) -> Result<MediaRecord> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO media (kind, owner_id, title, description, genre, file_format, file_size, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id",
        )
        .bind(m.kind)
        .bind(m.owner_id)
        .bind(m.title)
        .bind(m.description)
        .bind(m.genre)
        .bind(m.file_format)
        .bind(m.file_size)
        .bind(m.status)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        let id: i64 = row.try_get(0)?;
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

    /// Records chunk `index` of `len` bytes as durable, if it is the next one of an upload still
    /// in progress. `false` when it was not (already recorded, a gap, or no longer uploading).
    pub async fn record_media_chunk(&self, id: i64, index: i64, len: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE media SET chunks_received = chunks_received + 1, bytes_received = bytes_received + $1, updated_at = $2 \
             WHERE id = $3 AND chunks_received = $4 AND status = 'uploading'",
        )
        .bind(len)
        .bind(now_ms())
        .bind(id)
        .bind(index)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a complete, probed upload from `uploading` to `processing`. `false` when it was not
    /// uploading any more (another stream closed it first).
    pub async fn set_media_processing(&self, id: i64, p: &ProbedMedia<'_>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE media SET status = 'processing', sha256 = $1, duration_ms = $2, source_codec = $3, sample_rate = $4, \
             channels = $5, updated_at = $6 WHERE id = $7 AND status = 'uploading'",
        )
        .bind(p.sha256)
        .bind(p.duration_ms)
        .bind(p.source_codec)
        .bind(p.sample_rate)
        .bind(p.channels)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
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

    /// Marks a processed track `ready` with its renditions (kbps) and measured duration.
    pub async fn set_media_ready(
        &self,
        id: i64,
        renditions: &[i32],
        duration_ms: i64,
        channels: i64,
    ) -> Result<()> {
        let list = renditions
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(",");
        sqlx::query(
            "UPDATE media SET status = 'ready', renditions = $1, duration_ms = $2, channels = $3, error_message = '', \
             updated_at = $4 WHERE id = $5 AND status = 'processing'",
        )
        .bind(list)
        .bind(duration_ms)
        .bind(channels)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sets the status of a media row as is (live streams ending, operators re-queueing).
    pub async fn set_media_status(&self, id: i64, status: &str) -> Result<()> {
        sqlx::query("UPDATE media SET status = $1, updated_at = $2 WHERE id = $3")
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
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}
