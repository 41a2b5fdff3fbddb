//! A cache of memberships known to hold, so `SendMessage` does not query the database on every
//! call. Only positive answers are kept, each for a short time; a leave (local, or from another
//! instance through the bus) forgets the pair at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;

use super::Membership;
use crate::bus::{Bus, BusEvent};

/// How long a membership is trusted without asking the database again.
const TTL: Duration = Duration::from_secs(30);
/// Most pairs kept; beyond, the cache starts over.
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
struct State {
    known: HashMap<(i64, i64), Instant>,
    /// Bumped by every forget, so an answer read before a leave is not cached after it.
    epoch: u64,
}

/// Known (room, user) memberships. Cheap to clone.
#[derive(Clone, Default)]
pub struct Members {
    state: Arc<Mutex<State>>,
}

impl Members {
    /// A cache that follows the leaves published on `bus` by any instance.
    pub fn new(bus: Bus) -> Members {
        let members = Members::default();
        tokio::spawn(follow_leaves(bus, members.clone()));
        members
    }

    /// Whether `user_id` was seen to belong to `room_id` recently (and has not left since).
    pub fn is_known(&self, room_id: i64, user_id: i64) -> bool {
        lock(&self.state)
            .known
            .get(&(room_id, user_id))
            .is_some_and(|at| at.elapsed() < TTL)
    }

    /// The epoch to pass to [`Members::remember`]; read it before asking the database.
    pub fn epoch(&self) -> u64 {
        lock(&self.state).epoch
    }

    /// Records a membership the database confirmed, unless a leave happened since `epoch`.
    pub fn remember(&self, room_id: i64, user_id: i64, epoch: u64) {
        let mut s = lock(&self.state);
        if s.epoch != epoch {
            return;
        }
        if s.known.len() >= MAX_ENTRIES {
            s.known.clear();
        }
        s.known.insert((room_id, user_id), Instant::now());
    }

    /// Forgets a membership (the user left).
    pub fn forget(&self, room_id: i64, user_id: i64) {
        let mut s = lock(&self.state);
        s.epoch += 1;
        s.known.remove(&(room_id, user_id));
    }
}

/// Forgets the pairs of every leave published on the bus (`veza.chat.user.{id}.membership`).
async fn follow_leaves(bus: Bus, members: Members) {
    let mut sub = match bus.subscribe("veza.chat.user.*.membership").await {
        Ok(sub) => sub,
        Err(e) => return tracing::error!(error = %e, "following chat leaves"),
    };
    while let Some(event) = sub.next().await {
        match event {
            BusEvent::Message(m) => {
                let user = m.subject.split('.').nth(3).and_then(|u| u.parse().ok());
                let change = serde_json::from_slice::<Membership>(&m.payload).ok();
                match (user, change) {
                    (Some(user), Some(change)) if !change.joined => {
                        members.forget(change.room_id, user)
                    }
                    _ => {}
                }
            }
            // Leaves may have been lost: trust nothing cached.
            BusEvent::Lagged(_) => {
                let mut s = lock(&members.state);
                s.epoch += 1;
                s.known.clear();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::Members;

    #[test]
    fn a_leave_during_a_lookup_is_not_overwritten() {
        let m = Members::default();
        let epoch = m.epoch();
        m.forget(1, 2);
        m.remember(1, 2, epoch);
        assert!(!m.is_known(1, 2));
        m.remember(1, 2, m.epoch());
        assert!(m.is_known(1, 2));
        m.forget(1, 2);
        assert!(!m.is_known(1, 2));
    }
}
