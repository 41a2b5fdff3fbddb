//! The blob store: a local directory, memory, or any `object_store` URL.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use object_store::{
    ObjectStore, ObjectStoreExt, local::LocalFileSystem, memory::InMemory, path::Path as ObjectPath,
};

use crate::error::{Result, StorageError};

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
