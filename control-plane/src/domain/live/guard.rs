//! A listener counted in while it lives: the totals, the gauge and the play events.

use std::sync::{Arc, atomic::Ordering};

use super::{Live, channel::Channel};

/// Counts a listener in while it lives; emits `play_started` / `play_finished`.
pub(super) struct ListenerGuard {
    pub(super) live: Live,
    pub(super) channel: Arc<Channel>,
    country: Option<String>,
    user: i64,
    pub(super) pages: u64,
}

impl ListenerGuard {
    pub(super) fn new(
        live: Live,
        channel: Arc<Channel>,
        country: Option<String>,
        user: i64,
    ) -> Self {
        channel.listener_in(country.as_deref());
        live.inner.listeners.fetch_add(1, Ordering::Relaxed);
        live.inner.metrics.live_listeners.inc();
        live.inner.analytics.emit(
            "play_started",
            user,
            vec![
                ("stream_id".into(), channel.id.to_string()),
                ("live".into(), "true".into()),
            ],
        );
        ListenerGuard {
            live,
            channel,
            country,
            user,
            pages: 0,
        }
    }
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.channel.listener_out(self.country.as_deref());
        self.live.inner.listeners.fetch_sub(1, Ordering::Relaxed);
        self.live.inner.metrics.live_listeners.dec();
        self.live.inner.analytics.emit(
            "play_finished",
            self.user,
            vec![
                ("stream_id".into(), self.channel.id.to_string()),
                ("live".into(), "true".into()),
                ("chunks".into(), self.pages.to_string()),
            ],
        );
    }
}
