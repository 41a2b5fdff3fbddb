//! Resumable uploads: each chunk is one object (`uploads/<id>/<index>`) and a row update, so
//! what is stored survives a broken stream or a restart; closing assembles, hashes and probes.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::{ObjectStoreExt, WriteMultipart, path::Path as ObjectPath};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use veza_storage::{MediaRecord, ProbedMedia};

use super::{DomainError, Media, Result, not_found};
use crate::auth::Caller;

/// Largest `audio_data` of one upload chunk.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// One chunk of an upload as the client sent it.
#[derive(Debug, Clone)]
pub struct UploadChunk {
    pub media_id: i64,
    pub index: i64,
    pub data: Bytes,
}

impl Media {
    /// Stores an upload stream's chunks. Chunks already stored are skipped (resume), a gap is
    /// `INVALID_ARGUMENT`. When the stream ends with every byte of `file_size` stored, the file
    /// is assembled, hashed and probed, and queued for processing.
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
        let m = self
            .inner
            .db
            .media(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let is_key = matches!(who, Caller::ApiKey(_));
        if !is_key && !who.may_act_for(m.owner_id) {
            return Err(DomainError::denied(
                "only the track's owner may upload to it",
            ));
        }
        if m.kind != "track" {
            return Err(DomainError::FailedPrecondition(format!(
                "media {id} is a live stream; live input is not supported yet"
            )));
        }
        if m.status != "uploading" {
            return Err(DomainError::FailedPrecondition(format!(
                "track {id} is {}: its upload is complete",
                m.status
            )));
        }
        let (mut next, mut bytes) = (m.chunks_received, m.bytes_received);
        let mut pending = Some(first);
        loop {
            let c = match pending.take() {
                Some(c) => c,
                None => match chunks.next().await {
                    Some(c) => c?,
                    None => break,
                },
            };
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
                continue; // stored already: an idempotent re-send
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
            if bytes + len > m.file_size {
                return Err(DomainError::ResourceExhausted(format!(
                    "chunk {} brings the upload to {} bytes, more than file_size {}",
                    c.index,
                    bytes + len,
                    m.file_size
                )));
            }
            self.inner
                .blobs
                .put(&format!("uploads/{id}/{next}"), c.data)
                .await?;
            if !self.inner.db.record_media_chunk(id, next, len).await? {
                return Err(DomainError::FailedPrecondition(format!(
                    "track {id} changed under this upload (another upload stream, or it completed)"
                )));
            }
            self.inner.metrics.upload_bytes.inc_by(len as u64);
            next += 1;
            bytes += len;
        }
        if bytes < m.file_size {
            return Err(DomainError::FailedPrecondition(format!(
                "upload incomplete: {bytes} of {} bytes received; resume at chunk {next}",
                m.file_size
            )));
        }
        self.complete(m, next).await
    }

    /// Assembles the chunks into a local file (hashing them), probes it, stores it as the
    /// source and queues processing; undecodable input fails the track.
    async fn complete(&self, m: MediaRecord, chunks: i64) -> Result<MediaRecord> {
        let id = m.id;
        let tmp = self.inner.opts.tmp_dir.join(format!(
            "upload-{id}-{}",
            hex::encode(crate::auth::secrets::random_bytes::<6>())
        ));
        let sha = match self.assemble(id, chunks, &tmp).await {
            Ok(sha) => sha,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let path = tmp.clone();
        let probed = tokio::task::spawn_blocking(move || {
            std::fs::File::open(&path)
                .map_err(veza_media_core::MediaError::from)
                .and_then(veza_media_core::probe)
        })
        .await
        .map_err(|e| DomainError::Internal(e.into()))?;
        let info = match probed {
            Ok(info) => info,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                let reason = e.to_string();
                self.inner.db.set_media_failed(id, &reason, &sha).await?;
                self.delete_chunks(id, chunks).await;
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
        if let Err(e) = self.store_source(id, &tmp).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let moved = self
            .inner
            .db
            .set_media_processing(
                id,
                &ProbedMedia {
                    sha256: &sha,
                    duration_ms: info.duration_ms as i64,
                    source_codec: &info.codec,
                    sample_rate: i64::from(info.sample_rate),
                    channels: i64::from(info.channels),
                },
            )
            .await?;
        if !moved {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(DomainError::FailedPrecondition(format!(
                "track {id} was completed by another upload stream"
            )));
        }
        self.delete_chunks(id, chunks).await;
        self.inner.analytics.emit(
            "upload_completed",
            m.owner_id,
            vec![
                ("track_id".into(), id.to_string()),
                ("bytes".into(), m.file_size.to_string()),
                ("codec".into(), info.codec.clone()),
            ],
        );
        self.enqueue(id, Some(tmp));
        self.inner.db.media(id).await?.ok_or_else(|| not_found(id))
    }

    /// Streams `uploads/<id>/0..chunks` into `dest`, returning the hex SHA-256.
    async fn assemble(&self, id: i64, chunks: i64, dest: &Path) -> Result<String> {
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| DomainError::Internal(e.into()))?;
        let mut hasher = Sha256::new();
        let store = self.inner.blobs.store();
        for i in 0..chunks {
            let mut body = store
                .get(&ObjectPath::from(format!("uploads/{id}/{i}")))
                .await
                .map_err(veza_storage::StorageError::from)?
                .into_stream();
            while let Some(part) = body.next().await {
                let part = part.map_err(veza_storage::StorageError::from)?;
                hasher.update(&part);
                file.write_all(&part)
                    .await
                    .map_err(|e| DomainError::Internal(e.into()))?;
            }
        }
        file.flush()
            .await
            .map_err(|e| DomainError::Internal(e.into()))?;
        Ok(hex::encode(hasher.finalize()))
    }

    /// Copies the local file to `media/<id>/source` with a multipart write.
    async fn store_source(&self, id: i64, path: &Path) -> Result<()> {
        let store = self.inner.blobs.store();
        let upload = store
            .put_multipart(&ObjectPath::from(format!("media/{id}/source")))
            .await
            .map_err(veza_storage::StorageError::from)?;
        let mut writer = WriteMultipart::new(upload);
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| DomainError::Internal(e.into()))?;
        let mut buf = vec![0u8; 4 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| DomainError::Internal(e.into()))?;
            if n == 0 {
                break;
            }
            writer
                .wait_for_capacity(4)
                .await
                .map_err(veza_storage::StorageError::from)?;
            writer.write(&buf[..n]);
        }
        writer
            .finish()
            .await
            .map_err(veza_storage::StorageError::from)?;
        Ok(())
    }

    /// Best effort: the chunk objects are not needed once the source is stored.
    async fn delete_chunks(&self, id: i64, chunks: i64) {
        let store = self.inner.blobs.store();
        for i in 0..chunks {
            let _ = store
                .delete(&ObjectPath::from(format!("uploads/{id}/{i}")))
                .await;
        }
    }

    /// Downloads `media/<id>/source` into a new local file.
    pub(super) async fn fetch_source(&self, id: i64) -> Result<PathBuf> {
        let tmp = self.inner.opts.tmp_dir.join(format!(
            "source-{id}-{}",
            hex::encode(crate::auth::secrets::random_bytes::<6>())
        ));
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| DomainError::Internal(e.into()))?;
        let mut body = self
            .inner
            .blobs
            .store()
            .get(&ObjectPath::from(format!("media/{id}/source")))
            .await
            .map_err(veza_storage::StorageError::from)?
            .into_stream();
        while let Some(part) = body.next().await {
            let part = part.map_err(veza_storage::StorageError::from)?;
            file.write_all(&part)
                .await
                .map_err(|e| DomainError::Internal(e.into()))?;
        }
        file.flush()
            .await
            .map_err(|e| DomainError::Internal(e.into()))?;
        Ok(tmp)
    }
}
