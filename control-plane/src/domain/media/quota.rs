//! Per-user media quotas (SPEC §13): storage bytes, uploads in progress and live streams on
//! air. A check and the insert after it run under the user's lock (striped), so concurrent
//! creations by one user cannot both pass the same count on this instance. (With several
//! instances the count can be passed by one creation per instance at once; a shared lock comes
//! with the scale-out work.)

use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};
use veza_storage::{MediaUsage, now_ms};

use super::{DomainError, Media, Result};

/// An upload untouched for this long no longer counts against its owner.
const ABANDONED_AFTER_MS: i64 = 24 * 3600 * 1000;
/// Locks users are spread over.
const STRIPES: usize = 64;

/// The per-user limits; 0 = none.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quotas {
    pub storage_bytes: u64,
    pub uploads: u32,
    pub live: u32,
}

/// The limits and the per-user locks.
pub(super) struct QuotaState {
    quotas: Quotas,
    stripes: Vec<Arc<Mutex<()>>>,
}

impl QuotaState {
    pub(super) fn new(quotas: Quotas) -> QuotaState {
        QuotaState {
            quotas,
            stripes: (0..STRIPES).map(|_| Arc::new(Mutex::new(()))).collect(),
        }
    }
}

/// Held until the media row is created; the next check of the same user waits for it.
pub struct QuotaGuard {
    _lock: Option<OwnedMutexGuard<()>>,
}

impl Media {
    /// Checks that `owner` may start an upload of `file_size` bytes (storage and uploads in
    /// progress); hold the guard until the track is created.
    pub(super) async fn check_quota(&self, owner: i64, file_size: i64) -> Result<QuotaGuard> {
        let q = self.inner.quota.quotas;
        if q.storage_bytes == 0 && q.uploads == 0 {
            return Ok(QuotaGuard { _lock: None });
        }
        let (guard, used) = self.usage(owner).await?;
        if q.uploads > 0 && used.uploading >= i64::from(q.uploads) {
            return Err(DomainError::ResourceExhausted(format!(
                "{} uploads in progress: at most {} per user",
                used.uploading, q.uploads
            )));
        }
        let total = used.track_bytes.max(0).saturating_add(file_size.max(0));
        if q.storage_bytes > 0 && total as u64 > q.storage_bytes {
            return Err(DomainError::ResourceExhausted(format!(
                "storage quota: {} bytes used, this upload needs {file_size}, the quota is {}",
                used.track_bytes, q.storage_bytes
            )));
        }
        Ok(guard)
    }

    /// Checks that `owner` may go on air once more; hold the guard until the stream is created.
    pub async fn check_live_quota(&self, owner: i64) -> Result<QuotaGuard> {
        let q = self.inner.quota.quotas;
        if q.live == 0 {
            return Ok(QuotaGuard { _lock: None });
        }
        let (guard, used) = self.usage(owner).await?;
        if used.live >= i64::from(q.live) {
            return Err(DomainError::ResourceExhausted(format!(
                "{} live streams on air: at most {} per user",
                used.live, q.live
            )));
        }
        Ok(guard)
    }

    async fn usage(&self, owner: i64) -> Result<(QuotaGuard, MediaUsage)> {
        let stripe = owner.rem_euclid(STRIPES as i64) as usize;
        let lock = self.inner.quota.stripes[stripe].clone().lock_owned().await;
        let used = self
            .inner
            .db
            .media_usage(owner, now_ms() - ABANDONED_AFTER_MS)
            .await?;
        Ok((QuotaGuard { _lock: Some(lock) }, used))
    }
}
