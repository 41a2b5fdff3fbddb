//! What one user holds in the media table, for the per-user quotas (SPEC §13).

use sqlx::Row;

use crate::{Db, error::Result};

/// A user's media, as counted by the quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaUsage {
    /// The declared sizes of the user's tracks that have neither failed nor been abandoned.
    pub track_bytes: i64,
    /// Tracks still `uploading`, not abandoned.
    pub uploading: i64,
    /// Live streams on air.
    pub live: i64,
}

impl Db {
    /// What `owner` holds now; an upload untouched since `abandoned_before` (ms) counts for
    /// nothing.
    pub async fn media_usage(&self, owner: i64, abandoned_before: i64) -> Result<MediaUsage> {
        let row = sqlx::query(
            "SELECT \
             CAST(COALESCE(SUM(CASE WHEN kind = 'track' AND status <> 'failed' \
               AND (status <> 'uploading' OR updated_at >= $2) THEN file_size ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN kind = 'track' AND status = 'uploading' \
               AND updated_at >= $2 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN kind = 'live' AND status = 'live' THEN 1 ELSE 0 END), 0) AS BIGINT) \
             FROM media WHERE owner_id = $1",
        )
        .bind(owner)
        .bind(abandoned_before)
        .fetch_one(&self.pool)
        .await?;
        Ok(MediaUsage {
            track_bytes: row.try_get(0)?,
            uploading: row.try_get(1)?,
            live: row.try_get(2)?,
        })
    }
}
