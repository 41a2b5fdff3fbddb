//! Fan-out straight to listeners' connections: per live stream and instance, one task takes each
//! page off the channel, and the writer threads (`--live-writers`, default one, as a loop over
//! sockets is kernel work that a second thread mostly makes contend) hand it to every attached
//! [`Sink`], so a page costs one write per listener and no task wake-up per listener. A stream
//! with only a few listeners is written by its task itself, which saves a thread wake-up a page.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    task::{Context, Poll},
};

use futures::task::AtomicWaker;
use tokio::sync::broadcast::error::RecvError;

use super::{
    channel::{Channel, Event, Page},
    guard::ListenerGuard,
    ingest::now_us,
};
use crate::{hint::prefetch, metrics::Metrics};

/// A stream with at most this many listeners here (and no job left with the writer threads) is
/// written by its fan-out task: a few non-blocking sends cost less than waking a thread.
const INLINE: usize = 8;

/// How a page handed to a sink fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued and written as far as the connection allows.
    Queued,
    /// Queued after dropping older unsent pages: the listener skipped ahead.
    Skipped,
    /// The listener is gone.
    Gone,
}

/// Where one listener's pages go; it never holds more than a bounded number of pages.
pub trait Sink: Send + Sync + 'static {
    /// Queues `page` and writes what can go now; `keep` pages (headers) are never skipped.
    fn push(&self, page: &Arc<Page>, keep: bool) -> Pushed;

    /// Hints that `push` comes soon (the writers walk thousands of sinks: see
    /// [`crate::hint::prefetch`]).
    fn prefetch(&self) {}
}

/// A listener fed by the writer threads; it is counted in until dropped.
pub struct Attached {
    state: Shared,
    guard: ListenerGuard,
}

impl Attached {
    /// Ready once the broadcast has ended for this listener (or its sink went away).
    pub fn poll_ended(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.state.waker.register(cx.waker());
        if self.state.ended.load(Ordering::Acquire) || self.state.gone.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.state.gone.store(true, Ordering::Release);
        self.guard.pages = self.state.pages.load(Ordering::Relaxed);
    }
}

/// A listener as the writer threads hold it.
type Shared = Arc<Listener<dyn Sink>>;

struct Listener<S: ?Sized> {
    /// Dispatches up to this one were before it joined (its burst covered them).
    joined: u64,
    ended: AtomicBool,
    gone: AtomicBool,
    waker: AtomicWaker,
    pages: AtomicU64,
    sink: S,
}

/// Every stream's fan-out on this instance, and the writer threads.
pub(super) struct Fanouts {
    map: Mutex<HashMap<i64, Arc<Fanout>>>,
    writers: OnceLock<Vec<mpsc::Sender<Job>>>,
    threads: usize,
    metrics: Arc<Metrics>,
}

struct Fanout {
    channel: Arc<Channel>,
    reg: Mutex<Reg>,
    shards: Vec<Mutex<Vec<Shared>>>,
    /// Jobs handed to the writer threads and not done yet.
    pending: AtomicUsize,
}

struct Reg {
    /// Dispatches so far.
    seq: u64,
    /// Index of the last page dispatched.
    last: u64,
    next_shard: usize,
    ended: bool,
    /// The headers page was registered with or dispatched to the listeners.
    had_headers: bool,
}

enum What {
    Page(Arc<Page>),
    End,
}

struct Job {
    fanout: Arc<Fanout>,
    shard: usize,
    seq: u64,
    what: Arc<What>,
}

impl Fanouts {
    /// Fan-outs written by `threads` writer threads, started with the first listener.
    pub(super) fn new(metrics: Arc<Metrics>, threads: usize) -> Fanouts {
        Fanouts {
            map: Mutex::new(HashMap::new()),
            writers: OnceLock::new(),
            threads: threads.max(1),
            metrics,
        }
    }

    fn writers(&self) -> &[mpsc::Sender<Job>] {
        self.writers.get_or_init(|| {
            (0..self.threads)
                .filter_map(|i| {
                    let (tx, rx) = mpsc::channel();
                    let metrics = self.metrics.clone();
                    std::thread::Builder::new()
                        .name(format!("veza-live-{i}"))
                        .spawn(move || write_loop(rx, metrics))
                        .ok()
                        .map(|_| tx)
                })
                .collect()
        })
    }

    /// Feeds `sink` from `channel`'s live edge: burst first, then every page; `None` once the
    /// broadcast has ended.
    pub(super) fn attach(
        self: &Arc<Self>,
        channel: &Arc<Channel>,
        sink: impl Sink,
        guard: ListenerGuard,
    ) -> Option<Attached> {
        let shards = self.writers().len();
        if shards == 0 {
            return None;
        }
        let fanout = {
            let mut map = lock(&self.map);
            match map.get(&channel.id) {
                Some(f) if Arc::ptr_eq(&f.channel, channel) && !lock(&f.reg).ended => f.clone(),
                _ => {
                    let joined = channel.join()?;
                    let f = Arc::new(Fanout {
                        channel: channel.clone(),
                        reg: Mutex::new(Reg {
                            seq: 0,
                            last: joined.first.last().map_or(0, |p| p.index),
                            next_shard: 0,
                            ended: false,
                            had_headers: joined.first.iter().any(|p| p.index == 0),
                        }),
                        shards: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
                        pending: AtomicUsize::new(0),
                    });
                    map.insert(channel.id, f.clone());
                    let this = self.clone();
                    let run = f.clone();
                    tokio::spawn(async move { this.run(run, joined.rx).await });
                    f
                }
            }
        };
        let state = fanout.register(sink)?;
        self.metrics.live_direct.inc();
        Some(Attached { state, guard })
    }

    /// Takes each page off the broadcast and hands it to the writer threads.
    async fn run(self: Arc<Self>, f: Arc<Fanout>, mut rx: tokio::sync::broadcast::Receiver<Event>) {
        loop {
            let what = match rx.recv().await {
                Ok(Event::Page(p)) => What::Page(p),
                Ok(Event::End) | Err(RecvError::Closed) => What::End,
                Err(RecvError::Lagged(_)) => {
                    rx = rx.resubscribe();
                    self.metrics.live_skips.inc();
                    // Headers that were in the skipped part still reach who has none.
                    match f.channel.headers() {
                        Some(h) if !lock(&f.reg).had_headers => What::Page(h),
                        _ => continue,
                    }
                }
            };
            let end = matches!(what, What::End);
            f.dispatch(what, self.writers(), &self.metrics);
            if end {
                break;
            }
        }
        let mut map = lock(&self.map);
        if map.get(&f.channel.id).is_some_and(|m| Arc::ptr_eq(m, &f)) {
            map.remove(&f.channel.id);
        }
    }
}

impl Fanout {
    fn register(&self, sink: impl Sink) -> Option<Shared> {
        let mut reg = lock(&self.reg);
        if reg.ended {
            return None;
        }
        let burst = self.channel.join()?.first;
        for p in burst.iter().filter(|p| p.index == 0 || p.index <= reg.last) {
            sink.push(p, p.index == 0);
        }
        let state: Shared = Arc::new(Listener {
            joined: reg.seq,
            ended: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            pages: AtomicU64::new(0),
            sink,
        });
        let shard = reg.next_shard % self.shards.len();
        reg.next_shard += 1;
        lock(&self.shards[shard]).push(state.clone());
        Some(state)
    }

    fn dispatch(self: &Arc<Self>, what: What, writers: &[mpsc::Sender<Job>], metrics: &Metrics) {
        let mut reg = lock(&self.reg);
        reg.seq += 1;
        match &what {
            What::Page(p) if p.index > 0 => reg.last = p.index,
            What::End => reg.ended = true,
            What::Page(_) => reg.had_headers = true,
        }
        let seq = reg.seq;
        drop(reg);
        let what = Arc::new(what);
        let jobs = (0..self.shards.len().min(writers.len())).map(|shard| Job {
            fanout: self.clone(),
            shard,
            seq,
            what: what.clone(),
        });
        // In order: with no job left with the writers, nothing this one could overtake.
        if self.pending.load(Ordering::Acquire) == 0 && self.few_listeners() {
            jobs.for_each(|job| write_job(&job, metrics));
            return;
        }
        for (job, w) in jobs.zip(writers) {
            self.pending.fetch_add(1, Ordering::AcqRel);
            if w.send(job).is_err() {
                self.pending.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Whether at most [`INLINE`] listeners are attached.
    fn few_listeners(&self) -> bool {
        let mut n = 0;
        for shard in &self.shards {
            n += lock(shard).len();
            if n > INLINE {
                return false;
            }
        }
        true
    }
}

/// One writer thread: each job is one page (or the end) for every listener of one shard.
fn write_loop(rx: mpsc::Receiver<Job>, metrics: Arc<Metrics>) {
    while let Ok(job) = rx.recv() {
        write_job(&job, &metrics);
        job.fanout.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Hands one page (or the end) to every listener of one shard.
fn write_job(job: &Job, metrics: &Metrics) {
    let mut shard = lock(&job.fanout.shards[job.shard]);
    let mut latency = Latency::default();
    let mut i = 0;
    let mut now = 0;
    while i < shard.len() {
        if i.is_multiple_of(16) {
            now = now_us();
        }
        // Listeners live all over the heap: start loading the next ones' memory now.
        if let Some(l) = shard.get(i + 8) {
            prefetch(Arc::as_ptr(l));
        }
        if let Some(l) = shard.get(i + 4) {
            l.sink.prefetch();
        }
        if deliver(&shard[i], job, metrics, &mut latency, now) {
            i += 1;
        } else {
            shard.swap_remove(i);
        }
    }
    drop(shard);
    latency.record(&job.fanout.channel);
}

/// Hands one job to one listener at about `now` (µs); false once the listener is done with.
fn deliver(
    l: &Listener<dyn Sink>,
    job: &Job,
    metrics: &Metrics,
    latency: &mut Latency,
    now: i64,
) -> bool {
    if l.gone.load(Ordering::Acquire) {
        return false;
    }
    if job.seq <= l.joined {
        return true;
    }
    let page = match &*job.what {
        What::Page(p) => p,
        What::End => {
            l.ended.store(true, Ordering::Release);
            l.waker.wake();
            return false;
        }
    };
    match l.sink.push(page, page.index == 0) {
        Pushed::Gone => {
            l.gone.store(true, Ordering::Release);
            l.waker.wake();
            return false;
        }
        Pushed::Skipped => {
            metrics.live_skips.inc();
        }
        Pushed::Queued => {}
    }
    l.pages.fetch_add(1, Ordering::Relaxed);
    latency.add((now - page.arrived_us).max(0) as u64 / 1000);
    true
}

/// Arrival → send latencies of one job, counted here and added to the channel once.
#[derive(Default)]
struct Latency(Vec<(u64, u64)>);

impl Latency {
    fn add(&mut self, ms: u64) {
        match self.0.iter_mut().rev().find(|(m, _)| *m == ms) {
            Some((_, n)) => *n += 1,
            None => self.0.push((ms, 1)),
        }
    }

    fn record(&self, channel: &Channel) {
        for &(ms, n) in &self.0 {
            channel.record_latency_n(ms, n);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
