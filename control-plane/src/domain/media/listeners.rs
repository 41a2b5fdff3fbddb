//! On-demand listeners per track on this instance: each `StreamAudio` of a track holds a
//! [`Listening`] guard for as long as its stream lives, so the count falls when it is dropped
//! (ended, cancelled or broken). Other instances' counts come from live presence.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use super::Media;

/// Listener counts by track id; tracks without listeners have no entry.
#[derive(Default, Clone)]
pub(super) struct TrackListeners {
    counts: Arc<Mutex<HashMap<i64, usize>>>,
}

impl TrackListeners {
    /// Counts one listener of `track` in until the guard is dropped.
    pub(super) fn join(&self, track: i64) -> Listening {
        let mut m = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(track).or_insert(0) += 1;
        Listening {
            counts: self.counts.clone(),
            track,
        }
    }

    fn of(&self, track: i64) -> usize {
        let m = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&track).copied().unwrap_or(0)
    }

    fn all(&self) -> Vec<(i64, usize)> {
        let m = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        m.iter().map(|(id, n)| (*id, *n)).collect()
    }
}

/// One listener of a track, counted until dropped.
pub(super) struct Listening {
    counts: Arc<Mutex<HashMap<i64, usize>>>,
    track: i64,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let mut m = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.track) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.track);
            }
        }
    }
}

impl Media {
    /// On-demand listeners of track `id` on this instance now.
    pub fn local_listeners(&self, id: i64) -> usize {
        self.inner.listeners.of(id)
    }

    /// Every track with listeners on this instance, and how many.
    pub fn local_listener_counts(&self) -> Vec<(i64, usize)> {
        self.inner.listeners.all()
    }
}

#[cfg(test)]
mod tests {
    use super::TrackListeners;

    #[test]
    fn guards_count_in_and_out() {
        let l = TrackListeners::default();
        let a = l.join(7);
        let b = l.join(7);
        let c = l.join(8);
        assert_eq!((l.of(7), l.of(8), l.of(9)), (2, 1, 0));
        drop(a);
        drop(c);
        assert_eq!((l.of(7), l.of(8)), (1, 0));
        assert_eq!(l.all(), vec![(7, 1)]);
        drop(b);
        assert!(l.all().is_empty());
    }
}
