//! Recordings of live streams become tracks with the same id: the Ogg Opus file written while on
//! air is stored like a finished upload (parts `uploads/<id>/<n>`), claimed by this instance and
//! processed like an upload.

use std::path::PathBuf;

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::{DomainError, Media, Result, parts::SourceFile, upload::chunk_key};

/// Bytes per stored part of a recording.
const PART_BYTES: usize = 1 << 20;

impl Media {
    /// Stores the recording at `path` as the source of track `id` (already `processing`),
    /// claims it and queues its processing.
    pub async fn adopt_recording(&self, id: i64, path: PathBuf) -> Result<()> {
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| DomainError::Internal(e.into()))?;
        let (mut parts, mut bytes) = (0i64, 0i64);
        loop {
            let mut buf = vec![0u8; PART_BYTES];
            let mut filled = 0;
            while filled < PART_BYTES {
                let n = file
                    .read(&mut buf[filled..])
                    .await
                    .map_err(|e| DomainError::Internal(e.into()))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            buf.truncate(filled);
            self.inner
                .blobs
                .put(&chunk_key(id, parts), Bytes::from(buf))
                .await?;
            parts += 1;
            bytes += filled as i64;
        }
        let claimed = self
            .inner
            .db
            .adopt_recording(id, parts, bytes, self.instance(), self.claim_deadline())
            .await?;
        if claimed {
            self.enqueue(id, Some(SourceFile::File(path)));
        }
        Ok(())
    }
}
