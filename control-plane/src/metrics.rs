//! The metrics registry behind `/metrics` (Prometheus text format).

use std::sync::{Mutex, atomic::AtomicU64};

use prometheus_client::{
    encoding::text::encode,
    metrics::gauge::Gauge,
    registry::Registry,
};

/// One instance's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Streams open right now, all services.
    pub open_streams: Gauge,
    resident: Gauge<f64, AtomicU64>,
}

impl Metrics {
    /// A registry with Veza's metrics.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("veza");
        let open_streams = Gauge::default();
        let resident = Gauge::<f64, AtomicU64>::default();
        registry.register("open_streams", "Streaming calls open now", open_streams.clone());
        registry.register("process_resident_memory_bytes", "Resident set size", resident.clone());
        Metrics { registry: Mutex::new(registry), open_streams, resident }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        self.resident.set(resident_bytes() as f64);
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if encode(&mut out, &registry).is_err() {
            tracing::error!("encoding metrics failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Resident memory of this process, from /proc (0 where unavailable).
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}
