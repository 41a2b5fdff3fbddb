//! Recordings of live streams become tracks with the same id: the Ogg Opus file written while on
//! air is stored as the track's source and processed like an upload.

use std::path::PathBuf;

use object_store::{ObjectStoreExt, WriteMultipart, path::Path as ObjectPath};
use tokio::io::AsyncReadExt;

use super::{DomainError, Media, Result};

impl Media {
    /// Stores the recording at `path` as the source of track `id` (already `processing`) and
    /// queues its processing.
    pub async fn adopt_recording(&self, id: i64, path: PathBuf) -> Result<()> {
        let store = self.inner.blobs.store();
        let upload = store
            .put_multipart(&ObjectPath::from(format!("media/{id}/source")))
            .await
            .map_err(veza_storage::StorageError::from)?;
        let mut writer = WriteMultipart::new(upload);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| DomainError::Internal(e.into()))?;
        let mut buf = vec![0u8; 1 << 20];
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
        self.enqueue(id, Some(path));
        Ok(())
    }
}
