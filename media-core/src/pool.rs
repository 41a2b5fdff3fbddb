//! Runs N encoder lanes on worker threads plus the producing thread, busiest lane first.
//!
//! The producer (the decode + resample thread) does not sleep when the queues are full: it
//! runs one queued batch of a free lane itself, then goes back to decoding. So `cores − 1`
//! workers plus the producer keep every core busy without more runnable threads than cores
//! (no time-slicing between encoder threads, fewer context switches, warmer caches).

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
    /// Signalled when a batch is queued or a lane is handed back.
    work: Condvar,
    step: Step<L>,
}

struct State<L> {
    slots: Vec<Slot<L>>,
    closed: bool,
    failed: bool,
    error: Option<MediaError>,
}

struct Slot<L> {
    /// `None` while a thread is running this lane.
    lane: Option<L>,
    queue: VecDeque<Arc<Vec<f32>>>,
}

fn lock<L>(m: &Mutex<State<L>>) -> MutexGuard<'_, State<L>> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<L> State<L> {
    /// The free lane with the longest queue, if any has work.
    fn pick(&self) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.lane.is_some() && !s.queue.is_empty())
            .max_by_key(|(_, s)| s.queue.len())
            .map(|(i, _)| i)
    }

    fn drained(&self) -> bool {
        self.slots
            .iter()
            .all(|s| s.queue.is_empty() && s.lane.is_some())
    }

    fn take_error(&mut self) -> MediaError {
        self.error
            .take()
            .unwrap_or(MediaError::Codec("encoder failed".into()))
    }
}

impl<L: Send + 'static> LanePool<L> {
    /// Starts `threads` workers over `lanes` (the caller of [`LanePool::push`] helps as well).
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
            step,
        });
        let workers = (0..threads.max(1))
            .map(|_| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || work(&shared))
            })
            .collect();
        LanePool { shared, workers }
    }

    /// Queues a batch for every lane. While any lane already has `cap` batches queued, runs
    /// queued batches on this thread (or waits when every lane with work is busy).
    pub(crate) fn push(&self, batch: Arc<Vec<f32>>, cap: usize) -> Result<()> {
        let shared = &*self.shared;
        let mut state = lock(&shared.state);
        while !state.failed && state.slots.iter().any(|s| s.queue.len() >= cap) {
            state = match state.pick() {
                Some(i) => run_step(shared, state, i),
                None => shared.work.wait(state).unwrap_or_else(|p| p.into_inner()),
            };
        }
        if state.failed {
            return Err(state.take_error());
        }
        for slot in &mut state.slots {
            slot.queue.push_back(Arc::clone(&batch));
        }
        shared.work.notify_all();
        Ok(())
    }

    /// Drains the queues (helping the workers), stops them and returns the lanes.
    pub(crate) fn finish(self) -> Result<Vec<L>> {
        let shared = &*self.shared;
        let mut state = lock(&shared.state);
        state.closed = true;
        shared.work.notify_all();
        while !state.failed && !state.drained() {
            state = match state.pick() {
                Some(i) => run_step(shared, state, i),
                None => shared.work.wait(state).unwrap_or_else(|p| p.into_inner()),
            };
        }
        drop(state);
        for w in self.workers {
            w.join()
                .map_err(|_| MediaError::Codec("encoder thread panicked".into()))?;
        }
        let mut state = lock(&shared.state);
        if state.failed {
            return Err(state.take_error());
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

/// Runs the next batch of lane `i` with the lock released; returns the lock re-taken.
fn run_step<'a, L>(
    shared: &'a Shared<L>,
    mut state: MutexGuard<'a, State<L>>,
    i: usize,
) -> MutexGuard<'a, State<L>> {
    let slot = &mut state.slots[i];
    let (Some(batch), Some(mut lane)) = (slot.queue.pop_front(), slot.lane.take()) else {
        return state;
    };
    drop(state);
    // A panicking lane becomes an error rather than a stuck pipeline.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        (shared.step)(&mut lane, &batch)
    }))
    .unwrap_or_else(|_| Err(MediaError::Codec("encoder panicked".into())));
    drop(batch);
    let mut state = lock(&shared.state);
    state.slots[i].lane = Some(lane);
    if let Err(e) = result {
        state.failed = true;
        state.error.get_or_insert(e);
    }
    // Wakes a thread waiting for this lane, for room in the queues, or for the end.
    shared.work.notify_all();
    state
}

/// Worker loop: run the free lane with the longest queue, one batch at a time.
fn work<L>(shared: &Shared<L>) {
    let mut state = lock(&shared.state);
    while !state.failed {
        state = match state.pick() {
            Some(i) => run_step(shared, state, i),
            None if state.closed && state.slots.iter().all(|s| s.queue.is_empty()) => break,
            None => shared.work.wait(state).unwrap_or_else(|p| p.into_inner()),
        };
    }
    shared.work.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the first sample of every batch it sees; fails on a negative one.
    fn record(lane: &mut Vec<f32>, batch: &[f32]) -> Result<()> {
        match batch.first() {
            Some(&v) if v < 0.0 => Err(MediaError::Codec("negative".into())),
            Some(&v) => {
                lane.push(v);
                Ok(())
            }
            None => Ok(()),
        }
    }

    #[test]
    fn every_lane_sees_every_batch_in_order() {
        let pool = LanePool::start(vec![Vec::new(); 3], 1, record);
        for i in 0..200 {
            pool.push(Arc::new(vec![i as f32; 64]), 2).expect("push");
        }
        let want: Vec<f32> = (0..200).map(|i| i as f32).collect();
        for lane in pool.finish().expect("finish") {
            assert_eq!(lane, want);
        }
    }

    #[test]
    fn a_failing_lane_is_an_error_not_a_hang() {
        let pool = LanePool::start(vec![Vec::new(); 3], 2, record);
        let mut failed = false;
        for i in 0..50 {
            let v = if i == 10 { -1.0 } else { i as f32 };
            failed |= pool.push(Arc::new(vec![v; 8]), 2).is_err();
        }
        assert!(failed || pool.finish().is_err());
    }
}
