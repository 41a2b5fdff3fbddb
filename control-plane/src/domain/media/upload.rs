//! Resumable uploads: each chunk is one object (`uploads/<id>/<index>`, kept as the stored
//! source) and is hashed as it arrives (and, with a remote blob store, appended to a local
//! working copy); the durable chunk count is recorded in batches. Closing probes the stored
//! chunks (or the working copy): no extra pass over the bytes.

use std::{io::Write, path::Path, pin::Pin, time::Duration};

use bytes::Bytes;
use futures::{Stream, StreamExt, stream::FuturesOrdered};
use object_store::{ObjectStoreExt, path::Path as ObjectPath};
use sha2::{Digest, Sha256};
use tokio::{io::AsyncWriteExt, sync::mpsc, task::JoinHandle};
use veza_storage::{BlobStore, MediaRecord, ProbedMedia};

use super::{DomainError, Media, Result, not_found, parts::SourceFile};
use crate::caller::Caller;

/// Largest `audio_data` of one upload chunk.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// Chunk objects being written at once by one upload stream.
const PUTS_IN_FLIGHT: usize = 4;
/// Progress is recorded at least every this many durable chunks…
const FLUSH_CHUNKS: i64 = 64;
/// …and at the latest this long after a chunk became durable.
const FLUSH_AFTER: Duration = Duration::from_millis(100);

/// One chunk of an upload as the client sent it.
#[derive(Debug, Clone)]
pub struct UploadChunk {
    pub media_id: i64,
    pub index: i64,
    pub data: Bytes,
}

type PutFuture = Pin<Box<dyn Future<Output = Result<i64>> + Send>>;

/// The durable position of one upload stream and the last one recorded in the database.
struct Progress {
    id: i64,
    generation: i64,
    chunks: i64,
    bytes: i64,
    recorded: i64,
}

impl Media {
    /// Stores an upload stream's chunks. Chunks already stored are skipped (resume), a gap is
    /// `INVALID_ARGUMENT`. When the stream ends with every byte of `file_size` stored, the file
    /// is probed and queued for processing.
    pub async fn upload<S>(&self, who: &Caller, mut chunks: S) -> Result<MediaRecord>
    where
        S: Stream<Item = Result<UploadChunk>> + Unpin + Send,
    {
        let first = match chunks.next().await {
            Some(c) => c?,
            None => {
                return Err(DomainError::invalid(
                    "chunks",
                    "the upload stream has no chunks",
                ));
            }
        };
        let id = first.media_id;
        let m = self.record(id).await?;
        // Scope: the owner, an admin, or an API key with stream:publish; on every chunk too, as
        // each must carry this track's id (`check_chunk`).
        if !(who.may_act_for(m.owner_id) || who.has_scope("stream:publish")) {
            if m.is_private {
                return Err(not_found(id));
            }
            return Err(DomainError::denied(
                "only the track's owner (or an API key with stream:publish) may upload to it",
            ));
        }
        if m.kind != "track" {
            return Err(DomainError::FailedPrecondition(format!(
                "media {id} is a live stream, not a track to upload"
            )));
        }
        let Some((generation, chunks_stored, bytes_stored)) =
            self.inner.db.begin_media_upload(id).await?
        else {
            let status = self.inner.db.media(id).await?.map(|m| m.status);
            return Err(DomainError::FailedPrecondition(format!(
                "track {id} is {}: its upload is complete",
                status.as_deref().unwrap_or("gone")
            )));
        };
        let tmp = self.inner.opts.tmp_dir.join(format!(
            "upload-{id}-{}",
            hex::encode(crate::auth::secrets::random_bytes::<6>())
        ));
        let mut progress = Progress {
            id,
            generation,
            chunks: chunks_stored,
            bytes: bytes_stored,
            recorded: chunks_stored,
        };
        let started = std::time::Instant::now();
        let received = self
            .receive(&m, first, &mut chunks, &mut progress, &tmp)
            .await;
        let (elapsed, stored) = (started.elapsed(), progress.chunks);
        tracing::debug!(media_id = id, ?elapsed, stored, "upload stream ended");
        let sha = match received {
            Ok(sha) => sha,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        match self
            .complete(m, generation, progress.chunks, &tmp, &sha)
            .await
        {
            Ok(m) => Ok(m),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// Receives chunks until the client closes the stream, with every byte of `file_size`
    /// stored; returns the hex SHA-256 of the file, whose bytes are then in `tmp`. Progress is
    /// recorded on every exit, so a broken stream resumes from everything that was stored.
    async fn receive<S>(
        &self,
        m: &MediaRecord,
        first: UploadChunk,
        chunks: &mut S,
        progress: &mut Progress,
        tmp: &Path,
    ) -> Result<String>
    where
        S: Stream<Item = Result<UploadChunk>> + Unpin + Send,
    {
        // With a local blob store the chunk files are the source; no working copy.
        let copy = self.inner.blobs.local_path("").is_none().then_some(tmp);
        let writer = LocalCopy::create(copy).await?;
        // The working copy and the hash start with what earlier streams stored.
        for i in 0..progress.chunks {
            let data = self.inner.blobs.get(&chunk_key(m.id, i)).await?;
            writer.append(data).await?;
        }
        let result = self
            .receive_chunks(m, first, chunks, progress, &writer)
            .await;
        let recorded = self.record_progress(progress).await;
        let sha = writer.finish().await;
        result?;
        recorded?;
        sha
    }

    async fn receive_chunks<S>(
        &self,
        m: &MediaRecord,
        first: UploadChunk,
        chunks: &mut S,
        progress: &mut Progress,
        writer: &LocalCopy,
    ) -> Result<()>
    where
        S: Stream<Item = Result<UploadChunk>> + Unpin + Send,
    {
        let id = m.id;
        let (mut next, mut bytes) = (progress.chunks, progress.bytes);
        let mut puts: FuturesOrdered<PutFuture> = FuturesOrdered::new();
        let mut pending = Some(first);
        let mut ended = false;
        let mut broken = None;
        let flush_at = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(flush_at);
        let mut flush_armed = false;
        loop {
            if ended && puts.is_empty() {
                break;
            }
            let c = if let Some(c) = pending.take() {
                c
            } else {
                tokio::select! {
                    biased;
                    Some(done) = puts.next(), if !puts.is_empty() => {
                        progress.chunks += 1;
                        progress.bytes += done?;
                        if progress.chunks - progress.recorded >= FLUSH_CHUNKS {
                            self.record_progress(progress).await?;
                            flush_armed = false;
                        } else if !flush_armed {
                            flush_at.as_mut().reset(tokio::time::Instant::now() + FLUSH_AFTER);
                            flush_armed = true;
                        }
                        continue;
                    }
                    () = &mut flush_at, if flush_armed => {
                        self.record_progress(progress).await?;
                        flush_armed = false;
                        continue;
                    }
                    c = chunks.next(), if !ended && puts.len() < PUTS_IN_FLIGHT => match c {
                        Some(Ok(c)) => c,
                        Some(Err(e)) => {
                            // Broken stream: what is being stored still counts.
                            broken = Some(e);
                            ended = true;
                            continue;
                        }
                        None => {
                            ended = true;
                            continue;
                        }
                    },
                }
            };
            match check_chunk(&c, id, next, bytes, m.file_size) {
                Ok(true) => {}
                Ok(false) => continue, // stored already: an idempotent re-send
                Err(e) => {
                    // Refused: what is being stored still counts.
                    broken = Some(e);
                    ended = true;
                    continue;
                }
            }
            let len = c.data.len() as i64;
            puts.push_back(put_chunk(
                self.inner.blobs.clone(),
                chunk_key(id, next),
                c.data.clone(),
            ));
            writer.append(c.data).await?;
            self.inner.metrics.upload_bytes.inc_by(len as u64);
            next += 1;
            bytes += len;
        }
        if let Some(e) = broken {
            return Err(e);
        }
        if progress.bytes < m.file_size {
            return Err(DomainError::FailedPrecondition(format!(
                "upload incomplete: {} of {} bytes received; resume at chunk {}",
                progress.bytes, m.file_size, progress.chunks
            )));
        }
        Ok(())
    }

    /// Records the durable position, if it moved; an error when a newer stream took over.
    async fn record_progress(&self, p: &mut Progress) -> Result<()> {
        if p.chunks == p.recorded {
            return Ok(());
        }
        if !self
            .inner
            .db
            .record_media_progress(p.id, p.generation, p.chunks, p.bytes)
            .await?
        {
            return Err(DomainError::FailedPrecondition(format!(
                "track {} changed under this upload (a newer upload stream, or it completed)",
                p.id
            )));
        }
        p.recorded = p.chunks;
        Ok(())
    }

    /// Probes the complete file, moves the track to `processing` (claimed by this instance) and
    /// queues it; undecodable input fails the track.
    async fn complete(
        &self,
        m: MediaRecord,
        generation: i64,
        chunks: i64,
        tmp: &Path,
        sha: &str,
    ) -> Result<MediaRecord> {
        let id = m.id;
        let source = self
            .source_of(id, chunks)
            .unwrap_or(SourceFile::File(tmp.to_path_buf()));
        let (src, max) = (source.clone(), self.inner.opts.max_track_duration);
        let probed = tokio::task::spawn_blocking(move || {
            src.open()
                .map_err(veza_media_core::MediaError::from)
                .and_then(veza_media_core::probe)
                .and_then(|info| super::process::check_declared_duration(info, max))
        })
        .await
        .map_err(|e| DomainError::Internal(e.into()))?;
        let info = match probed {
            Ok(info) => info,
            Err(e) => {
                let reason = e.to_string();
                self.inner.db.set_media_failed(id, &reason, sha).await?;
                self.delete_chunks(id, chunks);
                self.inner.analytics.emit(
                    "upload_failed",
                    m.owner_id,
                    vec![
                        ("track_id".into(), id.to_string()),
                        ("reason".into(), reason.clone()),
                    ],
                );
                return Err(DomainError::invalid("audio_data", reason));
            }
        };
        let moved = self
            .inner
            .db
            .set_media_processing(
                id,
                generation,
                &ProbedMedia {
                    sha256: sha,
                    duration_ms: info.duration_ms as i64,
                    source_codec: &info.codec,
                    sample_rate: i64::from(info.sample_rate),
                    channels: i64::from(info.channels),
                },
                self.instance(),
                self.claim_deadline(),
            )
            .await?;
        if !moved {
            return Err(DomainError::FailedPrecondition(format!(
                "track {id} was completed by another upload stream"
            )));
        }
        self.inner.analytics.emit(
            "upload_completed",
            m.owner_id,
            vec![
                ("track_id".into(), id.to_string()),
                ("bytes".into(), m.file_size.to_string()),
                ("codec".into(), info.codec.clone()),
            ],
        );
        self.enqueue(id, Some(source));
        self.record(id).await
    }

    /// Best effort, in the background, for a failed upload: its chunk objects are not needed.
    fn delete_chunks(&self, id: i64, chunks: i64) {
        let store = self.inner.blobs.store().clone();
        tokio::spawn(async move {
            for i in 0..chunks {
                let _ = store.delete(&ObjectPath::from(chunk_key(id, i))).await;
            }
        });
    }

    /// The chunk files of media `id` when the blob store is local.
    fn source_of(&self, id: i64, chunks: i64) -> Option<SourceFile> {
        let blobs = &self.inner.blobs;
        (0..chunks)
            .map(|i| blobs.local_path(&chunk_key(id, i)))
            .collect::<Option<Vec<_>>>()
            .map(SourceFile::Parts)
    }

    /// The stored source of media `id`: its chunk files with a local blob store, else the
    /// chunks fetched into a new local file (`true`: a file the caller deletes).
    pub(super) async fn stored_source(&self, id: i64) -> Result<(SourceFile, bool)> {
        let m = self.record(id).await?;
        if let Some(parts) = self.source_of(id, m.chunks_received) {
            return Ok((parts, false));
        }
        let tmp = self.inner.opts.tmp_dir.join(format!(
            "source-{id}-{}",
            hex::encode(crate::auth::secrets::random_bytes::<6>())
        ));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| DomainError::Internal(e.into()))?;
            for i in 0..m.chunks_received {
                let data = self.inner.blobs.get(&chunk_key(id, i)).await?;
                file.write_all(&data)
                    .await
                    .map_err(|e| DomainError::Internal(e.into()))?;
            }
            file.flush()
                .await
                .map_err(|e| DomainError::Internal(e.into()))
        }
        .await;
        match result {
            Ok(()) => Ok((SourceFile::File(tmp), true)),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }
}

/// Whether chunk `c` is the next one (`true`) or one stored already (`false`); an error for a
/// gap, a chunk of another media, an empty or oversized chunk, or one past `file_size`.
fn check_chunk(c: &UploadChunk, id: i64, next: i64, bytes: i64, file_size: i64) -> Result<bool> {
    if c.media_id != id {
        return Err(DomainError::invalid(
            "stream_id",
            format!("every chunk of an upload carries stream_id {id}"),
        ));
    }
    if c.data.len() > MAX_CHUNK_BYTES {
        return Err(DomainError::ResourceExhausted(format!(
            "chunk {} has {} bytes; the limit is {MAX_CHUNK_BYTES}",
            c.index,
            c.data.len()
        )));
    }
    if c.index < 0 {
        return Err(DomainError::invalid("chunk_index", "must be ≥ 0"));
    }
    if c.index < next {
        return Ok(false);
    }
    if c.index > next {
        return Err(DomainError::invalid(
            "chunk_index",
            format!("gap: got chunk {} but the next expected is {next}", c.index),
        ));
    }
    if c.data.is_empty() {
        return Err(DomainError::invalid("audio_data", "empty chunk"));
    }
    let len = c.data.len() as i64;
    if bytes + len > file_size {
        return Err(DomainError::ResourceExhausted(format!(
            "chunk {} brings the upload to {} bytes, more than file_size {file_size}",
            c.index,
            bytes + len,
        )));
    }
    Ok(true)
}

/// The object holding chunk `index` of media `id`.
pub(super) fn chunk_key(id: i64, index: i64) -> String {
    format!("uploads/{id}/{index}")
}

fn put_chunk(blobs: BlobStore, key: String, data: Bytes) -> PutFuture {
    Box::pin(async move {
        let len = data.len() as i64;
        blobs.put(&key, data).await?;
        Ok(len)
    })
}

/// The running SHA-256 of an upload (and its local working copy, when there is one): a
/// blocking thread takes the chunks in order, off the async runtime.
struct LocalCopy {
    tx: mpsc::Sender<Bytes>,
    task: JoinHandle<std::io::Result<String>>,
}

impl LocalCopy {
    async fn create(path: Option<&Path>) -> Result<LocalCopy> {
        let mut file = match path {
            Some(p) => Some(
                tokio::fs::File::create(p)
                    .await
                    .map_err(|e| DomainError::Internal(e.into()))?
                    .into_std()
                    .await,
            ),
            None => None,
        };
        let (tx, mut rx) = mpsc::channel::<Bytes>(8);
        let task = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            while let Some(data) = rx.blocking_recv() {
                hasher.update(&data);
                if let Some(f) = file.as_mut() {
                    f.write_all(&data)?;
                }
            }
            if let Some(f) = file.as_mut() {
                f.flush()?;
            }
            Ok(hex::encode(hasher.finalize()))
        });
        Ok(LocalCopy { tx, task })
    }

    async fn append(&self, data: Bytes) -> Result<()> {
        self.tx
            .send(data)
            .await
            .map_err(|_| DomainError::Internal(anyhow::anyhow!("the upload's local copy stopped")))
    }

    /// Waits for every appended chunk; the hex SHA-256 of all of them.
    async fn finish(self) -> Result<String> {
        drop(self.tx);
        self.task
            .await
            .map_err(|e| DomainError::Internal(e.into()))?
            .map_err(|e| DomainError::Internal(e.into()))
    }
}
