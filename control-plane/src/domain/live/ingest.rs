//! The producer side of a live stream: chunks from `UploadAudioChunks` are encoded once (PCM) or
//! checked and passed through (Opus) into Ogg pages, broadcast locally, relayed to the other
//! instances and, with `record`, appended to the recording. A producer that goes away may come
//! back within the grace period and continue the same stream.

use std::{
    io::Write,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use veza_media_core::{AudioChunk, LiveEncoder, LiveInput, LiveOptions as EncoderOptions, Tags};
use veza_storage::MediaRecord;

use super::{
    DomainError, Live, Result,
    channel::{Channel, Page},
    lock,
};
use crate::{bus::Bus, caller::Caller, domain::media::MAX_CHUNK_BYTES};

/// Pre-skip written in the header of Opus input (libopus's encoder delay at 48 kHz).
const OPUS_INPUT_PRE_SKIP: u16 = 312;

/// How often a producer's instance refreshes its stream's heartbeat in the database. The reaper
/// ends a stream whose heartbeat is [`STALE_MARGIN`] older than the grace, so three beats may be
/// missed; each beat is a database write, so it is not more often (docs/ARCHITECTURE.md).
pub(super) const HEARTBEAT: Duration = Duration::from_secs(10);

/// How much older than the grace a heartbeat must be before its stream counts as orphaned.
pub(super) const STALE_MARGIN: Duration = Duration::from_secs(30);

/// The subject that asks the ingesting instance to stop stream `id`.
pub fn control_subject(id: i64) -> String {
    format!("veza.live.{id}.control")
}

/// A live stream's input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputCodec {
    Pcm { rate: u32, channels: u16 },
    Opus { rate: u32, channels: u16 },
}

impl InputCodec {
    /// Checks `StartStream`'s codec, rate and channels.
    pub fn parse(codec: &str, rate: i32, channels: i32) -> Result<InputCodec> {
        let codec = codec.trim().to_ascii_lowercase();
        let ch = u16::try_from(channels).unwrap_or(0);
        let r = u32::try_from(rate).unwrap_or(0);
        match codec.as_str() {
            "pcm_s16le" | "pcm" => {
                if !(8000..=192_000).contains(&r) {
                    return Err(DomainError::invalid(
                        "sample_rate",
                        format!("{rate} Hz: pcm_s16le input takes 8000–192000 Hz"),
                    ));
                }
                if !(1..=8).contains(&ch) {
                    return Err(DomainError::invalid("channels", "must be 1–8"));
                }
                Ok(InputCodec::Pcm {
                    rate: r,
                    channels: ch,
                })
            }
            "opus" => {
                if ![8000, 12000, 16000, 24000, 48000].contains(&r) {
                    return Err(DomainError::invalid(
                        "sample_rate",
                        format!("{rate} Hz: Opus input is 8000, 12000, 16000, 24000 or 48000 Hz"),
                    ));
                }
                if !(1..=2).contains(&ch) {
                    return Err(DomainError::invalid(
                        "channels",
                        "Opus input is mono or stereo",
                    ));
                }
                Ok(InputCodec::Opus {
                    rate: r,
                    channels: ch,
                })
            }
            other => Err(DomainError::invalid(
                "codec",
                format!("{other:?}: use \"pcm_s16le\" or \"opus\""),
            )),
        }
    }

    /// The stored name.
    pub fn name(&self) -> &'static str {
        match self {
            InputCodec::Pcm { .. } => "pcm_s16le",
            InputCodec::Opus { .. } => "opus",
        }
    }

    fn rate(&self) -> u32 {
        match *self {
            InputCodec::Pcm { rate, .. } => rate,
            // Opus packets always count samples at 48 kHz.
            InputCodec::Opus { .. } => 48_000,
        }
    }

    fn declared(&self) -> (u32, u16) {
        match *self {
            InputCodec::Pcm { rate, channels } | InputCodec::Opus { rate, channels } => {
                (rate, channels)
            }
        }
    }
}

/// What an Icecast source carries, as its first audio shows (SPEC §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceCodec {
    /// Ogg Opus: its packets pass through.
    Opus { channels: u16, pre_skip: u16 },
    /// Anything else, decoded to pcm_s16le.
    Pcm { rate: u32, channels: u16 },
}

impl SourceCodec {
    fn input(self) -> InputCodec {
        match self {
            SourceCodec::Opus { channels, .. } => InputCodec::Opus {
                rate: 48_000,
                channels,
            },
            SourceCodec::Pcm { rate, channels } => InputCodec::Pcm { rate, channels },
        }
    }

    fn pre_skip(self) -> u16 {
        match self {
            SourceCodec::Opus { pre_skip, .. } => pre_skip,
            SourceCodec::Pcm { .. } => OPUS_INPUT_PRE_SKIP,
        }
    }
}

/// One chunk from the producer.
#[derive(Debug, Clone)]
pub struct LiveChunk {
    pub stream_id: i64,
    pub data: Bytes,
    /// What the chunk says it is; empty / 0 = as declared by `StartStream`.
    pub codec: String,
    pub sample_rate: i32,
    pub channels: i32,
}

/// The ingest state of a stream whose producer is (or was, within the grace) on this instance.
pub struct Producer {
    id: i64,
    codec: InputCodec,
    channel: Arc<Channel>,
    headers: Bytes,
    work: tokio::sync::Mutex<Work>,
    epoch: AtomicU64,
    attached: AtomicBool,
    ended: AtomicBool,
}

struct Work {
    encoder: Option<LiveEncoder>,
    record: Option<(PathBuf, std::fs::File)>,
    /// Input samples per channel, at the input's rate.
    samples: u64,
}

impl Live {
    /// Ingests a producer's chunks into live stream `first.stream_id` until the producer closes,
    /// breaks, is replaced, or the stream is stopped.
    pub async fn publish<S>(&self, who: &Caller, first: LiveChunk, rest: S) -> Result<MediaRecord>
    where
        S: Stream<Item = Result<LiveChunk>> + Unpin + Send,
    {
        let id = first.stream_id;
        let m = self.live_record(who, id, Some("stream:publish")).await?;
        if !(who.may_act_for(m.owner_id) || who.has_scope("stream:publish")) {
            return Err(DomainError::denied(
                "only the stream's owner (or an API key with stream:publish) may publish to it",
            ));
        }
        let p = self.producer_for(&m, None).await?;
        self.run_producer(&p, Some(first), rest).await?;
        Ok(m)
    }

    /// Checks an Icecast source's password for live stream `id` (SPEC §12): `NOT_FOUND` unless
    /// it is on air, `UNAUTHENTICATED` for a wrong key, `ALREADY_EXISTS` while a source is on.
    pub async fn source_login(&self, id: i64, key: &str) -> Result<MediaRecord> {
        let m = self.on_air_row(id).await?;
        let hash = self.inner.db.stream_key_hash(id).await?;
        if hash.is_empty() || hash != crate::auth::secrets::hash_secret(key) {
            return Err(DomainError::Unauthenticated(
                "wrong source password for this stream".into(),
            ));
        }
        if self.source_connected(id) {
            return Err(DomainError::AlreadyExists {
                field: format!("a source of live stream {id}"),
            });
        }
        Ok(m)
    }

    /// Whether a producer is feeding stream `id` on this instance now.
    fn source_connected(&self, id: i64) -> bool {
        self.producer(id)
            .is_some_and(|p| p.attached.load(Ordering::SeqCst))
    }

    /// Ingests an Icecast source into stream `m`: `codec` is what its first audio turned out
    /// to be, and a source returning within the grace must send the same.
    pub async fn publish_source<S>(
        &self,
        m: &MediaRecord,
        codec: SourceCodec,
        audio: S,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Bytes>> + Unpin + Send,
    {
        let p = self.producer_for(m, Some(codec)).await?;
        if p.codec != codec.input() {
            return Err(DomainError::FailedPrecondition(format!(
                "live stream {} goes on in {:?}: a returning source must send the same",
                m.id, p.codec
            )));
        }
        if self.source_connected(m.id) {
            return Err(DomainError::AlreadyExists {
                field: format!("a source of live stream {}", m.id),
            });
        }
        let id = m.id;
        let chunks = audio.map(move |r| {
            r.map(|data| LiveChunk {
                stream_id: id,
                data,
                codec: String::new(),
                sample_rate: 0,
                channels: 0,
            })
        });
        self.run_producer(&p, None, chunks).await
    }

    /// Feeds producer `p` with `first` and `rest` until they end, break, another producer
    /// takes over, or the stream is stopped; then the grace period starts.
    async fn run_producer<S>(
        &self,
        p: &Arc<Producer>,
        first: Option<LiveChunk>,
        mut rest: S,
    ) -> Result<()>
    where
        S: Stream<Item = Result<LiveChunk>> + Unpin + Send,
    {
        let id = p.id;
        let epoch = p.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        p.attached.store(true, Ordering::SeqCst);
        let mut next = first.map(Ok);
        let outcome = loop {
            let item = match next.take() {
                Some(i) => Some(i),
                None => rest.next().await,
            };
            let c = match item {
                Some(Ok(c)) => c,
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            };
            if p.ended.load(Ordering::SeqCst) {
                break Ok(());
            }
            if p.epoch.load(Ordering::SeqCst) != epoch {
                return Err(DomainError::FailedPrecondition(format!(
                    "another producer took over live stream {id}"
                )));
            }
            if let Err(e) = self.ingest_chunk(p, c).await {
                break Err(e);
            }
        };
        if p.epoch.load(Ordering::SeqCst) == epoch && !p.ended.load(Ordering::SeqCst) {
            p.attached.store(false, Ordering::SeqCst);
            self.start_grace(p.clone(), epoch);
        }
        outcome
    }

    /// Checks, encodes and broadcasts one chunk.
    async fn ingest_chunk(&self, p: &Producer, c: LiveChunk) -> Result<()> {
        check_chunk(p, &c)?;
        if c.data.is_empty() {
            return Ok(());
        }
        let arrived_us = now_us();
        p.channel
            .input_bytes
            .fetch_add(c.data.len() as u64, Ordering::Relaxed);
        let mut w = p.work.lock().await;
        let pages = if matches!(p.codec, InputCodec::Opus { .. }) && w.record.is_none() {
            // Passing Opus through is a few µs of muxing, done in place: only encoding or a
            // recording's file writes are worth a blocking thread (and its two wake-ups).
            let Some(enc) = w.encoder.as_mut() else {
                return Ok(());
            };
            let pages = enc.push_opus_packet(&c.data);
            w.samples = enc.frames_in();
            pages
        } else {
            let Some((samples, pages)) = off_runtime(&mut w, p.codec, c.data).await? else {
                return Ok(());
            };
            w.samples = samples;
            pages
        };
        let pages = pages.map_err(|e| DomainError::invalid("audio_data", e.to_string()))?;
        drop(w);
        self.broadcast(p, pages, arrived_us).await;
        Ok(())
    }

    async fn broadcast(&self, p: &Producer, pages: Vec<AudioChunk>, arrived_us: i64) {
        for c in pages {
            let page = Arc::new(Page::new(
                c.index,
                c.timestamp_ms,
                c.channels,
                c.data,
                arrived_us,
            ));
            p.channel.publish(page.clone());
            self.relay_page(p.id, &p.headers, &page).await;
        }
    }

    /// The producer state of stream `m`, created (with its encoder, channel and recording) when
    /// this instance has none.
    async fn producer_for(
        &self,
        m: &MediaRecord,
        source: Option<SourceCodec>,
    ) -> Result<Arc<Producer>> {
        if let Some(p) = self.producer(m.id) {
            return Ok(p);
        }
        let (codec, pre_skip) = match source {
            Some(s) => (s.input(), s.pre_skip()),
            None => (
                InputCodec::parse(&m.source_codec, m.sample_rate as i32, m.channels as i32)?,
                OPUS_INPUT_PRE_SKIP,
            ),
        };
        let record = if self.inner.db.live_record(m.id).await? {
            let path = self.inner.opts.tmp_dir.join(format!("live-{}.opus", m.id));
            let file = std::fs::File::create(&path).map_err(|e| DomainError::Internal(e.into()))?;
            Some((path, file))
        } else {
            None
        };
        let enc = new_encoder(codec, pre_skip, &self.inner.opts, m)?;
        let headers = enc.headers();
        let mut record = record;
        if let Some((_, f)) = &mut record
            && let Err(e) = f.write_all(&headers)
        {
            tracing::warn!(stream_id = m.id, error = %e, "live recording: writing headers");
        }
        let (channel, _) = self.channel_entry(m.id);
        let p = {
            let mut producers = lock(&self.inner.producers);
            if let Some(p) = producers.get(&m.id) {
                return Ok(p.clone());
            }
            let p = Arc::new(Producer {
                id: m.id,
                codec,
                channel: channel.clone(),
                headers: headers.clone(),
                work: tokio::sync::Mutex::new(Work {
                    encoder: Some(enc),
                    record,
                    samples: 0,
                }),
                epoch: AtomicU64::new(0),
                attached: AtomicBool::new(false),
                ended: AtomicBool::new(false),
            });
            producers.insert(m.id, p.clone());
            p
        };
        channel.set_headers(Page::new(0, 0, codec_channels(codec), headers, now_us()));
        let live = self.clone();
        let watched = p.clone();
        tokio::spawn(async move { live.watch_producer(watched).await });
        Ok(p)
    }

    /// While the producer's state lives: refreshes the heartbeat (every [`HEARTBEAT`]) and obeys
    /// stop requests that other instances relay.
    async fn watch_producer(&self, p: Arc<Producer>) {
        let mut control = match self.inner.bus {
            Bus::Nats(_) => self.inner.bus.subscribe(&control_subject(p.id)).await.ok(),
            Bus::Local(_) => None,
        };
        let mut beat = tokio::time::interval(HEARTBEAT);
        while !p.ended.load(Ordering::SeqCst) {
            tokio::select! {
                _ = beat.tick() => {
                    let _ = self.inner.db.touch_live(p.id).await;
                }
                Some(_) = async { match control.as_mut() { Some(c) => c.next().await, None => None } } => {
                    if let Err(e) = self.finish(p.id).await {
                        tracing::warn!(stream_id = p.id, error = %e, "stopping a live stream");
                    }
                }
            }
        }
    }

    /// Ends the stream when the producer has not come back within the grace period.
    fn start_grace(&self, p: Arc<Producer>, epoch: u64) {
        let live = self.clone();
        let grace = self.inner.opts.grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let gone = p.epoch.load(Ordering::SeqCst) == epoch
                && !p.attached.load(Ordering::SeqCst)
                && !p.ended.load(Ordering::SeqCst);
            if gone {
                tracing::info!(stream_id = p.id, "live producer did not come back: ending");
                if let Err(e) = live.finish(p.id).await {
                    tracing::warn!(stream_id = p.id, error = %e, "ending a live stream");
                }
            }
        });
    }

    /// Ends a stream this instance ingests: flushes the encoder (EOS page), ends every listener,
    /// and stores the recording as a track to process.
    pub(super) async fn finish(&self, id: i64) -> Result<()> {
        let Some(p) = lock(&self.inner.producers).remove(&id) else {
            return Ok(());
        };
        p.ended.store(true, Ordering::SeqCst);
        let mut w = p.work.lock().await;
        let tail = match w.encoder.take() {
            Some(enc) => tokio::task::spawn_blocking(move || enc.finish())
                .await
                .map_err(|e| DomainError::Internal(e.into()))?
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let record = w.record.take().map(|(path, mut f)| {
            write_pages(&mut f, &tail);
            let _ = f.sync_all();
            path
        });
        let duration_ms = (w.samples * 1000 / u64::from(p.codec.rate())) as i64;
        drop(w);
        // The row leaves `live` first, so a listener that sees the end finds the stream ended.
        let recorded = record.is_some();
        let won = self.inner.db.end_live(id, recorded, duration_ms).await;
        self.broadcast(&p, tail, now_us()).await;
        p.channel.end();
        self.relay_end(id).await;
        {
            let mut channels = lock(&self.inner.channels);
            if channels
                .get(&id)
                .is_some_and(|c| Arc::ptr_eq(c, &p.channel))
            {
                channels.remove(&id);
            }
        }
        if won? {
            if let Some(path) = record {
                self.inner.media.adopt_recording(id, path).await?;
            }
            self.inner.analytics.emit(
                "live_ended",
                0,
                vec![
                    ("stream_id".into(), id.to_string()),
                    ("duration_ms".into(), duration_ms.to_string()),
                    ("recorded".into(), recorded.to_string()),
                ],
            );
        }
        tracing::info!(stream_id = id, duration_ms, recorded, "live stream ended");
        Ok(())
    }
}

/// Encodes (and records) `data` on a blocking thread, the encoder and file lent to it; the
/// input samples so far and the pages, `None` once the encoder is gone (the stream ended).
async fn off_runtime(
    w: &mut Work,
    codec: InputCodec,
    data: Bytes,
) -> Result<Option<(u64, veza_media_core::Result<Vec<AudioChunk>>)>> {
    let Some(mut enc) = w.encoder.take() else {
        return Ok(None);
    };
    let mut record = w.record.take();
    let work = move || {
        let pages = match codec {
            InputCodec::Pcm { .. } => enc.push_pcm(&data),
            InputCodec::Opus { .. } => enc.push_opus_packet(&data),
        };
        if let (Ok(pages), Some((_, f))) = (pages.as_ref(), record.as_mut()) {
            write_pages(f, pages);
        }
        (enc, record, pages)
    };
    let (enc, record, pages) = tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| DomainError::Internal(e.into()))?;
    let samples = enc.frames_in();
    w.encoder = Some(enc);
    w.record = record;
    Ok(Some((samples, pages)))
}

fn check_chunk(p: &Producer, c: &LiveChunk) -> Result<()> {
    if c.stream_id != p.id {
        return Err(DomainError::invalid(
            "stream_id",
            format!("every chunk must carry stream_id {}", p.id),
        ));
    }
    if c.data.len() > MAX_CHUNK_BYTES {
        return Err(DomainError::ResourceExhausted(format!(
            "a chunk carries at most {MAX_CHUNK_BYTES} bytes"
        )));
    }
    let (rate, channels) = p.codec.declared();
    let codec = c.codec.trim().to_ascii_lowercase();
    if !codec.is_empty()
        && codec != p.codec.name()
        && !(codec == "pcm" && p.codec.name() == "pcm_s16le")
    {
        return Err(DomainError::invalid(
            "codec",
            format!("{codec:?}: this stream takes {}", p.codec.name()),
        ));
    }
    if c.sample_rate != 0 && c.sample_rate as i64 != i64::from(rate) {
        return Err(DomainError::invalid(
            "sample_rate",
            format!("{} Hz: this stream takes {rate} Hz", c.sample_rate),
        ));
    }
    if c.channels != 0 && c.channels as i64 != i64::from(channels) {
        return Err(DomainError::invalid(
            "channels",
            format!("{}: this stream takes {channels}", c.channels),
        ));
    }
    Ok(())
}

fn new_encoder(
    codec: InputCodec,
    pre_skip: u16,
    o: &super::LiveOptions,
    m: &MediaRecord,
) -> Result<LiveEncoder> {
    let input = match codec {
        InputCodec::Pcm { rate, channels } => LiveInput::PcmS16le {
            sample_rate: rate,
            channels,
        },
        InputCodec::Opus { channels, .. } => LiveInput::Opus { channels, pre_skip },
    };
    let opts = EncoderOptions {
        bitrate_kbps: o.bitrate_kbps,
        page_ms: o.chunk_ms,
        tags: Tags {
            title: Some(m.title.clone()),
            ..Tags::default()
        },
        ..EncoderOptions::default()
    };
    LiveEncoder::new(input, &opts).map_err(|e| DomainError::invalid("codec", e.to_string()))
}

fn codec_channels(c: InputCodec) -> u16 {
    match c {
        InputCodec::Pcm { channels, .. } => channels.min(2),
        InputCodec::Opus { channels, .. } => channels,
    }
}

fn write_pages(f: &mut std::fs::File, pages: &[AudioChunk]) {
    for p in pages {
        if let Err(e) = f.write_all(&p.data) {
            tracing::warn!(error = %e, "live recording: writing a page");
            return;
        }
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
