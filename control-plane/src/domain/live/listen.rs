//! The listener side: a feed of shared pages from the live edge (headers and a short burst
//! first), which skips ahead instead of buffering when its listener falls behind.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
};

use futures::Stream;
use tokio::sync::broadcast::{Receiver, error::RecvError};
use veza_storage::MediaRecord;

use super::{
    DomainError, Live, Result,
    channel::{Channel, Event, Page},
    fanout::{Attached, Sink},
    guard::ListenerGuard,
    ingest::now_us,
};
use crate::{bus::Bus, caller::Caller};

/// What a live listener asks for.
#[derive(Debug, Clone, Default)]
pub struct ListenRequest {
    pub stream_id: i64,
    /// ISO country code from the `x-country` metadata, if the client sent one.
    pub country: Option<String>,
}

/// The pages one listener receives, each shared with every other listener.
pub type LiveFeed = Pin<Box<dyn Stream<Item = Arc<Page>> + Send + 'static>>;

/// A listener let in (caps checked, counted in) but not yet fed.
pub struct Admitted {
    pub record: MediaRecord,
    channel: Arc<Channel>,
    guard: ListenerGuard,
}

impl Live {
    /// Joins live stream `req.stream_id` at its live edge, as a feed of shared pages.
    pub async fn listen(
        &self,
        who: &Caller,
        req: ListenRequest,
    ) -> Result<(MediaRecord, LiveFeed)> {
        let a = self.admit(who, req).await?;
        let record = a.record.clone();
        Ok((record, a.into_feed()?))
    }

    /// Lets a listener of live stream `req.stream_id` in: checks the caps and counts it in.
    pub async fn admit(&self, who: &Caller, req: ListenRequest) -> Result<Admitted> {
        let m = self.live_record(who, req.stream_id, None).await?;
        self.admit_record(m, req.country.as_deref(), who.user_id().unwrap_or(0))
    }

    /// Lets in a plain HTTP listener of stream `id`, which holds no token: a private stream
    /// needs a `signed` URL (SPEC §12).
    pub async fn admit_http(
        &self,
        id: i64,
        signed: bool,
        country: Option<&str>,
    ) -> Result<Admitted> {
        let m = self.on_air_row(id).await?;
        if m.is_private && !signed {
            return Err(DomainError::denied(
                "this live stream is private: open its signed URL",
            ));
        }
        self.admit_record(m, country, 0)
    }

    /// Checks the listener caps of stream `m` and counts a listener in.
    fn admit_record(&self, m: MediaRecord, country: Option<&str>, user: i64) -> Result<Admitted> {
        let id = m.id;
        let o = &self.inner.opts;
        if o.max_listeners > 0 && self.inner.listeners.load(Ordering::Relaxed) >= o.max_listeners {
            return Err(DomainError::ResourceExhausted(format!(
                "this server has its maximum of {} live listeners",
                o.max_listeners
            )));
        }
        if o.max_listeners_per_stream > 0
            && self.listeners_total(id) >= o.max_listeners_per_stream as u64
        {
            return Err(DomainError::ResourceExhausted(format!(
                "live stream {id} has its maximum of {} listeners",
                o.max_listeners_per_stream
            )));
        }
        let (channel, fresh) = self.channel_entry(id);
        if fresh && matches!(self.inner.bus, Bus::Nats(_)) && !self.is_ingesting(id) {
            let live = self.clone();
            let c = channel.clone();
            tokio::spawn(async move { live.follow_relay(c).await });
        }
        if channel.ended() {
            return Err(ended(id));
        }
        let country = country.and_then(normalize_country);
        let guard = ListenerGuard::new(self.clone(), channel.clone(), country, user);
        Ok(Admitted {
            record: m,
            channel,
            guard,
        })
    }

    /// Feeds an admitted listener through `sink`, straight from the writer threads.
    pub fn attach(&self, a: Admitted, sink: impl Sink) -> Result<Attached> {
        let id = a.channel.id;
        self.inner
            .fanouts
            .attach(&a.channel, sink, a.guard)
            .ok_or_else(|| ended(id))
    }

    /// Pages a direct listener may have waiting before it skips ahead: the lag bound, and at
    /// least the join burst.
    pub fn queue_pages(&self) -> usize {
        let o = &self.inner.opts;
        let chunk = o.chunk_ms.max(1);
        ((o.max_lag_ms / chunk) as usize + 1).max((o.burst_ms / chunk) as usize + 3)
    }
}

impl Admitted {
    /// The listener's pages as a stream: headers and burst, then the broadcast.
    pub fn into_feed(self) -> Result<LiveFeed> {
        let joined = self.channel.join().ok_or_else(|| ended(self.channel.id))?;
        let state = FeedState {
            first: joined.first.into(),
            rx: joined.rx,
            guard: self.guard,
            had_headers: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, next_page)))
    }
}

fn ended(id: i64) -> DomainError {
    DomainError::FailedPrecondition(format!("live stream {id} has ended"))
}

struct FeedState {
    first: VecDeque<Arc<Page>>,
    rx: Receiver<Event>,
    guard: ListenerGuard,
    /// The headers page (index 0) went out.
    had_headers: bool,
}

async fn next_page(mut s: FeedState) -> Option<(Arc<Page>, FeedState)> {
    if let Some(p) = s.first.pop_front() {
        s.had_headers |= p.index == 0;
        return Some((p, s));
    }
    loop {
        match s.rx.recv().await {
            Ok(Event::Page(p)) => {
                let ms = (now_us() - p.arrived_us).max(0) / 1000;
                s.guard.channel.record_latency(ms as u64);
                s.guard.pages += 1;
                s.had_headers |= p.index == 0;
                return Some((p, s));
            }
            Ok(Event::End) | Err(RecvError::Closed) => return None,
            Err(RecvError::Lagged(_)) => {
                // Too far behind: continue from the live edge, never from a growing backlog;
                // headers that were in the skipped part still go first.
                s.rx = s.rx.resubscribe();
                s.guard.live.inner.metrics.live_skips.inc();
                if !s.had_headers
                    && let Some(h) = s.guard.channel.headers()
                {
                    s.had_headers = true;
                    return Some((h, s));
                }
            }
        }
    }
}

/// A two- or three-letter code, upper-cased; anything else is ignored.
fn normalize_country(c: &str) -> Option<String> {
    let c = c.trim();
    ((2..=3).contains(&c.len()) && c.chars().all(|ch| ch.is_ascii_alphabetic()))
        .then(|| c.to_ascii_uppercase())
}
