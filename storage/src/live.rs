//! Live streams in the media table: creation, the ingest heartbeat, and the one transition out of
//! `live` (to `ended`, or to a `processing` track when the broadcast was recorded).

use sqlx::Row;

use crate::{Db, MediaRecord, error::Result, now_ms};

/// The fields of a live stream to create.
#[derive(Debug, Clone)]
pub struct NewLive<'a> {
    pub owner_id: i64,
    pub title: &'a str,
    pub description: &'a str,
    /// `pcm_s16le` or `opus`.
    pub codec: &'a str,
    pub sample_rate: i64,
    pub channels: i64,
    pub record: bool,
    pub is_private: bool,
    /// Hex SHA-256 of the source password.
    pub stream_key_hash: &'a str,
}

impl Db {
    /// Creates a live stream in status `live`.
    pub async fn create_live(&self, l: &NewLive<'_>) -> Result<MediaRecord> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO media (kind, owner_id, title, description, status, source_codec, sample_rate, channels, \
             live_record, is_private, stream_key_hash, created_at, updated_at) \
             VALUES ('live', $1, $2, $3, 'live', $4, $5, $6, $7, $8, $9, $10, $10) RETURNING id",
        )
        .bind(l.owner_id)
        .bind(l.title)
        .bind(l.description)
        .bind(l.codec)
        .bind(l.sample_rate)
        .bind(l.channels)
        .bind(i64::from(l.record))
        .bind(i64::from(l.is_private))
        .bind(l.stream_key_hash)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        self.inserted_media(row.try_get(0)?).await
    }

    /// Whether live stream `id` is recorded.
    pub async fn live_record(&self, id: i64) -> Result<bool> {
        let row = sqlx::query("SELECT live_record FROM media WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>(0)? != 0,
            None => false,
        })
    }

    /// The hex SHA-256 of live stream `id`'s source password ('' when it has none or is gone).
    pub async fn stream_key_hash(&self, id: i64) -> Result<String> {
        let row = sqlx::query("SELECT stream_key_hash FROM media WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get(0)?,
            None => String::new(),
        })
    }

    /// Refreshes the ingest heartbeat of a stream still `live`.
    pub async fn touch_live(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE media SET updated_at = $1 WHERE id = $2 AND status = 'live'")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends live stream `id`: `ended`, or a `processing` track of `duration_ms` when `recorded`.
    /// `false` when it was not live any more (another instance or call ended it first).
    pub async fn end_live(&self, id: i64, recorded: bool, duration_ms: i64) -> Result<bool> {
        let (kind, status) = if recorded {
            ("track", "processing")
        } else {
            ("live", "ended")
        };
        // A recording is held for a minute while its instance stores it and takes the claim;
        // if that instance dies meanwhile, the claim expires and another one processes it.
        let now = now_ms();
        let (claimer, until) = if recorded {
            ("live-recording", now + 60_000)
        } else {
            ("", 0)
        };
        let done = sqlx::query(
            "UPDATE media SET kind = $1, status = $2, duration_ms = $3, updated_at = $4, claimed_by = $5, \
             claim_until = $6 WHERE id = $7 AND status = 'live'",
        )
        .bind(kind)
        .bind(status)
        .bind(duration_ms)
        .bind(now)
        .bind(claimer)
        .bind(until)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Live streams whose heartbeat is older than `before_ms` (their producer and instance are
    /// gone).
    pub async fn stale_live(&self, before_ms: i64) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT id FROM media WHERE status = 'live' AND kind = 'live' AND updated_at < $1 ORDER BY id",
        )
        .bind(before_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}

impl Db {
    /// Records a live stream's stored recording (`parts` objects, `bytes` in all) on its
    /// `processing` row and claims it for `claimer` until `claim_until`.
    pub async fn adopt_recording(
        &self,
        id: i64,
        parts: i64,
        bytes: i64,
        claimer: &str,
        claim_until: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE media SET chunks_received = $1, bytes_received = $2, file_size = $2, file_format = 'opus', \
             claimed_by = $3, claim_until = $4, updated_at = $5 WHERE id = $6 AND status = 'processing'",
        )
        .bind(parts)
        .bind(bytes)
        .bind(claimer)
        .bind(claim_until)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
