//! Listener counts across instances: every instance with listeners (or the producer) of a live
//! stream, or with on-demand listeners of a track, announces them on `veza.live.<id>.presence`
//! each second; totals add the fresh announcements of the others to this instance's own counts.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Live, channel::median_between};
use crate::bus::{Bus, BusEvent};

/// How often each instance announces; entries older than three periods are ignored.
pub const PERIOD: Duration = Duration::from_secs(1);

/// One instance's view of one stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Announce {
    /// The announcing instance (hex).
    pub instance: String,
    pub listeners: u64,
    pub countries: Vec<String>,
    /// Producer input rate in kbps, when this instance holds the producer.
    pub input_kbps: Option<f32>,
    /// Median arrival → send latency of its listeners over the last period, in ms.
    pub latency_ms: Option<f32>,
}

/// What the other instances announced, by (stream, instance).
#[derive(Default)]
pub struct Remote {
    seen: Mutex<HashMap<(i64, String), (Announce, Instant)>>,
}

impl Remote {
    fn insert(&self, id: i64, a: Announce) {
        let mut m = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (_, at)| at.elapsed() < PERIOD * 3);
        m.insert((id, a.instance.clone()), (a, Instant::now()));
    }

    /// The fresh announcements of other instances for stream `id`.
    pub fn of(&self, id: i64) -> Vec<Announce> {
        let m = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .filter(|((sid, _), (_, at))| *sid == id && at.elapsed() < PERIOD * 3)
            .map(|(_, (a, _))| a.clone())
            .collect()
    }
}

fn subject(id: i64) -> String {
    format!("veza.live.{id}.presence")
}

impl Live {
    /// Announces this instance's streams every period and collects the others' (NATS only).
    pub(super) async fn run_presence(&self) {
        if !matches!(self.inner.bus, Bus::Nats(_)) {
            return;
        }
        let mut sub = match self.inner.bus.subscribe("veza.live.*.presence").await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "live presence: subscribing");
                return;
            }
        };
        let mut tick = tokio::time::interval(PERIOD);
        let mut shutdown = self.inner.shutdown.clone();
        let mut last: HashMap<i64, (Vec<u64>, u64)> = HashMap::new();
        loop {
            tokio::select! {
                ev = sub.next() => match ev {
                    Some(BusEvent::Message(env)) => self.on_announce(&env.subject, &env.payload),
                    Some(BusEvent::Lagged(_)) => {}
                    None => break,
                },
                _ = tick.tick() => self.announce(&mut last).await,
                _ = shutdown.wait() => break,
            }
        }
    }

    fn on_announce(&self, subject: &str, payload: &[u8]) {
        let Some(id) = subject
            .split('.')
            .nth(2)
            .and_then(|s| s.parse::<i64>().ok())
        else {
            return;
        };
        let Ok(a) = serde_json::from_slice::<Announce>(payload) else {
            return;
        };
        if a.instance != self.instance_hex() {
            self.inner.remote.insert(id, a);
        }
    }

    /// Publishes one announcement per local stream; `last` keeps each stream's previous latency
    /// histogram and input byte count.
    async fn announce(&self, last: &mut HashMap<i64, (Vec<u64>, u64)>) {
        let channels = self.local_channels();
        last.retain(|id, _| channels.iter().any(|c| c.id == *id));
        // Tracks' on-demand listeners travel the same way (one id space).
        let mut tracks: HashMap<i64, usize> = self
            .inner
            .media
            .local_listener_counts()
            .into_iter()
            .collect();
        for c in channels {
            let hist = c.latency_snapshot();
            let input = c.input_bytes.load(std::sync::atomic::Ordering::Relaxed);
            let (prev_hist, prev_input) = last.remove(&c.id).unwrap_or_default();
            let ingest = self.is_ingesting(c.id);
            let a = Announce {
                instance: self.instance_hex(),
                listeners: (c.listeners.load(std::sync::atomic::Ordering::Relaxed)
                    + tracks.remove(&c.id).unwrap_or(0)) as u64,
                countries: c.countries(),
                input_kbps: ingest.then(|| {
                    (input.saturating_sub(prev_input) * 8) as f32 / 1000.0 / PERIOD.as_secs_f32()
                }),
                latency_ms: median_between(&prev_hist, &hist),
            };
            last.insert(c.id, (hist, input));
            self.publish_announce(c.id, &a).await;
        }
        for (id, n) in tracks {
            let a = Announce {
                instance: self.instance_hex(),
                listeners: n as u64,
                ..Announce::default()
            };
            self.publish_announce(id, &a).await;
        }
    }

    async fn publish_announce(&self, id: i64, a: &Announce) {
        if let Ok(json) = serde_json::to_vec(a) {
            let _ = self.inner.bus.publish(subject(id), json.into()).await;
        }
    }
}
