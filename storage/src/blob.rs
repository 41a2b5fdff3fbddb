//! The blob store: a local directory, memory, or any `object_store` URL.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use object_store::{
    ObjectStore, ObjectStoreExt, WriteMultipart, local::LocalFileSystem, memory::InMemory,
    path::Path as ObjectPath,
};

use crate::error::{Result, StorageError};

/// Size of the parts [`BlobStore::put_file`] uploads (S3's minimum part size).
pub const PART_BYTES: usize = 5 << 20;

fn io_error(e: std::io::Error) -> StorageError {
    StorageError::Blob(object_store::Error::Generic {
        store: "local file",
        source: Box::new(e),
    })
}

/// A handle on the configured object store.
#[derive(Clone, Debug)]
pub struct BlobStore {
    inner: Arc<dyn ObjectStore>,
    /// The directory of a local store, whose objects are plain files under it.
    local_root: Option<PathBuf>,
}

impl BlobStore {
    /// Opens `url` (`file:///…`, `memory://`, `s3://…` with the `s3` feature), or `dir` when `url` is None.
    pub fn open(url: Option<&str>, dir: &Path) -> Result<BlobStore> {
        let mut local_root = None;
        let inner: Arc<dyn ObjectStore> = match url {
            None => {
                // The data directory's own blob folder: private, tightened if it was not.
                crate::private::dir(dir)
                    .map_err(|e| StorageError::Config(format!("{}: {e}", dir.display())))?;
                local_root = std::fs::canonicalize(dir).ok();
                Arc::new(LocalFileSystem::new_with_prefix(dir)?)
            }
            Some("memory://") | Some("memory:///") => Arc::new(InMemory::new()),
            Some(u) => {
                let url = url::Url::parse(u)
                    .map_err(|e| StorageError::Config(format!("blob URL {u:?}: {e}")))?;
                if url.scheme() == "file" {
                    // The operator's folder: created 0700 when missing, an existing one keeps
                    // the mode the operator gave it.
                    let _ = crate::private::dir_keep_existing(Path::new(url.path()));
                    local_root = url.to_file_path().ok();
                }
                let (store, prefix) = object_store::parse_url(&url)?;
                Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
            }
        };
        Ok(BlobStore { inner, local_root })
    }

    /// Stores `data` at `key`, replacing what was there.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.inner.put(&ObjectPath::from(key), data.into()).await?;
        Ok(())
    }

    /// Stores the content of the local file `file` at `key`, streamed in parts of
    /// [`PART_BYTES`] (a multipart upload when it is larger), so memory stays bounded whatever
    /// its size. Returns the bytes stored.
    pub async fn put_file(&self, key: &str, file: &Path) -> Result<u64> {
        use tokio::io::AsyncReadExt;
        let mut f = tokio::fs::File::open(file).await.map_err(io_error)?;
        let len = f.metadata().await.map_err(io_error)?.len();
        if len <= PART_BYTES as u64 {
            let mut data = Vec::with_capacity(len as usize);
            f.read_to_end(&mut data).await.map_err(io_error)?;
            self.put(key, Bytes::from(data)).await?;
            return Ok(len);
        }
        let upload = self.inner.put_multipart(&ObjectPath::from(key)).await?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match f.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(io_error(e));
                }
            };
            // At most two parts in flight: memory is bounded by a few parts.
            w.wait_for_capacity(2).await?;
            w.write(&buf[..n]);
        }
        w.finish().await?;
        Ok(len)
    }

    /// Reads the whole object at `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        Ok(self
            .inner
            .get(&ObjectPath::from(key))
            .await?
            .bytes()
            .await?)
    }

    /// The file holding the object at `key` when the store is a local directory (keys made of
    /// `[A-Za-z0-9_.-]` segments map to the same relative path); `None` for other stores.
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.local_root.as_ref().map(|root| root.join(key))
    }

    /// The underlying store, for streaming and ranged access.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }
}
