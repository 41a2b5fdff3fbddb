//! Background processing: renditions, waveform and seek indexes by the media core, at most
//! `processing_workers` at a time, each on a blocking thread, for the tracks this instance has
//! claimed (see `claims.rs`).
//!
//! Bounded whatever the input: the media core streams the renditions and the waveform to files
//! under `<tmp_dir>/processing-<id>/` which are then uploaded in parts; audio longer than
//! `max_track_duration` is refused (from the header, else while decoding); an attempt has a time
//! budget proportional to the track's duration; and every attempt is counted in the database
//! before it starts, so after `processing_attempts` (crashes and restarts included) the track
//! fails instead of being handed out again.

use std::{
    collections::HashMap,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use veza_media_core::{Ingest, IngestOptions, IngestSink, Limits, MediaError, ProbeInfo};

use super::{DomainError, Media, cache::Loaded, parts::SourceFile};

/// Every attempt may take at least this long.
const BUDGET_FLOOR: Duration = Duration::from_secs(60);
/// Plus one second per this many seconds of audio (processing at ≥ 2× real time).
const BUDGET_SPEEDUP: u32 = 2;
/// Pause before a failed attempt is retried.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Renditions up to this size are read back into the playback cache once stored.
const WARM_MAX_BYTES: u64 = 16 << 20;
/// Prefix of the per-track working directories under `tmp_dir`.
pub(super) const WORK_DIR_PREFIX: &str = "processing-";

/// Why an attempt did not produce a ready track.
enum Failure {
    /// The input is at fault (undecodable, too long): the track fails now.
    Track(String),
    /// This attempt failed (time budget, storage): retried while attempts remain.
    Attempt(String),
    /// The server is stopping: the track is left for the next start.
    Stopped,
}

impl From<MediaError> for Failure {
    fn from(e: MediaError) -> Failure {
        match e {
            MediaError::Cancelled => Failure::Stopped,
            MediaError::Deadline | MediaError::Io(_) => Failure::Attempt(e.to_string()),
            e => Failure::Track(e.to_string()),
        }
    }
}

/// What a successful attempt produced: (rendition kbps, duration ms, channels).
type Done = (Vec<i32>, i64, i64);

/// Refuses, at upload time, a source whose header already says it is longer than `max`.
pub(super) fn check_declared_duration(
    info: ProbeInfo,
    max: Duration,
) -> veza_media_core::Result<ProbeInfo> {
    let limits = Limits {
        max_duration: Some(max),
        ..Limits::default()
    };
    limits.check_header(&info)?;
    Ok(info)
}

/// The time budget of an attempt on audio of `declared_ms` (0 = unknown: the longest allowed).
fn budget(declared_ms: i64, max: Duration) -> Duration {
    let declared = u64::try_from(declared_ms)
        .ok()
        .filter(|&ms| ms > 0)
        .map_or(max, Duration::from_millis)
        .min(max);
    BUDGET_FLOOR.saturating_add(declared / BUDGET_SPEEDUP)
}

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
        // Counted before the work starts, so an attempt that crashes the process counts too.
        let attempt = match db.start_media_attempt(id, self.instance()).await {
            Ok(Some(n)) => n,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(media_id = id, error = %e, "processing: counting the attempt");
                return;
            }
        };
        let max = i64::from(self.inner.opts.processing_attempts.max(1));
        let started = Instant::now();
        let result = if attempt > max {
            Err(Failure::Track(format!(
                "processing did not complete in {max} attempts"
            )))
        } else {
            let deadline = started + budget(m.duration_ms, self.inner.opts.max_track_duration);
            self.transcode(id, local, deadline).await
        };
        match result {
            Ok(done) => self.finish_ready(&m, done, started).await,
            Err(Failure::Stopped) => {
                let _ = db.release_media_claim(id, self.instance()).await;
            }
            Err(Failure::Attempt(reason)) if attempt < max => {
                tracing::warn!(media_id = id, attempt, %reason, "processing attempt failed; retrying");
                self.retry_later(id);
            }
            Err(Failure::Attempt(reason)) => {
                let reason = format!("{reason} (attempt {attempt} of {max})");
                self.finish_failed(&m, reason).await;
            }
            Err(Failure::Track(reason)) => self.finish_failed(&m, reason).await,
        }
    }

    /// Queues `id` again after a pause (the claim stays this instance's meanwhile).
    fn retry_later(&self, id: i64) {
        let media = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RETRY_AFTER).await;
            if !media.inner.shutdown.is_triggered() {
                media.enqueue(id, None);
            }
        });
    }

    async fn finish_ready(&self, m: &veza_storage::MediaRecord, done: Done, started: Instant) {
        let (id, (renditions, duration_ms, channels)) = (m.id, done);
        match self
            .inner
            .db
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
        let title = format!("\u{201c}{}\u{201d} is ready", m.title);
        self.notify_owner(m, "track_ready", &title, "ready".into())
            .await;
    }

    async fn finish_failed(&self, m: &veza_storage::MediaRecord, reason: String) {
        let id = m.id;
        tracing::warn!(media_id = id, %reason, "processing failed");
        match self
            .inner
            .db
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
        let title = format!("\u{201c}{}\u{201d} failed to process", m.title);
        self.notify_owner(m, "track_failed", &title, reason).await;
    }

    async fn notify_owner(
        &self,
        m: &veza_storage::MediaRecord,
        kind: &str,
        title: &str,
        outcome: String,
    ) {
        let data = HashMap::from([
            ("track_id".to_string(), m.id.to_string()),
            ("status".to_string(), outcome.clone()),
        ]);
        if let Err(e) = self
            .inner
            .notifier
            .create(&[m.owner_id], kind, title, &outcome, data)
            .await
        {
            tracing::warn!(media_id = m.id, error = %e, "processing: notifying the owner");
        }
    }

    /// Runs the media core into a working directory and stores its outputs.
    async fn transcode(
        &self,
        id: i64,
        local: Option<&SourceFile>,
        deadline: Instant,
    ) -> std::result::Result<Done, Failure> {
        let usable = local.filter(|s| !matches!(s, SourceFile::File(p) if !p.exists()));
        let (source, fetched) = match usable {
            Some(s) => (s.clone(), false),
            None => self.stored_source(id).await.map_err(attempt_failed)?,
        };
        let dir = self
            .inner
            .opts
            .tmp_dir
            .join(format!("{WORK_DIR_PREFIX}{id}"));
        let result = self.run_and_store(id, &source, &dir, deadline).await;
        if let (true, SourceFile::File(p)) = (fetched, &source) {
            let _ = tokio::fs::remove_file(p).await;
        }
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result
    }

    async fn run_and_store(
        &self,
        id: i64,
        source: &SourceFile,
        dir: &Path,
        deadline: Instant,
    ) -> std::result::Result<Done, Failure> {
        let _ = tokio::fs::remove_dir_all(dir).await;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| attempt_failed(DomainError::Internal(e.into())))?;
        let limits = Limits {
            max_duration: Some(self.inner.opts.max_track_duration),
            deadline: Some(deadline),
            cancel: Some(Arc::new(AtomicBool::new(false))),
        };
        let cancel = limits.cancel.clone();
        let (src, work, bitrates) = (
            source.clone(),
            dir.to_path_buf(),
            self.inner.opts.renditions.clone(),
        );
        let mut task =
            tokio::task::spawn_blocking(move || run_ingest(&src, &work, bitrates, limits));
        let mut shutdown = self.inner.shutdown.clone();
        let joined = tokio::select! {
            r = &mut task => r,
            () = shutdown.wait() => {
                // Stops the decode loop at its next block.
                if let Some(c) = &cancel {
                    c.store(true, Ordering::Relaxed);
                }
                (&mut task).await
            }
        };
        let out = match joined {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(attempt_failed(DomainError::Internal(e.into()))),
        };
        self.store_outputs(id, dir, out)
            .await
            .map_err(attempt_failed)
    }

    /// Uploads the working directory's files and warms the cache with the small renditions.
    async fn store_outputs(&self, id: i64, dir: &Path, out: Ingest) -> super::Result<Done> {
        let blobs = &self.inner.blobs;
        let mut kbps_list = Vec::new();
        for r in &out.renditions {
            let kbps = r.bitrate_kbps;
            let file = dir.join(rendition_file(kbps));
            blobs
                .put_file(&format!("media/{id}/{kbps}k.opus"), &file)
                .await?;
            blobs
                .put(
                    &format!("media/{id}/{kbps}k.index.json"),
                    Bytes::from(r.index.to_json()),
                )
                .await?;
            kbps_list.push(kbps as i32);
        }
        for name in ["waveform.json", "waveform.dat"] {
            blobs
                .put_file(&format!("media/{id}/{name}"), &dir.join(name))
                .await?;
        }
        let mut duration_ms = i64::try_from(out.probe.duration_ms).unwrap_or(i64::MAX);
        let mut channels = i64::from(out.probe.channels.min(2));
        for r in out.renditions {
            duration_ms = i64::try_from(r.index.duration_ms()).unwrap_or(i64::MAX);
            channels = i64::from(r.index.channels);
            if r.len > WARM_MAX_BYTES {
                continue;
            }
            // Warm the playback cache: the first listeners need no read.
            if let Ok(data) = tokio::fs::read(dir.join(rendition_file(r.bitrate_kbps))).await {
                let loaded = Loaded {
                    data: Bytes::from(data),
                    index: r.index,
                };
                self.inner.cache.insert((id, r.bitrate_kbps), loaded);
            }
        }
        kbps_list.sort_unstable();
        Ok((kbps_list, duration_ms, channels))
    }
}

fn rendition_file(kbps: u32) -> String {
    format!("{kbps}k.opus")
}

/// The media core's outputs as files of a working directory.
struct FileSink {
    dir: PathBuf,
}

impl FileSink {
    fn create(&self, name: &str) -> std::io::Result<Box<dyn Write + Send>> {
        let file = std::fs::File::create(self.dir.join(name))?;
        Ok(Box::new(BufWriter::with_capacity(256 * 1024, file)))
    }
}

impl IngestSink for FileSink {
    fn rendition(&mut self, kbps: u32) -> std::io::Result<Box<dyn Write + Send>> {
        self.create(&rendition_file(kbps))
    }

    fn waveform(&mut self) -> std::io::Result<Box<dyn Write + Send>> {
        self.create("waveform.body")
    }
}

/// Probes, keeps the renditions not above the source's own bitrate (at least the lowest), runs
/// the single-pass ingest into `dir`, and writes `waveform.dat` and `waveform.json` there.
fn run_ingest(
    source: &SourceFile,
    dir: &Path,
    mut bitrates: Vec<u32>,
    limits: Limits,
) -> veza_media_core::Result<Ingest> {
    let info = veza_media_core::probe(source.open()?)?;
    bitrates.sort_unstable();
    if info.bitrate_bps > 0 {
        let lowest = bitrates.first().copied();
        bitrates.retain(|k| u64::from(*k).saturating_mul(1000) <= info.bitrate_bps);
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
        limits,
        ..IngestOptions::default()
    };
    let mut sink = FileSink {
        dir: dir.to_path_buf(),
    };
    let out = veza_media_core::ingest_to(source.open()?, &opts, &mut sink)?;
    write_waveform_files(dir, &out.waveform)?;
    Ok(out)
}

/// `waveform.dat` (header + streamed body) and `waveform.json`, in bounded memory.
fn write_waveform_files(dir: &Path, w: &veza_media_core::Waveform) -> std::io::Result<()> {
    let body = dir.join("waveform.body");
    let mut dat = BufWriter::new(std::fs::File::create(dir.join("waveform.dat"))?);
    dat.write_all(&w.dat_header())?;
    std::io::copy(&mut std::fs::File::open(&body)?, &mut dat)?;
    dat.flush()?;
    let mut json = BufWriter::new(std::fs::File::create(dir.join("waveform.json"))?);
    w.write_json(
        &mut std::io::BufReader::new(std::fs::File::open(&body)?),
        &mut json,
    )?;
    std::fs::remove_file(body)
}

/// Logs an internal error; the attempt fails with a reason that does not leak it.
fn attempt_failed(e: DomainError) -> Failure {
    tracing::error!(error = %e, "processing");
    Failure::Attempt("internal error while processing".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_grows_with_the_duration_up_to_the_limit() {
        let max = Duration::from_secs(6 * 3600);
        assert_eq!(budget(0, max), BUDGET_FLOOR + max / 2);
        assert_eq!(budget(-5, max), BUDGET_FLOOR + max / 2);
        assert_eq!(budget(120_000, max), BUDGET_FLOOR + Duration::from_secs(60));
        assert_eq!(budget(i64::MAX, max), BUDGET_FLOOR + max / 2);
    }

    #[test]
    fn a_declared_duration_over_the_limit_is_refused() {
        let info = |ms| ProbeInfo {
            codec: "flac".into(),
            container: "flac".into(),
            sample_rate: 8000,
            channels: 1,
            frames: 0,
            duration_ms: ms,
            bitrate_bps: 0,
            byte_len: 1,
            tags: Default::default(),
        };
        let max = Duration::from_secs(60);
        assert!(check_declared_duration(info(60_000), max).is_ok());
        assert!(matches!(
            check_declared_duration(info(60_001), max),
            Err(MediaError::TooLong(_))
        ));
    }
}
