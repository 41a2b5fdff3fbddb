//! Runs N encoder lanes on as many threads as there are cores, busiest lane first.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::error::{MediaError, Result};

/// One step of work: feed a batch to a lane.
pub(crate) type Step<L> = fn(&mut L, &[f32]) -> Result<()>;

/// Lanes plus the threads that feed them batches in order, lane by lane.
pub(crate) struct LanePool<L: Send + 'static> {
    shared: Arc<Shared<L>>,
    workers: Vec<JoinHandle<()>>,
}

struct Shared<L> {
    state: Mutex<State<L>>,
    work: Condvar,
    room: Condvar,
}

struct State<L> {
    slots: Vec<Slot<L>>,
    closed: bool,
    failed: bool,
    error: Option<MediaError>,
}

struct Slot<L> {
    /// `None` while a worker is running this lane.
    lane: Option<L>,
    queue: VecDeque<Arc<Vec<f32>>>,
}

fn lock<L>(m: &Mutex<State<L>>) -> MutexGuard<'_, State<L>> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<L: Send + 'static> LanePool<L> {
    /// Starts `threads` workers over `lanes`.
    pub(crate) fn start(lanes: Vec<L>, threads: usize, step: Step<L>) -> LanePool<L> {
        let slots = lanes
            .into_iter()
            .map(|lane| Slot {
                lane: Some(lane),
                queue: VecDeque::new(),
            })
            .collect();
        let state = State {
            slots,
            closed: false,
            failed: false,
            error: None,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            work: Condvar::new(),
            room: Condvar::new(),
        });
        let workers = (0..threads.max(1))
            .map(|_| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || work(&shared, step))
            })
            .collect();
        LanePool { shared, workers }
    }

    /// Queues a batch for every lane; waits while any lane already has `cap` batches queued.
    pub(crate) fn push(&self, batch: Arc<Vec<f32>>, cap: usize) -> Result<()> {
        let mut state = lock(&self.shared.state);
        while !state.failed && state.slots.iter().any(|s| s.queue.len() >= cap) {
            state = self
                .shared
                .room
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        if state.failed {
            return Err(state
                .error
                .take()
                .unwrap_or(MediaError::Codec("encoder failed".into())));
        }
        for slot in &mut state.slots {
            slot.queue.push_back(Arc::clone(&batch));
        }
        self.shared.work.notify_all();
        Ok(())
    }

    /// Drains the queues, stops the workers and returns the lanes.
    pub(crate) fn finish(self) -> Result<Vec<L>> {
        lock(&self.shared.state).closed = true;
        self.shared.work.notify_all();
        for w in self.workers {
            w.join()
                .map_err(|_| MediaError::Codec("encoder thread panicked".into()))?;
        }
        let mut state = lock(&self.shared.state);
        if let Some(e) = state.error.take() {
            return Err(e);
        }
        std::mem::take(&mut state.slots)
            .into_iter()
            .map(|s| {
                s.lane
                    .ok_or_else(|| MediaError::Codec("encoder lane lost".into()))
            })
            .collect()
    }
}

/// Worker loop: run the free lane with the longest queue, one batch at a time.
fn work<L>(shared: &Shared<L>, step: Step<L>) {
    let mut state = lock(&shared.state);
    loop {
        if state.failed {
            break;
        }
        let pick = state
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.lane.is_some() && !s.queue.is_empty())
            .max_by_key(|(_, s)| s.queue.len())
            .map(|(i, _)| i);
        let Some(i) = pick else {
            if state.closed && state.slots.iter().all(|s| s.queue.is_empty()) {
                break;
            }
            state = shared.work.wait(state).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        let slot = &mut state.slots[i];
        let (Some(batch), Some(mut lane)) = (slot.queue.pop_front(), slot.lane.take()) else {
            continue;
        };
        shared.room.notify_all();
        drop(state);
        // A panicking lane becomes an error rather than a stuck pipeline.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(&mut lane, &batch)))
                .unwrap_or_else(|_| Err(MediaError::Codec("encoder panicked".into())));
        state = lock(&shared.state);
        state.slots[i].lane = Some(lane);
        if let Err(e) = result {
            state.failed = true;
            state.error.get_or_insert(e);
            shared.room.notify_all();
        }
        shared.work.notify_all();
    }
    shared.work.notify_all();
}
