//! Live streams (SPEC §6): `StartStream`/`StopStream`, ingest of a producer's audio from
//! `UploadAudioChunks`, fan-out of the same encoded pages to every `StreamAudio` listener, the
//! relay between instances, listener presence and `StreamAnalytics`. See docs/ARCHITECTURE.md,
//! "Live streams".

mod channel;
mod fanout;
mod guard;
mod ingest;
mod listen;
mod presence;
mod relay;
mod stats;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use veza_storage::{Db, MediaRecord, NewLive};

pub use channel::Page;
pub use fanout::{Attached, Pushed, Sink};
pub use ingest::{LiveChunk, SourceCodec};
pub use listen::{Admitted, ListenRequest, LiveFeed};
pub use stats::{LiveStats, StatsFeed};

use super::{
    Analytics, Media,
    error::{DomainError, Result},
};
use crate::{bus::Bus, caller::Caller, metrics::Metrics, shutdown::Shutdown};

/// Settings of live streaming.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Audio per page (and chunk) in ms.
    pub chunk_ms: u32,
    /// Recent audio a joining listener gets at once, in ms.
    pub burst_ms: u32,
    /// How far (ms) a listener may fall behind before it skips to the live edge.
    pub max_lag_ms: u32,
    /// How long a stream waits for its producer to come back.
    pub grace: Duration,
    /// Listener caps (0 = none): per stream over all instances, and per instance.
    pub max_listeners_per_stream: usize,
    pub max_listeners: usize,
    /// Opus bitrate for PCM input, in kbps.
    pub bitrate_kbps: u32,
    /// Threads writing pages to direct listeners.
    pub writers: usize,
    /// Where recordings are written while live.
    pub tmp_dir: PathBuf,
}

/// What `StartStream` asks for.
#[derive(Debug, Clone, Default)]
pub struct StartLive {
    pub title: String,
    pub description: String,
    pub sample_rate: i32,
    pub channels: i32,
    pub codec: String,
    pub record: bool,
    pub is_private: bool,
}

/// A live stream just started, with its source password (shown once, stored hashed).
pub struct Started {
    pub record: MediaRecord,
    pub stream_key: String,
}

/// The live domain; cheap to clone.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    bus: Bus,
    media: Media,
    analytics: Analytics,
    metrics: Arc<Metrics>,
    opts: LiveOptions,
    instance: [u8; relay::INSTANCE_LEN],
    channels: Mutex<HashMap<i64, Arc<channel::Channel>>>,
    producers: Mutex<HashMap<i64, Arc<ingest::Producer>>>,
    remote: presence::Remote,
    /// Live listeners on this instance, all streams.
    listeners: AtomicUsize,
    fanouts: Arc<fanout::Fanouts>,
    shutdown: Shutdown,
}

impl Live {
    /// Starts the live domain and its background tasks (presence, reaper of dead streams).
    pub fn start(
        db: Db,
        bus: Bus,
        media: Media,
        analytics: Analytics,
        metrics: Arc<Metrics>,
        opts: LiveOptions,
        shutdown: Shutdown,
    ) -> anyhow::Result<Live> {
        std::fs::create_dir_all(&opts.tmp_dir)?;
        let fanouts = Arc::new(fanout::Fanouts::new(metrics.clone(), opts.writers));
        let live = Live {
            inner: Arc::new(Inner {
                db,
                bus,
                media,
                analytics,
                metrics,
                opts,
                instance: crate::auth::secrets::random_bytes::<{ relay::INSTANCE_LEN }>(),
                channels: Mutex::new(HashMap::new()),
                producers: Mutex::new(HashMap::new()),
                remote: presence::Remote::default(),
                listeners: AtomicUsize::new(0),
                fanouts,
                shutdown,
            }),
        };
        let l = live.clone();
        tokio::spawn(async move { l.run_presence().await });
        let l = live.clone();
        tokio::spawn(async move { l.run_reaper().await });
        let l = live.clone();
        tokio::spawn(async move { l.end_feeds_on_shutdown().await });
        Ok(live)
    }

    /// Creates a live stream owned by the calling user.
    pub async fn start_stream(&self, who: &Caller, s: StartLive) -> Result<Started> {
        let Some(owner) = who.user_id() else {
            return Err(DomainError::denied(
                "a live stream is owned by a user: start it with a user's token",
            ));
        };
        let title = s.title.trim();
        super::media::check_len("title", title, 1, 200, false)?;
        super::media::check_len("description", &s.description, 0, 5000, true)?;
        let codec = ingest::InputCodec::parse(&s.codec, s.sample_rate, s.channels)?;
        let _quota = self.inner.media.check_live_quota(owner).await?;
        let stream_key = crate::auth::secrets::random_token();
        let m = self
            .inner
            .db
            .create_live(&NewLive {
                owner_id: owner,
                title,
                description: &s.description,
                codec: codec.name(),
                sample_rate: i64::from(s.sample_rate),
                channels: i64::from(s.channels),
                record: s.record,
                is_private: s.is_private,
                stream_key_hash: &crate::auth::secrets::hash_secret(&stream_key),
            })
            .await?;
        self.inner.analytics.emit(
            "live_started",
            owner,
            vec![
                ("stream_id".into(), m.id.to_string()),
                ("codec".into(), codec.name().into()),
                ("record".into(), s.record.to_string()),
            ],
        );
        Ok(Started {
            record: m,
            stream_key,
        })
    }

    /// Ends live stream `id` (owner or admin); returns the track id when it was recorded.
    pub async fn stop_stream(&self, who: &Caller, id: i64) -> Result<Option<i64>> {
        let m = self.live_record(who, id, None).await?;
        if !who.may_act_for(m.owner_id) {
            return Err(DomainError::denied(
                "only the stream's owner or an admin may stop it",
            ));
        }
        let recorded = self.inner.db.live_record(id).await?;
        if self.producer(id).is_some() {
            self.finish(id).await?;
        } else {
            self.stop_remote(id).await?;
        }
        Ok(recorded.then_some(id))
    }

    /// Listeners of media `id` now (a live stream's, or a track's on-demand ones), over every
    /// instance.
    pub fn listeners_total(&self, id: i64) -> u64 {
        let local = self
            .channel(id)
            .map_or(0, |c| c.listeners.load(Ordering::Relaxed) as u64)
            + self.inner.media.local_listeners(id) as u64;
        local
            + self
                .inner
                .remote
                .of(id)
                .iter()
                .map(|a| a.listeners)
                .sum::<u64>()
    }

    /// A media row that must be a live stream still on air. Private media of others do not
    /// exist for `who` (`NOT_FOUND`, before any other answer could reveal them) unless it holds
    /// `scope`.
    async fn live_record(&self, who: &Caller, id: i64, scope: Option<&str>) -> Result<MediaRecord> {
        let m = self.visible_record(who, id, scope).await?;
        on_air(&m)?;
        Ok(m)
    }

    /// Media row `id`, or `NOT_FOUND`.
    async fn row(&self, id: i64) -> Result<MediaRecord> {
        self.inner
            .db
            .media(id)
            .await?
            .ok_or_else(|| DomainError::not_found("live stream", id))
    }

    /// Media row `id` if it is a live stream on air (for the HTTP edge's callers, who hold no
    /// token: a listener or a source).
    async fn on_air_row(&self, id: i64) -> Result<MediaRecord> {
        let m = self.row(id).await?;
        on_air(&m)?;
        Ok(m)
    }

    /// Media `id` (track or live) as `who` may see it: a private one is `NOT_FOUND` except to
    /// its owner, admins and API keys with `scope`.
    async fn visible_record(
        &self,
        who: &Caller,
        id: i64,
        scope: Option<&str>,
    ) -> Result<MediaRecord> {
        let m = self.row(id).await?;
        if m.is_private && !who.may_act_for(m.owner_id) && !scope.is_some_and(|s| who.has_scope(s))
        {
            return Err(DomainError::not_found("live stream", id));
        }
        Ok(m)
    }

    /// Stops a stream whose producer is on another instance (or nowhere): asks its instance,
    /// then ends it here if nobody did.
    async fn stop_remote(&self, id: i64) -> Result<()> {
        if let Bus::Nats(_) = self.inner.bus {
            let _ = self
                .inner
                .bus
                .publish(
                    ingest::control_subject(id),
                    bytes::Bytes::from_static(b"stop"),
                )
                .await;
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                match self.inner.db.media(id).await? {
                    Some(m) if m.status == "live" => {}
                    _ => return Ok(()),
                }
            }
        }
        self.end_orphan(id).await
    }

    /// Ends a stream no producer holds: no recording is possible.
    async fn end_orphan(&self, id: i64) -> Result<()> {
        if self.inner.db.end_live(id, false, 0).await? {
            self.relay_end(id).await;
            if let Some(c) = self.channel(id) {
                c.end();
            }
            self.forget_channel(id);
            tracing::info!(stream_id = id, "live stream ended without its producer");
        }
        Ok(())
    }

    /// On shutdown, ends every listener's feed here (the edge reports `UNAVAILABLE`); the
    /// streams stay live in the database for their producers to come back after a restart.
    async fn end_feeds_on_shutdown(&self) {
        let mut shutdown = self.inner.shutdown.clone();
        shutdown.wait().await;
        for c in self.local_channels() {
            c.end();
        }
    }

    /// Ends the streams whose producer vanished with its instance (no heartbeat).
    async fn run_reaper(&self) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        let stale = self.inner.opts.grace + ingest::STALE_MARGIN;
        let mut shutdown = self.inner.shutdown.clone();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait() => return,
            }
            let before = veza_storage::now_ms() - stale.as_millis() as i64;
            let Ok(ids) = self.inner.db.stale_live(before).await else {
                continue;
            };
            for id in ids {
                if self.producer(id).is_none() {
                    let _ = self.end_orphan(id).await;
                }
            }
        }
    }

    fn channel(&self, id: i64) -> Option<Arc<channel::Channel>> {
        lock(&self.inner.channels).get(&id).cloned()
    }

    /// The local channel of stream `id`, created if needed (`true` when new).
    fn channel_entry(&self, id: i64) -> (Arc<channel::Channel>, bool) {
        let mut m = lock(&self.inner.channels);
        if let Some(c) = m.get(&id) {
            return (c.clone(), false);
        }
        let o = &self.inner.opts;
        let lag_pages = (o.max_lag_ms / o.chunk_ms.max(1)) as usize + 1;
        let c = Arc::new(channel::Channel::new(id, u64::from(o.burst_ms), lag_pages));
        m.insert(id, c.clone());
        (c, true)
    }

    fn local_channels(&self) -> Vec<Arc<channel::Channel>> {
        lock(&self.inner.channels).values().cloned().collect()
    }

    fn forget_channel(&self, id: i64) {
        lock(&self.inner.channels).remove(&id);
    }

    /// Removes a relay-fed channel once unused (never the one a local producer feeds).
    fn drop_channel(&self, c: &Arc<channel::Channel>) {
        if self.is_ingesting(c.id) {
            return;
        }
        let mut m = lock(&self.inner.channels);
        if m.get(&c.id).is_some_and(|x| Arc::ptr_eq(x, c)) {
            m.remove(&c.id);
        }
    }

    fn idle_remote(&self, c: &channel::Channel) -> bool {
        c.listeners.load(Ordering::Relaxed) == 0 && !self.is_ingesting(c.id)
    }

    fn producer(&self, id: i64) -> Option<Arc<ingest::Producer>> {
        lock(&self.inner.producers).get(&id).cloned()
    }

    fn is_ingesting(&self, id: i64) -> bool {
        lock(&self.inner.producers).contains_key(&id)
    }

    /// The instance's metrics (the edges count the paths their listeners take).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn instance_hex(&self) -> String {
        hex::encode(self.inner.instance)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `FAILED_PRECONDITION` unless `m` is a live stream on air.
fn on_air(m: &MediaRecord) -> Result<()> {
    let id = m.id;
    if m.kind != "live" {
        return Err(DomainError::FailedPrecondition(format!(
            "media {id} is a track, not a live stream"
        )));
    }
    if m.status != "live" {
        return Err(DomainError::FailedPrecondition(format!(
            "live stream {id} has {}",
            m.status
        )));
    }
    Ok(())
}
