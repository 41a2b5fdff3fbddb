//! The blob store: a local directory, memory, or any `object_store` URL.

use std::{path::Path, sync::Arc};

use bytes::Bytes;
use object_store::{
    ObjectStore, ObjectStoreExt, local::LocalFileSystem, memory::InMemory, path::Path as ObjectPath,
};

use crate::error::{Result, StorageError};

/// A handle on the configured object store.
#[derive(Clone, Debug)]
pub struct BlobStore {
    inner: Arc<dyn ObjectStore>,
}

impl BlobStore {
    /// Opens `url` (`file:///…`, `memory://`, `s3://…` with the `s3` feature), or `dir` when `url` is None.
    pub fn open(url: Option<&str>, dir: &Path) -> Result<BlobStore> {
        let inner: Arc<dyn ObjectStore> = match url {
            None => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StorageError::Config(format!("{}: {e}", dir.display())))?;
                Arc::new(LocalFileSystem::new_with_prefix(dir)?)
            }
            Some("memory://") | Some("memory:///") => Arc::new(InMemory::new()),
            Some(u) => {
                let url = url::Url::parse(u)
                    .map_err(|e| StorageError::Config(format!("blob URL {u:?}: {e}")))?;
                if url.scheme() == "file" {
                    let _ = std::fs::create_dir_all(url.path());
                }
                let (store, prefix) = object_store::parse_url(&url)?;
                Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
            }
        };
        Ok(BlobStore { inner })
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

    /// The underlying store, for streaming and ranged access.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }
}
