//! The one metrics registry of an instance, behind `/metrics` (Prometheus text), `GetMetrics` and
//! `StreamMetrics`.
//!
//! gRPC server metrics use the grpc-ecosystem names, unprefixed (`grpc_server_handled_total`…);
//! `process_resident_memory_bytes` keeps its standard name; everything else is `veza_…`.

use std::{
    collections::HashMap,
    sync::{Mutex, atomic::AtomicU64},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Latency buckets of `grpc_server_handling_seconds`, in seconds.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The labels of every gRPC server metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// `unary`, `client_stream`, `server_stream` or `bidi_stream`.
    pub grpc_type: &'static str,
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
}

/// [`MethodLabels`] plus the status code (`OK`, `PermissionDenied`…).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub grpc_type: &'static str,
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
    pub grpc_code: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The grpc-ecosystem server metrics.
pub struct GrpcMetrics {
    pub started: Family<MethodLabels, Counter>,
    pub handled: Family<CodeLabels, Counter>,
    pub msg_received: Family<MethodLabels, Counter>,
    pub msg_sent: Family<MethodLabels, Counter>,
    pub handling_seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

/// The analytics ingestion pipeline's counters.
#[derive(Default)]
pub struct EventMetrics {
    /// Accepted into the queue.
    pub queued: Counter,
    /// Written to the database.
    pub written: Counter,
    /// Refused to `TrackEvent` callers because the queue was full.
    pub rejected: Counter,
    /// Dropped from internal producers because the queue was full.
    pub dropped: Counter,
    /// Lost after the database kept failing.
    pub failed: Counter,
    /// In the queue now.
    pub queue_depth: Gauge,
}

/// The labels of `veza_live_served_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServedLabels {
    /// `grpc` or `http`.
    pub transport: &'static str,
    /// `direct` (the live writer threads write the socket) or `hyper` (response bodies).
    pub path: &'static str,
}

impl Metrics {
    /// Counts one live listener served over `transport` by `path`.
    pub fn served(&self, transport: &'static str, path: &'static str) {
        self.live_served
            .get_or_create(&ServedLabels { transport, path })
            .inc();
    }
}

/// One instance's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Streaming calls open right now, all services.
    pub open_streams: Gauge,
    /// Listeners of live streams and tracks right now.
    pub live_listeners: Gauge,
    /// Live listeners moved to the live edge because they fell too far behind.
    pub live_skips: Counter,
    /// Live listeners whose audio the writer threads put straight onto their connection.
    pub live_direct: Counter,
    /// Live listeners served, by transport and by the path their audio took.
    pub live_served: Family<ServedLabels, Counter>,
    /// gRPC connections hyper let go to their live stream.
    pub live_detached: Counter,
    /// Audio bytes received by uploads.
    pub upload_bytes: Counter,
    /// Notifications created.
    pub notifications_created: Counter,
    pub grpc: GrpcMetrics,
    pub events: EventMetrics,
    resident: Gauge<f64, AtomicU64>,
}

impl Metrics {
    /// A registry with Veza's metrics.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let grpc = GrpcMetrics {
            started: Family::default(),
            handled: Family::default(),
            msg_received: Family::default(),
            msg_sent: Family::default(),
            handling_seconds: Family::new_with_constructor(latency_histogram),
        };
        registry.register(
            "grpc_server_started",
            "RPCs started on the server",
            grpc.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, whatever the status",
            grpc.handled.clone(),
        );
        registry.register(
            "grpc_server_msg_received",
            "Stream messages received by the server",
            grpc.msg_received.clone(),
        );
        registry.register(
            "grpc_server_msg_sent",
            "Stream messages sent by the server",
            grpc.msg_sent.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Response latency (seconds) of RPCs until the last message",
            grpc.handling_seconds.clone(),
        );
        let resident = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            resident.clone(),
        );

        let open_streams = Gauge::default();
        let live_listeners = Gauge::default();
        let upload_bytes = Counter::default();
        let live_skips = Counter::default();
        let live_direct = Counter::default();
        let live_served = Family::<ServedLabels, Counter>::default();
        let live_detached = Counter::default();
        let notifications_created = Counter::default();
        let events = EventMetrics::default();
        let veza = registry.sub_registry_with_prefix("veza");
        veza.register(
            "open_streams",
            "Streaming calls open now",
            open_streams.clone(),
        );
        veza.register(
            "live_listeners",
            "Listeners of live streams and tracks now",
            live_listeners.clone(),
        );
        veza.register(
            "live_skips",
            "Live listeners skipped ahead to the live edge after falling behind",
            live_skips.clone(),
        );
        veza.register(
            "live_direct_listeners",
            "Live listeners served by direct writes to their HTTP/2 connection",
            live_direct.clone(),
        );
        veza.register(
            "live_served",
            "Live listeners served, by transport (grpc, http) and path (direct writes, hyper)",
            live_served.clone(),
        );
        veza.register(
            "live_detached",
            "gRPC connections handed from hyper to their one live stream (hyper's buffers freed)",
            live_detached.clone(),
        );
        veza.register(
            "upload_bytes",
            "Audio bytes received by uploads",
            upload_bytes.clone(),
        );
        veza.register(
            "notifications_created",
            "Notifications created",
            notifications_created.clone(),
        );
        veza.register(
            "analytics_events_queued",
            "Analytics events accepted into the ingestion queue",
            events.queued.clone(),
        );
        veza.register(
            "analytics_events_written",
            "Analytics events written to the database",
            events.written.clone(),
        );
        veza.register(
            "analytics_events_rejected",
            "TrackEvent calls refused with RESOURCE_EXHAUSTED because the queue was full",
            events.rejected.clone(),
        );
        veza.register(
            "analytics_events_dropped",
            "Built-in analytics events dropped because the queue was full",
            events.dropped.clone(),
        );
        veza.register(
            "analytics_events_failed",
            "Analytics events lost after repeated database failures",
            events.failed.clone(),
        );
        veza.register(
            "analytics_queue_depth",
            "Analytics events waiting to be written",
            events.queue_depth.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            open_streams,
            live_listeners,
            live_skips,
            live_direct,
            live_served,
            live_detached,
            upload_bytes,
            notifications_created,
            grpc,
            events,
            resident,
        }
    }

    /// Registers a metric of another module under the `veza_` prefix.
    pub fn register_veza(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        registry
            .sub_registry_with_prefix("veza")
            .register(name, help, metric);
    }

    /// The OpenMetrics text exposition (ends with `# EOF`).
    pub fn render_openmetrics(&self) -> String {
        self.resident.set(resident_bytes() as f64);
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if encode(&mut out, &registry).is_err() {
            tracing::error!("encoding metrics failed");
        }
        out
    }

    /// The Prometheus text format 0.0.4: counters' `# HELP`/`# TYPE` name the `_total` sample,
    /// no `# EOF` or `# UNIT` lines.
    pub fn render(&self) -> String {
        to_prometheus_text(&self.render_openmetrics())
    }

    /// Every sample as structured data: counters, gauges, histogram buckets/sums/counts, plus
    /// derived p50/p90/p99 of each histogram series (label `quantile`).
    pub fn samples(&self) -> Vec<Sample> {
        let samples = parse_openmetrics(&self.render_openmetrics());
        let quantiles = histogram_quantiles(&samples);
        samples.into_iter().chain(quantiles).collect()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Label pairs in order.
type Labels = Vec<(String, String)>;

/// One sample of the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric family (`grpc_server_handled_total`, `grpc_server_handling_seconds`…).
    pub family: String,
    /// The sample's own name (`…_bucket`, `…_sum`, `…_count` for histograms).
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
}

fn kind_of(t: &str) -> &'static str {
    match t {
        "counter" => "counter",
        "histogram" => "histogram",
        _ => "gauge",
    }
}

/// Rewrites the OpenMetrics text of prometheus-client into Prometheus text 0.0.4.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, "counter")) = rest.split_once(' ')
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match meta {
            Some((tag, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) && !name.ends_with("_total") {
                    out.push_str(&format!("{tag}{name}_total {tail}\n"));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Parses the registry's own OpenMetrics output (trusted, well-formed) into samples.
fn parse_openmetrics(text: &str) -> Vec<Sample> {
    let mut kinds: HashMap<String, &'static str> = HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, t)) = rest.split_once(' ') {
                kinds.insert(name.to_string(), kind_of(t));
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((name, labels, value)) = parse_sample_line(line) else {
            continue;
        };
        let (family, kind) = family_of(&name, &kinds);
        out.push(Sample {
            family,
            name,
            labels,
            value,
            kind,
        });
    }
    out
}

fn family_of(name: &str, kinds: &HashMap<String, &'static str>) -> (String, &'static str) {
    if let Some(k) = kinds.get(name) {
        return (name.to_string(), k);
    }
    for suffix in ["_total", "_bucket", "_sum", "_count", "_created"] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(k) = kinds.get(base)
        {
            let family = if *k == "counter" {
                name.to_string()
            } else {
                base.to_string()
            };
            return (family, k);
        }
    }
    (name.to_string(), "gauge")
}

/// `name{a="x",b="y"} value` (an exemplar after ` # ` is ignored).
fn parse_sample_line(line: &str) -> Option<(String, Labels, f64)> {
    let line = line.split(" # ").next()?;
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let (n, r) = line.split_once(' ')?;
            (n, vec![], r)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name.to_string(), labels, value))
}

fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek() == Some(&',') || chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((name, value));
    }
}

/// p50, p90 and p99 of every histogram series, interpolated within its buckets.
fn histogram_quantiles(samples: &[Sample]) -> Vec<Sample> {
    let mut series: HashMap<(String, Labels), Vec<(f64, f64)>> = HashMap::new();
    for s in samples
        .iter()
        .filter(|s| s.kind == "histogram" && s.name.ends_with("_bucket"))
    {
        let Some(le) = s
            .labels
            .iter()
            .find(|(k, _)| k == "le")
            .map(|(_, v)| v.as_str())
        else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        let labels: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| k != "le")
            .cloned()
            .collect();
        series
            .entry((s.family.clone(), labels))
            .or_default()
            .push((le, s.value));
    }
    let mut out = Vec::new();
    for ((family, labels), mut buckets) in series {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last().map_or(0.0, |b| b.1);
        if total <= 0.0 {
            continue;
        }
        for q in [0.5, 0.9, 0.99] {
            let rank = q * total;
            let (mut lower, mut below) = (0.0, 0.0);
            let mut value = lower;
            for &(le, count) in &buckets {
                if count >= rank {
                    value = if le.is_infinite() {
                        lower
                    } else if count > below {
                        lower + (le - lower) * (rank - below) / (count - below)
                    } else {
                        le
                    };
                    break;
                }
                (lower, below) = (le, count);
            }
            let mut labels = labels.clone();
            labels.push(("quantile".into(), q.to_string()));
            out.push(Sample {
                family: family.clone(),
                name: family.clone(),
                labels,
                value,
                kind: "histogram",
            });
        }
    }
    out
}

/// Resident memory of this process, from /proc (0 where unavailable).
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_metrics_are_unprefixed_and_prometheus_text_names_counters_total() {
        let m = Metrics::new();
        let labels = MethodLabels {
            grpc_type: "unary",
            grpc_service: "veza.x.X",
            grpc_method: "Y",
        };
        m.grpc.started.get_or_create(&labels).inc();
        m.grpc
            .handling_seconds
            .get_or_create(&labels)
            .observe(0.003);
        m.open_streams.inc();
        let text = m.render();
        assert!(
            text.contains("# TYPE grpc_server_started_total counter\n"),
            "{text}"
        );
        assert!(text.contains("grpc_server_started_total{grpc_type=\"unary\",grpc_service=\"veza.x.X\",grpc_method=\"Y\"} 1\n"));
        assert!(text.contains("veza_open_streams 1\n"));
        assert!(!text.contains("# EOF") && !text.contains("veza_grpc"));
        let samples = m.samples();
        let started = samples
            .iter()
            .find(|s| s.name == "grpc_server_started_total")
            .unwrap();
        assert_eq!(
            (started.kind, started.value, started.family.as_str()),
            ("counter", 1.0, "grpc_server_started_total")
        );
        let p99 = samples
            .iter()
            .find(|s| {
                s.name == "grpc_server_handling_seconds"
                    && s.labels.iter().any(|(k, v)| k == "quantile" && v == "0.99")
            })
            .unwrap();
        assert!(p99.value > 0.0025 && p99.value <= 0.005, "{p99:?}");
    }

    #[test]
    fn labels_parse_with_escapes() {
        let (n, l, v) = parse_sample_line(r#"a_b{x="1\"2",y="z\\"} 3.5"#).unwrap();
        assert_eq!((n.as_str(), v), ("a_b", 3.5));
        assert_eq!(
            l,
            vec![("x".into(), "1\"2".into()), ("y".into(), "z\\".into())]
        );
    }
}
