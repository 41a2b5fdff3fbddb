//! Background processing: renditions, waveform and seek indexes by the media core, at most
//! `processing_workers` at a time, each on a blocking thread, for the tracks this instance has
//! claimed (see `claims.rs`).

use std::collections::HashMap;

use bytes::Bytes;
use veza_media_core::{Ingest, IngestOptions, MediaError};

use super::{DomainError, Media, cache::Loaded, parts::SourceFile};

impl Media {
    /// Queues media `id` (status `processing`, claimed by this instance) for processing;
    /// `local` is its source when this instance already holds it.
    pub(super) fn enqueue(&self, id: i64, local: Option<SourceFile>) {
        if !self.mark_queued(id) {
            return;
        }
        let media = self.clone();
        tokio::spawn(async move {
            let permit = media.inner.workers.clone().acquire_owned().await;
            if permit.is_err() || media.inner.shutdown.is_triggered() {
                // Left for the next start (or another instance) to take up.
                let _ = media
                    .inner
                    .db
                    .release_media_claim(id, media.instance())
                    .await;
            } else {
                media.process(id, local.as_ref()).await;
            }
            if let Some(SourceFile::File(p)) = local {
                let _ = tokio::fs::remove_file(p).await;
            }
            media.unmark_queued(id);
        });
    }

    async fn process(&self, id: i64, local: Option<&SourceFile>) {
        let db = &self.inner.db;
        // Still ours? (The claim may have expired and been taken while this waited.)
        match db
            .claim_media(id, self.instance(), self.claim_deadline())
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(media_id = id, error = %e, "processing: renewing the claim");
                return;
            }
        }
        let m = match db.media(id).await {
            Ok(Some(m)) if m.status == "processing" => m,
            Ok(_) => return,
            Err(e) => {
                tracing::error!(media_id = id, error = %e, "processing: reading the track");
                return;
            }
        };
        let started = std::time::Instant::now();
        let result = self.transcode(id, local).await;
        let (kind, title, outcome) = match result {
            Ok((renditions, duration_ms, channels)) => {
                match db
                    .set_media_ready(id, self.instance(), &renditions, duration_ms, channels)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(media_id = id, "processing: claim lost; result dropped");
                        return;
                    }
                    Err(e) => {
                        // Left `processing` and claimed: the claim expires and it is redone.
                        tracing::error!(media_id = id, error = %e, "processing: marking ready");
                        return;
                    }
                }
                tracing::info!(media_id = id, elapsed = ?started.elapsed(), ?renditions, "track ready");
                self.inner.analytics.emit(
                    "track_ready",
                    m.owner_id,
                    vec![
                        ("track_id".into(), id.to_string()),
                        ("duration_ms".into(), duration_ms.to_string()),
                        (
                            "processing_ms".into(),
                            started.elapsed().as_millis().to_string(),
                        ),
                    ],
                );
                (
                    "track_ready",
                    format!("\u{201c}{}\u{201d} is ready", m.title),
                    "ready".to_string(),
                )
            }
            Err(reason) => {
                tracing::warn!(media_id = id, %reason, "processing failed");
                match db
                    .set_media_processing_failed(id, self.instance(), &reason)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::error!(media_id = id, error = %e, "processing: marking failed");
                        return;
                    }
                }
                self.inner.analytics.emit(
                    "track_failed",
                    m.owner_id,
                    vec![
                        ("track_id".into(), id.to_string()),
                        ("reason".into(), reason.clone()),
                    ],
                );
                (
                    "track_failed",
                    format!("\u{201c}{}\u{201d} failed to process", m.title),
                    reason,
                )
            }
        };
        let data = HashMap::from([
            ("track_id".to_string(), id.to_string()),
            ("status".to_string(), outcome.clone()),
        ]);
        if let Err(e) = self
            .inner
            .notifier
            .create(&[m.owner_id], kind, &title, &outcome, data)
            .await
        {
            tracing::warn!(media_id = id, error = %e, "processing: notifying the owner");
        }
    }

    /// Runs the media core and stores its outputs; `Err` is the reason the track failed.
    async fn transcode(
        &self,
        id: i64,
        local: Option<&SourceFile>,
    ) -> std::result::Result<(Vec<i32>, i64, i64), String> {
        let usable = local.filter(|s| !matches!(s, SourceFile::File(p) if !p.exists()));
        let (source, fetched) = match usable {
            Some(s) => (s.clone(), false),
            None => self.stored_source(id).await.map_err(internal)?,
        };
        let bitrates = self.inner.opts.renditions.clone();
        let src = source.clone();
        let out = tokio::task::spawn_blocking(move || run_ingest(&src, bitrates)).await;
        if let (true, SourceFile::File(p)) = (fetched, &source) {
            let _ = tokio::fs::remove_file(p).await;
        }
        let out = match out {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(internal(DomainError::Internal(e.into()))),
        };
        let blobs = &self.inner.blobs;
        let mut kbps_list = Vec::new();
        for r in &out.renditions {
            let kbps = r.bitrate_kbps;
            blobs
                .put(&format!("media/{id}/{kbps}k.opus"), r.data.clone())
                .await
                .map_err(|e| internal(e.into()))?;
            blobs
                .put(
                    &format!("media/{id}/{kbps}k.index.json"),
                    Bytes::from(r.index.to_json()),
                )
                .await
                .map_err(|e| internal(e.into()))?;
            kbps_list.push(kbps as i32);
        }
        blobs
            .put(
                &format!("media/{id}/waveform.json"),
                Bytes::from(out.waveform.to_json()),
            )
            .await
            .map_err(|e| internal(e.into()))?;
        blobs
            .put(
                &format!("media/{id}/waveform.dat"),
                Bytes::from(out.waveform.to_dat()),
            )
            .await
            .map_err(|e| internal(e.into()))?;
        let mut duration_ms = out.probe.duration_ms as i64;
        let mut channels = i64::from(out.probe.channels.min(2));
        for r in out.renditions {
            duration_ms = r.index.duration_ms() as i64;
            channels = i64::from(r.index.channels);
            // Warm the playback cache: the first listeners need no read.
            self.inner.cache.insert(
                (id, r.bitrate_kbps),
                Loaded {
                    data: r.data,
                    index: r.index,
                },
            );
        }
        kbps_list.sort_unstable();
        Ok((kbps_list, duration_ms, channels))
    }
}

/// Probes, keeps the renditions not above the source's own bitrate (at least the lowest), and
/// runs the single-pass ingest.
fn run_ingest(source: &SourceFile, mut bitrates: Vec<u32>) -> veza_media_core::Result<Ingest> {
    let info = veza_media_core::probe(source.open()?)?;
    bitrates.sort_unstable();
    if info.bitrate_bps > 0 {
        let lowest = bitrates.first().copied();
        bitrates.retain(|k| u64::from(*k) * 1000 <= info.bitrate_bps);
        if bitrates.is_empty() {
            bitrates.extend(lowest);
        }
    }
    if bitrates.is_empty() {
        return Err(MediaError::InvalidArgument(
            "no renditions configured".into(),
        ));
    }
    let opts = IngestOptions {
        bitrates_kbps: bitrates,
        ..IngestOptions::default()
    };
    veza_media_core::ingest(source.open()?, &opts)
}

fn internal(e: DomainError) -> String {
    tracing::error!(error = %e, "processing");
    "internal error while processing".to_string()
}
