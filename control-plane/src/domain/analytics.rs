//! Analytics: events tracked by clients and emitted by the server itself, ingested through a
//! bounded in-memory queue and written in batches by one background task, counted in time buckets,
//! streamed live across instances, and pruned after the retention period.
//!
//! `TrackEvent` never waits for the database: it assigns the event id, enqueues, and answers.
//! When the queue is full it answers `RESOURCE_EXHAUSTED`; the server's own events
//! ([`Analytics::emit`]) are dropped and counted instead. The writer writes each batch in one
//! transaction, retrying a failing database with backoff, then publishes the batch on the bus for
//! `StreamEvents` on every instance.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{Stream, StreamExt};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use veza_storage::{BucketQuery, Db, EventRecord, now_ms};

use super::error::{DomainError, Result};
use crate::{
    bus::{Bus, BusEvent},
    caller::Caller,
    metrics::Metrics,
    shutdown::Shutdown,
};

/// The bus subject batches of written events travel on.
pub const SUBJECT: &str = "veza.analytics.events";
/// Event ids count milliseconds from 2024-01-01T00:00:00Z.
const ID_EPOCH_MS: i64 = 1_704_067_200_000;
/// Most events in one bus message (NATS' default payload limit is 1 MiB).
const PUBLISH_CHUNK: usize = 1000;
/// Most buckets one `GetAnalytics` may produce.
pub const MAX_BUCKETS: i64 = 10_000;
/// How far in the future an event's timestamp may be.
const MAX_FUTURE_MS: i64 = 3_600_000;

/// How the pipeline is sized.
#[derive(Debug, Clone)]
pub struct AnalyticsOptions {
    /// Events the queue holds before `TrackEvent` is refused.
    pub queue_capacity: usize,
    /// Most events written per transaction.
    pub batch_max: usize,
    /// How long events are kept; `None` keeps them forever.
    pub retention: Option<Duration>,
    /// How often old events are pruned.
    pub prune_every: Duration,
}

impl Default for AnalyticsOptions {
    fn default() -> Self {
        AnalyticsOptions {
            queue_capacity: 131_072,
            batch_max: 4096,
            retention: Some(Duration::from_secs(90 * 86_400)),
            prune_every: Duration::from_secs(3600),
        }
    }
}

/// An event to track.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    pub event_type: String,
    /// 0 = the calling user (anonymous for API keys).
    pub user_id: i64,
    pub properties: Vec<(String, String)>,
    /// When it happened, ms since the epoch; `None` = now.
    pub timestamp: Option<i64>,
    pub source: String,
}

/// What `GetAnalytics` asks for.
#[derive(Debug, Clone, Default)]
pub struct AnalyticsQuery {
    pub event_type: String,
    /// ms; `None` = 24 h before `to`.
    pub from: Option<i64>,
    /// ms; `None` = now.
    pub to: Option<i64>,
    /// 0 = one hour.
    pub interval_seconds: i64,
    /// A property name, or "" for no grouping.
    pub group_by: String,
}

/// One time bucket (of one group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub start: i64,
    pub end: i64,
    pub count: i64,
    pub unique_users: i64,
    pub group: String,
}

enum Command {
    /// An event, and the place it holds in its caller's share of the queue (freed when the
    /// writer takes it).
    Event(EventRecord, Option<Slot>),
    Flush(oneshot::Sender<()>),
}

/// Fair shares of the queue: each credential's `TrackEvent`s in it are counted, and a caller
/// may add one only while it holds no more than the room left free. One caller alone gets about
/// half the queue; k callers filling it as fast as they can settle at about 1/(k+1) each, so
/// there is always room for one more.
struct Shares {
    capacity: usize,
    held: Mutex<(usize, HashMap<i64, usize>)>,
}

impl Shares {
    fn admit(self: &Arc<Self>, key: i64) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let total = held.0;
        let mine = held.1.get(&key).copied().unwrap_or(0);
        if total >= self.capacity || mine > self.capacity - total {
            return None;
        }
        held.0 += 1;
        *held.1.entry(key).or_insert(0) += 1;
        Some(Slot {
            shares: self.clone(),
            key,
        })
    }
}

/// One queued event of a credential.
struct Slot {
    shares: Arc<Shares>,
    key: i64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.shares.held.lock().unwrap_or_else(|p| p.into_inner());
        held.0 = held.0.saturating_sub(1);
        if let Some(n) = held.1.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.1.remove(&self.key);
            }
        }
    }
}

/// The key of a caller's share: users by id, API keys by negated id.
fn share_key(caller: &Caller) -> i64 {
    match caller {
        Caller::User(u) => u.user_id,
        Caller::ApiKey(k) => k.key_id.saturating_neg(),
    }
}

/// The analytics pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Analytics {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Command>,
    shares: Arc<Shares>,
    ids: IdGen,
    db: Db,
    bus: Bus,
    metrics: Arc<Metrics>,
    retention_ms: Option<i64>,
}

impl Analytics {
    /// Starts the writer (and the pruner); the writer's handle ends once the queue is drained
    /// after shutdown.
    pub async fn start(
        db: Db,
        bus: Bus,
        metrics: Arc<Metrics>,
        opts: AnalyticsOptions,
        shutdown: Shutdown,
    ) -> anyhow::Result<(Analytics, JoinHandle<anyhow::Result<()>>)> {
        let node = db.register_analytics_node().await?.rem_euclid(1024);
        let (tx, rx) = mpsc::channel(opts.queue_capacity.max(1));
        let retention_ms = opts
            .retention
            .map(|r| r.as_millis() as i64)
            .filter(|r| *r > 0);
        let inner = Arc::new(Inner {
            tx,
            shares: Arc::new(Shares {
                capacity: opts.queue_capacity.max(1),
                held: Mutex::new((0, HashMap::new())),
            }),
            ids: IdGen::new(node),
            db: db.clone(),
            bus: bus.clone(),
            metrics: metrics.clone(),
            retention_ms,
        });
        let writer = Writer {
            rx,
            db: db.clone(),
            bus,
            metrics,
            batch_max: opts.batch_max.max(1),
        };
        let handle = tokio::spawn(writer.run(shutdown.clone()));
        if let Some(retention) = retention_ms {
            tokio::spawn(prune_loop(db, retention, opts.prune_every, shutdown));
        }
        Ok((Analytics { inner }, handle))
    }

    /// Enqueues one of the server's own events (`login_succeeded`, `message_sent`…) without
    /// waiting; when the queue is full the event is dropped and counted.
    pub fn emit(&self, event_type: &str, user_id: i64, properties: Vec<(String, String)>) {
        let e = EventRecord {
            id: self.inner.ids.next(),
            event_type: event_type.to_string(),
            user_id,
            ts: now_ms(),
            source: "veza".into(),
            properties,
        };
        if self.enqueue(Command::Event(e, None)).is_err() {
            self.inner.metrics.events.dropped.inc();
        }
    }

    /// `TrackEvent`: API keys with `analytics:write`, admins, and any user for their own events.
    /// Returns the event id; the event is written shortly after.
    pub fn track(&self, caller: &Caller, e: NewEvent) -> Result<i64> {
        let user_id = match (caller.user_id(), e.user_id) {
            (_, id) if id < 0 => {
                return Err(DomainError::invalid("user_id", "must not be negative"));
            }
            (Some(me), 0) => me,
            (Some(me), id) if id == me => me,
            (_, id) if caller.has_scope("analytics:write") => id,
            (Some(_), _) => {
                return Err(DomainError::denied("users may only track their own events"));
            }
            (None, _) => {
                return Err(DomainError::denied(
                    "tracking events needs an API key with analytics:write",
                ));
            }
        };
        let event_type = check_name("event_type", &e.event_type)?;
        let source = super::validate::text("source", &e.source, 64)?;
        check_properties(&e.properties)?;
        let now = now_ms();
        let ts = match e.timestamp {
            None => now,
            Some(ts) => {
                let oldest = self.inner.retention_ms.map_or(0, |r| now - r);
                if ts < oldest || ts <= 0 {
                    return Err(DomainError::invalid(
                        "timestamp",
                        "older than the retention period",
                    ));
                }
                if ts > now + MAX_FUTURE_MS {
                    return Err(DomainError::invalid(
                        "timestamp",
                        "more than an hour in the future",
                    ));
                }
                ts
            }
        };
        let id = self.inner.ids.next();
        let record = EventRecord {
            id,
            event_type,
            user_id,
            ts,
            source,
            properties: e.properties,
        };
        let Some(slot) = self.inner.shares.admit(share_key(caller)) else {
            self.inner.metrics.events.rejected.inc();
            return Err(DomainError::ResourceExhausted(
                "this caller's share of the analytics queue is full: retry later".into(),
            ));
        };
        if self.enqueue(Command::Event(record, Some(slot))).is_err() {
            self.inner.metrics.events.rejected.inc();
            return Err(DomainError::ResourceExhausted(
                "analytics ingestion queue is full: retry later".into(),
            ));
        }
        Ok(id)
    }

    fn enqueue(&self, c: Command) -> std::result::Result<(), ()> {
        match self.inner.tx.try_send(c) {
            Ok(()) => {
                self.inner.metrics.events.queued.inc();
                self.inner.metrics.events.queue_depth.inc();
                Ok(())
            }
            Err(_) => Err(()),
        }
    }

    /// Waits until every event enqueued before this call has been written (or given up on).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Command::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// `GetAnalytics`: counts and distinct users per time bucket, optionally per value of one
    /// property. Ungrouped results have every bucket of the range, empty ones included; grouped
    /// results list only the (bucket, group) pairs that have events (events without the
    /// property form the group "").
    pub async fn buckets(&self, caller: &Caller, q: AnalyticsQuery) -> Result<Vec<Bucket>> {
        require_read(caller)?;
        let event_type = check_name("event_type", &q.event_type)?;
        if q.interval_seconds < 0 {
            return Err(DomainError::invalid(
                "interval_seconds",
                "must not be negative",
            ));
        }
        let interval_ms = if q.interval_seconds == 0 {
            3_600_000
        } else {
            q.interval_seconds.saturating_mul(1000)
        };
        let to = q.to.unwrap_or_else(now_ms);
        // Without `from`: the last 24 h, starting on an interval boundary of the clock, so the
        // default hourly query lines up with the per-hour rollup.
        let from = q
            .from
            .unwrap_or_else(|| (to - 86_400_000).div_euclid(interval_ms) * interval_ms);
        if from >= to {
            return Err(DomainError::invalid("from", "must be before to"));
        }
        let span = to - from;
        let n = span / interval_ms + i64::from(span % interval_ms != 0);
        if n > MAX_BUCKETS {
            return Err(DomainError::invalid(
                "interval_seconds",
                format!("the range would have {n} buckets; at most {MAX_BUCKETS}"),
            ));
        }
        let group_by = q.group_by.trim();
        let group_by = if group_by.is_empty() {
            None
        } else {
            Some(check_property_key("group_by", group_by)?)
        };
        let query = BucketQuery {
            event_type: &event_type,
            from,
            to,
            interval_ms,
            group_by: group_by.as_deref(),
        };
        let rows = self.inner.db.event_buckets(&query).await?;
        let bucket = |b: i64, count, unique_users, group| {
            // interval_ms may be as large as i64::MAX: no overflow.
            let start = from.saturating_add(b.saturating_mul(interval_ms));
            Bucket {
                start,
                end: start.saturating_add(interval_ms).min(to),
                count,
                unique_users,
                group,
            }
        };
        if group_by.is_some() {
            return Ok(rows
                .into_iter()
                .map(|r| bucket(r.bucket, r.count, r.unique_users, r.group))
                .collect());
        }
        let mut out: Vec<Bucket> = (0..n).map(|b| bucket(b, 0, 0, String::new())).collect();
        for r in rows {
            if let Some(slot) = usize::try_from(r.bucket).ok().and_then(|i| out.get_mut(i)) {
                slot.count = r.count;
                slot.unique_users = r.unique_users;
            }
        }
        Ok(out)
    }

    /// `StreamEvents`: events as they are written, on any instance, of the given types (all when
    /// empty).
    pub async fn events(
        &self,
        caller: &Caller,
        event_types: Vec<String>,
    ) -> Result<impl Stream<Item = EventRecord> + Send + 'static + use<>> {
        require_read(caller)?;
        if event_types.len() > 100 {
            return Err(DomainError::invalid("event_types", "at most 100 types"));
        }
        let types: std::collections::HashSet<String> = event_types
            .iter()
            .map(|t| check_name("event_types", t))
            .collect::<Result<_>>()?;
        let sub = self
            .inner
            .bus
            .subscribe(SUBJECT)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(sub.flat_map(move |e| {
            let batch = match e {
                BusEvent::Message(m) => serde_json::from_slice::<Vec<EventRecord>>(&m.payload)
                    .unwrap_or_else(|err| {
                        tracing::warn!(error = %err, "ignoring a malformed event batch");
                        vec![]
                    }),
                BusEvent::Lagged(n) => {
                    tracing::warn!(lost = n, "event stream lagged; batches lost");
                    vec![]
                }
            };
            let wanted: Vec<EventRecord> = batch
                .into_iter()
                .filter(|e| types.is_empty() || types.contains(&e.event_type))
                .collect();
            futures::stream::iter(wanted)
        }))
    }

    /// Checks the caller may read analytics and metrics.
    pub fn require_read(&self, caller: &Caller) -> Result<()> {
        require_read(caller)
    }
}

fn require_read(caller: &Caller) -> Result<()> {
    if caller.has_scope("analytics:read") {
        Ok(())
    } else {
        Err(DomainError::denied(
            "reading analytics needs the admin role or an API key with analytics:read",
        ))
    }
}

fn check_name(field: &'static str, name: &str) -> Result<String> {
    let n = name.trim();
    if n.is_empty() || n.len() > 64 {
        return Err(DomainError::invalid(field, "must be 1 to 64 characters"));
    }
    if !n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
    {
        return Err(DomainError::invalid(
            field,
            "may contain only letters, digits, '_', '.', ':' and '-'",
        ));
    }
    Ok(n.to_string())
}

fn check_property_key(field: &'static str, key: &str) -> Result<String> {
    if key.is_empty() || key.len() > 64 || key.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            field,
            "property names are 1 to 64 bytes, no control characters",
        ));
    }
    Ok(key.to_string())
}

fn check_properties(props: &[(String, String)]) -> Result<()> {
    if props.len() > 32 {
        return Err(DomainError::invalid("properties", "at most 32 properties"));
    }
    for (k, v) in props {
        check_property_key("properties", k)?;
        if v.len() > 512 {
            return Err(DomainError::invalid(
                "properties",
                format!("value of {k:?} is longer than 512 bytes"),
            ));
        }
        super::validate::no_control("properties", v)?;
    }
    Ok(())
}

/// Time-ordered ids unique across instances: 41 bits of ms since 2024, 10 bits of node (from the
/// database, unique per start), 12 bits of sequence within the millisecond.
struct IdGen {
    node: i64,
    state: Mutex<(i64, i64)>,
}

impl IdGen {
    fn new(node: i64) -> IdGen {
        IdGen {
            node,
            state: Mutex::new((0, 0)),
        }
    }

    fn next(&self) -> i64 {
        let now = now_ms() - ID_EPOCH_MS;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now > s.0 {
            *s = (now, 0);
        } else {
            s.1 += 1;
            if s.1 >= 4096 {
                *s = (s.0 + 1, 0);
            }
        }
        (s.0 << 22) | (self.node << 12) | s.1
    }
}

/// The first id that could be assigned at `ms`.
fn first_id_at(ms: i64) -> i64 {
    (ms - ID_EPOCH_MS).max(0) << 22
}

struct Writer {
    rx: mpsc::Receiver<Command>,
    db: Db,
    bus: Bus,
    metrics: Arc<Metrics>,
    batch_max: usize,
}

impl Writer {
    async fn run(mut self, mut shutdown: Shutdown) -> anyhow::Result<()> {
        let mut buf = Vec::with_capacity(self.batch_max);
        let mut draining = false;
        loop {
            let n = if draining {
                // After shutdown: take what the last calls enqueue, then stop.
                tokio::time::timeout(
                    Duration::from_millis(200),
                    self.rx.recv_many(&mut buf, self.batch_max),
                )
                .await
                .unwrap_or_default()
            } else {
                tokio::select! {
                    n = self.rx.recv_many(&mut buf, self.batch_max) => n,
                    _ = shutdown.wait() => { draining = true; continue; }
                }
            };
            if n == 0 {
                return Ok(());
            }
            self.metrics.events.queue_depth.set(self.rx.len() as i64);
            let mut events = Vec::with_capacity(buf.len());
            let mut flushes = Vec::new();
            for c in buf.drain(..) {
                match c {
                    Command::Event(e, _share) => events.push(e),
                    Command::Flush(ack) => flushes.push(ack),
                }
            }
            if !events.is_empty() {
                self.write(&events).await;
            }
            for ack in flushes {
                let _ = ack.send(());
            }
        }
    }

    async fn write(&self, events: &[EventRecord]) {
        let mut delay = Duration::from_millis(50);
        for attempt in 1.. {
            match self.db.insert_events_isolating(events).await {
                Ok(refused) if refused.is_empty() => {
                    self.metrics.events.written.inc_by(events.len() as u64);
                    self.publish(events).await;
                    return;
                }
                Ok(refused) => {
                    // Acknowledged already: only the refused rows are lost, each logged.
                    let kept: Vec<EventRecord> = events
                        .iter()
                        .filter(|e| !refused.contains(&e.id))
                        .cloned()
                        .collect();
                    self.metrics.events.failed.inc_by(refused.len() as u64);
                    self.metrics.events.written.inc_by(kept.len() as u64);
                    self.publish(&kept).await;
                    return;
                }
                Err(e) if attempt < 8 => {
                    tracing::warn!(error = %e, attempt, events = events.len(), "writing analytics events failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(error = %e, events = events.len(), "writing analytics events failed; dropping the batch");
                    self.metrics.events.failed.inc_by(events.len() as u64);
                    return;
                }
            }
        }
    }

    async fn publish(&self, events: &[EventRecord]) {
        for chunk in events.chunks(PUBLISH_CHUNK) {
            match serde_json::to_vec(chunk) {
                Ok(payload) => {
                    if let Err(e) = self.bus.publish(SUBJECT.into(), payload.into()).await {
                        tracing::warn!(error = %e, "publishing analytics events");
                    }
                }
                Err(e) => tracing::error!(error = %e, "encoding analytics events"),
            }
        }
    }
}

async fn prune_loop(db: Db, retention_ms: i64, every: Duration, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        let before = first_id_at(now_ms() - retention_ms);
        let mut pruned = 0;
        loop {
            match db.prune_events(before, 10_000).await {
                Ok(0) => break,
                Ok(n) => pruned += n,
                Err(e) => {
                    tracing::warn!(error = %e, "pruning analytics events");
                    break;
                }
            }
            if shutdown.is_triggered() {
                return;
            }
        }
        if pruned > 0 {
            tracing::info!(pruned, "pruned analytics events past retention");
        }
        // The rollup of the hours wholly before the retention period.
        let before_hour = (now_ms() - retention_ms).div_euclid(3_600_000);
        if let Err(e) = db.prune_rollup(before_hour).await {
            tracing::warn!(error = %e, "pruning the analytics rollup");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_grow_and_carry_the_node() {
        let g = IdGen::new(5);
        let mut last = 0;
        for _ in 0..10_000 {
            let id = g.next();
            assert!(id > last);
            assert_eq!((id >> 12) & 1023, 5);
            last = id;
        }
        assert!(first_id_at(now_ms() + 10_000) > last);
    }
}
