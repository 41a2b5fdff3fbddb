//! Processing claims: exactly one instance processes a track. Moving a track to `processing`
//! claims it for the instance that received the upload; a claim is a lease (`claim_until`)
//! renewed while the instance lives, and any instance takes over an expired one with a single
//! conditional `UPDATE`, so work of a crashed instance is picked up and never done twice.

use std::{path::Path, time::Duration};

use super::{Media, Result};

/// How long a claim holds without renewal.
pub(super) const CLAIM_TTL: Duration = Duration::from_secs(60);
/// How often claims are renewed and expired ones looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// This instance's claim name, kept in `<tmp_dir>/instance-id` so a restarted instance
/// recognises (and takes up at once) the work it claimed before it stopped.
pub(super) fn instance_id(tmp_dir: &Path) -> std::io::Result<String> {
    let file = tmp_dir.join("instance-id");
    match std::fs::read_to_string(&file) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = hex::encode(crate::auth::secrets::random_bytes::<12>());
            veza_storage::private::write(&file, id.as_bytes())?;
            Ok(id)
        }
    }
}

impl Media {
    /// This instance's claim name.
    pub(super) fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// When a claim taken or renewed now expires (ms since the epoch).
    pub(super) fn claim_deadline(&self) -> i64 {
        veza_storage::now_ms() + CLAIM_TTL.as_millis() as i64
    }

    /// Claims every `processing` track nobody holds (and those this instance held before a
    /// restart) and queues the ones won.
    pub(super) async fn sweep_claims(&self) -> Result<()> {
        let db = &self.inner.db;
        for id in db.claimable_media(self.instance()).await? {
            if self.is_queued(id) {
                continue;
            }
            if db
                .claim_media(id, self.instance(), self.claim_deadline())
                .await?
            {
                tracing::info!(media_id = id, "taking up interrupted processing");
                self.enqueue(id, None);
            }
        }
        Ok(())
    }

    /// Renews this instance's claims and sweeps for expired ones until shutdown.
    pub(super) fn spawn_claim_keeper(&self) {
        let media = self.clone();
        let mut shutdown = self.inner.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = shutdown.wait() => return,
                }
                let db = &media.inner.db;
                if let Err(e) = db
                    .renew_media_claims(media.instance(), media.claim_deadline())
                    .await
                {
                    tracing::warn!(error = %e, "renewing processing claims");
                }
                if let Err(e) = media.sweep_claims().await {
                    tracing::warn!(error = %e, "sweeping processing claims");
                }
            }
        });
    }

    fn is_queued(&self, id: i64) -> bool {
        self.inner
            .queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
    }

    /// Marks `id` queued here; `false` when it already was.
    pub(super) fn mark_queued(&self, id: i64) -> bool {
        self.inner
            .queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id)
    }

    pub(super) fn unmark_queued(&self, id: i64) {
        self.inner
            .queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}
