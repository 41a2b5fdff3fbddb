//! Caps on concurrent connections over both ports, per client IP and in total: a place is
//! taken on accept and given back when the connection's [`Slot`] is dropped.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

use crate::metrics::Metrics;

/// The labels of `veza_connections_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    /// `grpc` or `http`.
    port: &'static str,
    /// `per_ip` or `total`.
    reason: &'static str,
}

/// Counts the open connections of both ports, per client IP and in total.
pub struct ConnLimits {
    per_ip: usize,
    total: usize,
    counts: Mutex<Counts>,
    refused: Family<RefusedLabels, Counter>,
    open: Gauge,
    /// When a refusal was last logged, and how many went unlogged since.
    log: Mutex<(Option<Instant>, u64)>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; its place is given back on drop.
pub struct Slot {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

/// Refusals are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl ConnLimits {
    /// Caps of `per_ip` and `total` connections (0: no cap), counted in `metrics`.
    pub fn new(per_ip: usize, total: usize, metrics: &Metrics) -> Arc<ConnLimits> {
        let limits = ConnLimits {
            per_ip,
            total,
            counts: Mutex::new(Counts::default()),
            refused: Family::default(),
            open: Gauge::default(),
            log: Mutex::new((None, 0)),
        };
        metrics.register_veza(
            "connections_refused",
            "Connections closed on accept: over the cap per client IP or in total",
            limits.refused.clone(),
        );
        metrics.register_veza(
            "connections_open",
            "Open connections on the gRPC and HTTP ports",
            limits.open.clone(),
        );
        Arc::new(limits)
    }

    /// A place for a new connection from `ip` on `port`, or `None` (counted and logged) when a
    /// cap is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, port: &'static str) -> Option<Slot> {
        let refused = {
            let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let mine = c.by_ip.get(&ip).copied().unwrap_or(0);
            if self.total > 0 && c.total >= self.total {
                Some("total")
            } else if self.per_ip > 0 && mine >= self.per_ip {
                Some("per_ip")
            } else {
                c.total += 1;
                *c.by_ip.entry(ip).or_insert(0) += 1;
                None
            }
        };
        match refused {
            None => {
                self.open.inc();
                Some(Slot {
                    limits: self.clone(),
                    ip,
                })
            }
            Some(reason) => {
                self.refused
                    .get_or_create(&RefusedLabels { port, reason })
                    .inc();
                self.log_refusal(ip, port, reason);
                None
            }
        }
    }

    fn log_refusal(&self, ip: IpAddr, port: &str, reason: &str) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if log.0.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            log.1 += 1;
            return;
        }
        let unlogged = std::mem::take(&mut log.1);
        log.0 = Some(now);
        let (per_ip, total) = (self.per_ip, self.total);
        tracing::warn!(%ip, port, reason, per_ip, total, refused_before_unlogged = unlogged, "connection refused: too many connections");
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.limits.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_ip.remove(&self.ip);
            }
        }
        drop(c);
        self.limits.open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_in_total_give_places_back() {
        let metrics = Metrics::new();
        let limits = ConnLimits::new(2, 3, &metrics);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "::1".parse().unwrap());
        let a1 = limits.admit(a, "grpc").expect("first");
        let a2 = limits.admit(a, "http").expect("second, other port");
        assert!(limits.admit(a, "grpc").is_none(), "third from one address");
        let b1 = limits.admit(b, "grpc").expect("another address");
        assert!(limits.admit(b, "grpc").is_none(), "over the total");
        drop(a1);
        let b2 = limits.admit(b, "http").expect("a place was given back");
        let text = metrics.render();
        assert!(
            text.contains(r#"veza_connections_refused_total{port="grpc",reason="per_ip"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"veza_connections_refused_total{port="grpc",reason="total"} 1"#),
            "{text}"
        );
        assert!(text.contains("veza_connections_open 3"), "{text}");
        drop((a2, b1, b2));
        let counts = limits.counts.lock().unwrap();
        assert_eq!((counts.total, counts.by_ip.len()), (0, 0));
    }

    #[test]
    fn zero_means_no_cap() {
        let metrics = Metrics::new();
        let limits = ConnLimits::new(0, 0, &metrics);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let slots: Vec<Slot> = (0..5_000)
            .filter_map(|_| limits.admit(ip, "http"))
            .collect();
        assert_eq!(slots.len(), 5_000);
    }
}
