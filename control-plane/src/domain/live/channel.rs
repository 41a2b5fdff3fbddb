//! One live stream's pages on one instance: the header pages, a short ring of recent pages for
//! the join burst, and a bounded broadcast that hands the same `Arc<Page>` to every listener.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use tokio::sync::broadcast;

/// One Ogg page (or the header pages) as every listener receives it.
#[derive(Debug)]
pub struct Page {
    /// 0 for the header pages, then 1, 2, … in broadcast order.
    pub index: u64,
    /// Media time of the page's first sample.
    pub timestamp_ms: u64,
    pub channels: u16,
    pub data: Bytes,
    /// When the producer's audio arrived at the ingesting instance (µs since the epoch).
    pub arrived_us: i64,
    /// One transport's encoding of the page (the gRPC edge's frame), made once by the edge
    /// that needs it and shared by all its listeners; the domain never reads it.
    pub encoded: std::sync::OnceLock<Bytes>,
}

impl Page {
    /// A page not yet encoded for the wire.
    pub fn new(index: u64, timestamp_ms: u64, channels: u16, data: Bytes, arrived_us: i64) -> Page {
        Page {
            index,
            timestamp_ms,
            channels,
            data,
            arrived_us,
            encoded: std::sync::OnceLock::new(),
        }
    }
}

/// What the broadcast carries.
#[derive(Clone, Debug)]
pub enum Event {
    Page(std::sync::Arc<Page>),
    End,
}

/// What a joining listener gets: the headers and burst to send first, then the live feed.
pub struct Joined {
    pub first: Vec<std::sync::Arc<Page>>,
    pub rx: broadcast::Receiver<Event>,
}

struct State {
    headers: Option<std::sync::Arc<Page>>,
    ring: VecDeque<std::sync::Arc<Page>>,
    ended: bool,
}

/// Latency histogram buckets: 1 ms each, the last one collects everything slower.
const LATENCY_BUCKETS: usize = 4096;

/// A live stream as seen by this instance.
pub struct Channel {
    pub id: i64,
    burst_ms: u64,
    state: Mutex<State>,
    tx: broadcast::Sender<Event>,
    /// Listeners on this instance.
    pub listeners: AtomicUsize,
    countries: Mutex<HashMap<String, usize>>,
    /// Cumulative arrival → send latencies, 1 ms buckets.
    latency: Vec<AtomicU64>,
    /// Producer bytes received on this instance.
    pub input_bytes: AtomicU64,
}

impl Channel {
    /// A channel whose listeners may lag `lag_pages` pages before they skip to the live edge.
    pub fn new(id: i64, burst_ms: u64, lag_pages: usize) -> Channel {
        Channel {
            id,
            burst_ms,
            state: Mutex::new(State {
                headers: None,
                ring: VecDeque::new(),
                ended: false,
            }),
            tx: broadcast::channel(lag_pages.max(2)).0,
            listeners: AtomicUsize::new(0),
            countries: Mutex::new(HashMap::new()),
            latency: (0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            input_bytes: AtomicU64::new(0),
        }
    }

    /// Sets the header pages (sent first to every listener that joins from now on).
    pub fn set_headers(&self, page: Page) {
        let page = std::sync::Arc::new(page);
        let mut s = lock(&self.state);
        let fresh = s.headers.as_ref().is_none_or(|h| h.data != page.data);
        if fresh {
            s.headers = Some(page.clone());
            // Listeners already waiting for the first pages get the headers in the feed.
            let _ = self.tx.send(Event::Page(page));
        }
    }

    /// The stream's headers page, once the producer has set it.
    pub fn headers(&self) -> Option<std::sync::Arc<Page>> {
        lock(&self.state).headers.clone()
    }

    /// Broadcasts a page to every listener and keeps it for the join burst.
    pub fn publish(&self, page: std::sync::Arc<Page>) {
        let mut s = lock(&self.state);
        if s.ended {
            return;
        }
        s.ring.push_back(page.clone());
        while let (Some(first), Some(last)) = (s.ring.front(), s.ring.back()) {
            if last.timestamp_ms.saturating_sub(first.timestamp_ms) < self.burst_ms
                || s.ring.len() == 1
            {
                break;
            }
            s.ring.pop_front();
        }
        let _ = self.tx.send(Event::Page(page));
    }

    /// Ends the broadcast: listeners finish after the pages already sent.
    pub fn end(&self) {
        let mut s = lock(&self.state);
        if !s.ended {
            s.ended = true;
            let _ = self.tx.send(Event::End);
        }
    }

    /// Whether the broadcast has ended.
    pub fn ended(&self) -> bool {
        lock(&self.state).ended
    }

    /// Joins at the live edge: headers and the burst first, then every page after them, with no
    /// gap or duplicate between the two (both are taken under the same lock as `publish`).
    pub fn join(&self) -> Option<Joined> {
        let s = lock(&self.state);
        if s.ended {
            return None;
        }
        let mut first = Vec::with_capacity(s.ring.len() + 1);
        if let Some(h) = &s.headers {
            first.push(h.clone());
            first.extend(s.ring.iter().cloned());
        }
        Some(Joined {
            first,
            rx: self.tx.subscribe(),
        })
    }

    /// Counts a listener in (with its country, if it reported one).
    pub fn listener_in(&self, country: Option<&str>) {
        self.listeners.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = country {
            *lock(&self.countries).entry(c.to_string()).or_default() += 1;
        }
    }

    /// Counts a listener out.
    pub fn listener_out(&self, country: Option<&str>) {
        self.listeners.fetch_sub(1, Ordering::Relaxed);
        if let Some(c) = country {
            let mut m = lock(&self.countries);
            if let Some(n) = m.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    m.remove(c);
                }
            }
        }
    }

    /// Countries of this instance's listeners.
    pub fn countries(&self) -> Vec<String> {
        lock(&self.countries).keys().cloned().collect()
    }

    /// Records one page's arrival → send latency.
    pub fn record_latency(&self, ms: u64) {
        self.record_latency_n(ms, 1);
    }

    /// Records `n` sends of the same arrival → send latency.
    pub fn record_latency_n(&self, ms: u64, n: u64) {
        let b = (ms as usize).min(LATENCY_BUCKETS - 1);
        self.latency[b].fetch_add(n, Ordering::Relaxed);
    }

    /// The cumulative latency histogram (diff two snapshots for an interval).
    pub fn latency_snapshot(&self) -> Vec<u64> {
        self.latency
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }
}

/// The median of the latencies recorded between two snapshots, if any.
pub fn median_between(before: &[u64], after: &[u64]) -> Option<f32> {
    let diff: Vec<u64> = after
        .iter()
        .zip(before.iter().chain(std::iter::repeat(&0)))
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let total: u64 = diff.iter().sum();
    if total == 0 {
        return None;
    }
    let mut seen = 0;
    for (ms, n) in diff.iter().enumerate() {
        seen += n;
        if seen * 2 >= total {
            return Some(ms as f32);
        }
    }
    None
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(index: u64, ts: u64) -> Page {
        Page::new(index, ts, 2, Bytes::from(vec![index as u8]), 0)
    }

    #[test]
    fn join_gets_headers_burst_then_live() {
        let c = Channel::new(1, 500, 8);
        c.set_headers(page(0, 0));
        for i in 1..=10 {
            c.publish(std::sync::Arc::new(page(i, i * 100)));
        }
        let mut j = c.join().expect("live");
        let idx: Vec<u64> = j.first.iter().map(|p| p.index).collect();
        // 500 ms of burst: the five latest 100 ms pages.
        assert_eq!(idx, vec![0, 6, 7, 8, 9, 10]);
        c.publish(std::sync::Arc::new(page(11, 1100)));
        match j.rx.try_recv() {
            Ok(Event::Page(p)) => assert_eq!(p.index, 11),
            other => panic!("expected page 11, got {other:?}"),
        }
        c.end();
        assert!(matches!(j.rx.try_recv(), Ok(Event::End)));
        assert!(c.join().is_none());
    }

    #[test]
    fn median_of_interval() {
        let before = vec![0, 1, 0, 0];
        let after = vec![0, 2, 5, 1];
        assert_eq!(median_between(&before, &after), Some(2.0));
        assert_eq!(median_between(&after, &after), None);
    }
}
