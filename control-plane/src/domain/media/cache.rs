//! A small LRU of renditions kept in memory for playback, shared by every listener of a track,
//! with a byte budget. Concurrent first requests for the same rendition load it once.

use std::{collections::HashMap, future::Future, sync::Arc};

use bytes::Bytes;
use tokio::sync::OnceCell;
use veza_media_core::SeekIndex;

/// One rendition ready for chunking: the whole `.opus` file and its seek index.
#[derive(Debug)]
pub struct Loaded {
    pub data: Bytes,
    pub index: Arc<SeekIndex>,
}

/// (media id, kbps)
type Key = (i64, u32);

struct Slot {
    cell: Arc<OnceCell<Arc<Loaded>>>,
    used: u64,
    /// 0 until loaded and accounted.
    size: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Slot>,
    tick: u64,
    total: u64,
}

/// The rendition cache.
pub struct RenditionCache {
    budget: u64,
    inner: std::sync::Mutex<Inner>,
}

impl RenditionCache {
    /// A cache holding at most `budget` bytes (one entry larger than that is still served).
    pub fn new(budget: u64) -> RenditionCache {
        RenditionCache {
            budget,
            inner: std::sync::Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached rendition, or `load`'s result (then cached).
    pub async fn get_or_load<E, F, Fut>(&self, key: Key, load: F) -> Result<Arc<Loaded>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Loaded, E>>,
    {
        let cell = {
            let mut inner = self.lock();
            inner.tick += 1;
            let tick = inner.tick;
            let slot = inner.map.entry(key).or_insert_with(|| Slot {
                cell: Arc::new(OnceCell::new()),
                used: tick,
                size: 0,
            });
            slot.used = tick;
            slot.cell.clone()
        };
        let loaded = cell
            .get_or_try_init(|| async { load().await.map(Arc::new) })
            .await?
            .clone();
        self.account(key, loaded.data.len() as u64);
        Ok(loaded)
    }

    /// Puts a freshly produced rendition in the cache.
    pub fn insert(&self, key: Key, loaded: Loaded) {
        let size = loaded.data.len() as u64;
        {
            let mut inner = self.lock();
            inner.tick += 1;
            let tick = inner.tick;
            if let Some(old) = inner.map.remove(&key) {
                inner.total -= old.size;
            }
            inner.map.insert(
                key,
                Slot {
                    cell: Arc::new(OnceCell::new_with(Some(Arc::new(loaded)))),
                    used: tick,
                    size: 0,
                },
            );
        }
        self.account(key, size);
    }

    /// Bytes held now.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.lock().total
    }

    fn account(&self, key: Key, size: u64) {
        let mut inner = self.lock();
        match inner.map.get_mut(&key) {
            Some(slot) if slot.size == 0 && slot.cell.initialized() => slot.size = size.max(1),
            _ => return,
        }
        inner.total += size.max(1);
        while inner.total > self.budget {
            let victim = inner
                .map
                .iter()
                .filter(|(k, s)| **k != key && s.size > 0)
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| *k);
            let Some(victim) = victim else { break };
            if let Some(old) = inner.map.remove(&victim) {
                inner.total -= old.size;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(n: usize) -> Loaded {
        Loaded {
            data: Bytes::from(vec![0u8; n]),
            index: Arc::new(SeekIndex {
                header_len: 0,
                pre_skip: 0,
                channels: 1,
                sample_rate: 48000,
                pages: vec![],
            }),
        }
    }

    #[tokio::test]
    async fn evicts_least_recently_used_within_budget() {
        let cache = RenditionCache::new(250);
        cache.insert((1, 32), loaded(100));
        cache.insert((2, 32), loaded(100));
        // Touch 1 so 2 is the oldest.
        let _ = cache
            .get_or_load::<(), _, _>((1, 32), || async { Ok(loaded(1)) })
            .await;
        cache.insert((3, 32), loaded(100));
        assert_eq!(cache.bytes(), 200);
        let mut loads = 0;
        let r = cache
            .get_or_load::<(), _, _>((2, 32), || async {
                loads += 1;
                Ok(loaded(100))
            })
            .await
            .unwrap();
        assert_eq!((loads, r.data.len()), (1, 100));
        assert!(cache.bytes() <= 250);
    }
}
