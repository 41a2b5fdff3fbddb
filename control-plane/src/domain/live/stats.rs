//! `StreamAnalytics`: every interval, listeners over all instances, the producer's input rate,
//! the median arrival → send latency over the interval, and the listeners' countries. On a
//! track: its on-demand listeners over all instances and the plays started over the interval.

use std::{collections::BTreeSet, pin::Pin, sync::atomic::Ordering, time::Duration};

use futures::Stream;

use super::{DomainError, Live, Result, channel::median_between};
use crate::caller::Caller;

/// How long after a play starts it is counted: events are written in batches, and a window
/// that closed before its events landed would miss them. Windows tile, so each play counts once.
pub const PLAYS_SETTLE_MS: i64 = 1000;

/// One `AnalyticsData` sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveStats {
    pub stream_id: i64,
    pub listeners: u64,
    /// Producer input rate in kbps over the interval.
    pub input_kbps: f32,
    /// Median ms from a page's arrival to its send over the interval.
    pub latency_ms: f32,
    pub countries: Vec<String>,
    /// Tracks: `play_started` events over the interval (all instances).
    pub plays: u64,
}

/// Samples until the stream ends.
pub type StatsFeed = Pin<Box<dyn Stream<Item = LiveStats> + Send + 'static>>;

struct Cursor {
    live: Live,
    id: i64,
    tick: tokio::time::Interval,
    interval: Duration,
    hist: Vec<u64>,
    input: u64,
    done: bool,
}

impl Live {
    /// Samples of live stream or track `id` every `interval_ms` (0 = 1000); owner, admin or an
    /// API key with `analytics:read`. A live stream's samples end with the stream; a track's
    /// run until the client goes away.
    pub async fn analytics(&self, who: &Caller, id: i64, interval_ms: i32) -> Result<StatsFeed> {
        let m = self.visible_record(who, id, Some("analytics:read")).await?;
        if m.kind != "track" {
            super::on_air(&m)?;
        }
        if !(who.may_act_for(m.owner_id) || who.has_scope("analytics:read")) {
            return Err(DomainError::denied(format!(
                "only the {}'s owner, an admin or an API key with analytics:read may read its analytics",
                if m.kind == "track" { "track" } else { "stream" }
            )));
        }
        let interval_ms = if interval_ms == 0 { 1000 } else { interval_ms };
        if !(100..=60_000).contains(&interval_ms) {
            return Err(DomainError::invalid(
                "interval_ms",
                "must be 100–60000 (0 = 1000)",
            ));
        }
        let interval = Duration::from_millis(interval_ms as u64);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if m.kind == "track" {
            return Ok(self.track_analytics(id, tick));
        }
        let (hist, input) = self.counters(id);
        let c = Cursor {
            live: self.clone(),
            id,
            tick,
            interval,
            hist,
            input,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(c, |mut c| async move {
            if c.done {
                return None;
            }
            c.tick.tick().await;
            let live = c.live.clone();
            let s = live.sample(&mut c).await;
            Some((s, c))
        })))
    }

    /// A track's samples: listeners now, and the plays whose start falls in the window that
    /// closed [`PLAYS_SETTLE_MS`] ago.
    fn track_analytics(&self, id: i64, tick: tokio::time::Interval) -> StatsFeed {
        let from = veza_storage::now_ms() - PLAYS_SETTLE_MS;
        let state = (self.clone(), tick, from);
        Box::pin(futures::stream::unfold(
            state,
            move |(live, mut tick, from)| async move {
                tick.tick().await;
                let to = veza_storage::now_ms() - PLAYS_SETTLE_MS;
                let counted = live
                    .inner
                    .db
                    .count_events_with("play_started", "track_id", &id.to_string(), from, to)
                    .await;
                let (plays, from) = match counted {
                    Ok(n) => (u64::try_from(n).unwrap_or(0), to),
                    Err(e) => {
                        // Counted at the next sample instead (the window stays open).
                        tracing::warn!(track_id = id, error = %e, "counting plays");
                        (0, from)
                    }
                };
                let s = LiveStats {
                    stream_id: id,
                    listeners: live.listeners_total(id),
                    plays,
                    ..LiveStats::default()
                };
                Some((s, (live, tick, from)))
            },
        ))
    }

    fn counters(&self, id: i64) -> (Vec<u64>, u64) {
        match self.channel(id) {
            Some(c) => (c.latency_snapshot(), c.input_bytes.load(Ordering::Relaxed)),
            None => (Vec::new(), 0),
        }
    }

    async fn sample(&self, c: &mut Cursor) -> LiveStats {
        let (hist, input) = self.counters(c.id);
        let local_latency = median_between(&c.hist, &hist);
        let local_kbps = self.is_ingesting(c.id).then(|| {
            input.saturating_sub(c.input) as f32 * 8.0 / 1000.0 / c.interval.as_secs_f32()
        });
        c.hist = hist;
        c.input = input;
        let remote = self.inner.remote.of(c.id);
        let mut countries: BTreeSet<String> = self
            .channel(c.id)
            .map(|ch| ch.countries())
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut latency = local_latency.map(|l| (l, self.local_listeners(c.id).max(1) as f32));
        for a in &remote {
            countries.extend(a.countries.iter().cloned());
            if let Some(l) = a.latency_ms {
                let w = a.listeners.max(1) as f32;
                latency = Some(match latency {
                    Some((x, n)) => ((x * n + l * w) / (n + w), n + w),
                    None => (l, w),
                });
            }
        }
        let input_kbps = local_kbps
            .or_else(|| remote.iter().find_map(|a| a.input_kbps))
            .unwrap_or(0.0);
        if !matches!(self.inner.db.media(c.id).await, Ok(Some(m)) if m.status == "live") {
            c.done = true;
        }
        LiveStats {
            stream_id: c.id,
            listeners: self.listeners_total(c.id),
            input_kbps,
            latency_ms: latency.map_or(0.0, |(l, _)| l),
            countries: countries.into_iter().collect(),
            plays: 0,
        }
    }

    fn local_listeners(&self, id: i64) -> usize {
        self.channel(id)
            .map_or(0, |c| c.listeners.load(Ordering::Relaxed))
    }
}
