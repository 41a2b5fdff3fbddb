//! Full ingest in one pass: decode → waveform → resample → N Opus renditions → Ogg + seek index.
//!
//! [`ingest`] returns the outputs in memory; [`ingest_to`] streams them to writers as they are
//! produced, so its memory is bounded whatever the input's length. [`Limits`] bound the decoded
//! duration and the time spent, and let the caller cancel.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use crate::decode::Decoder;
use crate::encode::{DEFAULT_COMPLEXITY, EncoderSettings, OpusEncoder};
use crate::error::{MediaError, Result};
use crate::index::SeekIndex;
use crate::meta::{ProbeInfo, Tags};
use crate::mux::OggOpusMuxer;
use crate::pool::LanePool;
use crate::resample::{INGEST_CHUNK, Resampler};
use crate::source::Source;
use crate::waveform::{Waveform, WaveformBuilder, WaveformOptions};

/// 48 kHz frames handed to the encoders at a time.
const BATCH_FRAMES: usize = 24_000;
/// Batches queued per rendition (bounds memory).
const QUEUE: usize = 4;

/// What to produce from a source.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Rendition bitrates in kbps (default 32, 64, 128).
    pub bitrates_kbps: Vec<u32>,
    /// libopus complexity 0–10 (default 10, as ffmpeg).
    pub complexity: i32,
    /// Audio per Ogg page in ms (default 200): the granularity of seeking and chunking.
    pub page_ms: u32,
    pub waveform: WaveformOptions,
    /// Encode renditions on their own threads (default true).
    pub parallel: bool,
    /// Also keep the 48 kHz audio as interleaved pcm_s16le (default false).
    pub keep_pcm: bool,
    /// Duration, time and cancellation bounds (none by default).
    pub limits: Limits,
}

/// Bounds on one ingest; each is checked between decoded blocks.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// Refuse audio longer than this: at once when the header says so, else as soon as the
    /// decoded audio passes it ([`MediaError::TooLong`]).
    pub max_duration: Option<Duration>,
    /// Give up once this instant has passed ([`MediaError::Deadline`]).
    pub deadline: Option<Instant>,
    /// Give up once this flag is set ([`MediaError::Cancelled`]).
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Limits {
    /// Fails when the header's duration is over the limit.
    pub fn check_header(&self, probe: &ProbeInfo) -> Result<()> {
        match self.max_duration {
            Some(max) if u128::from(probe.duration_ms) > max.as_millis() => Err(too_long(max)),
            _ => Ok(()),
        }
    }

    /// Most source frames at `rate` that the duration limit allows.
    fn max_frames(&self, rate: u32) -> u64 {
        self.max_duration.map_or(u64::MAX, |max| {
            let frames = max.as_millis().saturating_mul(u128::from(rate)) / 1000;
            u64::try_from(frames).unwrap_or(u64::MAX)
        })
    }

    /// Fails on a passed deadline or a set cancel flag.
    fn check_time(&self) -> Result<()> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(MediaError::Cancelled);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(MediaError::Deadline);
        }
        Ok(())
    }
}

fn too_long(max: Duration) -> MediaError {
    MediaError::TooLong(format!(
        "the audio is longer than the limit of {} s",
        max.as_secs()
    ))
}

/// Where [`ingest_to`] writes its outputs while it runs.
pub trait IngestSink {
    /// The writer of the `.opus` file of the rendition at `kbps` (opened before decoding).
    fn rendition(&mut self, kbps: u32) -> std::io::Result<Box<dyn Write + Send>>;
    /// The writer of the waveform's `.dat` body (see [`crate::Waveform::dat_header`]).
    fn waveform(&mut self) -> std::io::Result<Box<dyn Write + Send>>;
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            bitrates_kbps: vec![32, 64, 128],
            complexity: DEFAULT_COMPLEXITY,
            page_ms: 200,
            waveform: WaveformOptions::default(),
            parallel: true,
            keep_pcm: false,
            limits: Limits::default(),
        }
    }
}

/// One encoded rendition: a complete `.opus` file (empty when streamed to a writer) and its
/// seek index.
#[derive(Clone, Debug)]
pub struct Rendition {
    pub bitrate_kbps: u32,
    pub data: Bytes,
    /// Length of the `.opus` file in bytes.
    pub len: u64,
    pub index: Arc<SeekIndex>,
}

impl Rendition {
    /// Real audio bitrate in bits per second (whole file over playable duration).
    pub fn real_bitrate_bps(&self) -> u64 {
        let frames = self.index.total_frames();
        if frames == 0 {
            return 0;
        }
        let bits = u128::from(self.len) * 8 * u128::from(self.index.sample_rate);
        u64::try_from(bits / u128::from(frames)).unwrap_or(u64::MAX)
    }
}

/// Time spent per stage (encode is summed over renditions).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Timings {
    pub decode: Duration,
    pub waveform: Duration,
    pub resample: Duration,
    pub encode: Duration,
    pub total: Duration,
}

/// Everything an ingest produces.
#[derive(Clone, Debug)]
pub struct Ingest {
    pub probe: ProbeInfo,
    pub renditions: Vec<Rendition>,
    pub waveform: Waveform,
    /// 48 kHz interleaved pcm_s16le, when asked for.
    pub pcm: Option<Bytes>,
    /// Playable frames per channel at 48 kHz.
    pub frames_48k: u64,
    pub timings: Timings,
}

/// Runs a full ingest from any `Read + Seek` source, keeping the outputs in memory.
/// Blocking: call it off the async runtime.
pub fn ingest<R: Source + 'static>(source: R, opts: &IngestOptions) -> Result<Ingest> {
    run(source, opts, None)
}

/// Runs a full ingest, writing each rendition and the waveform's `.dat` body to `sink` as they
/// are produced: the returned renditions and waveform carry no data (lengths, seek indexes and
/// the waveform header only). Blocking: call it off the async runtime.
pub fn ingest_to<R: Source + 'static>(
    source: R,
    opts: &IngestOptions,
    sink: &mut dyn IngestSink,
) -> Result<Ingest> {
    run(source, opts, Some(sink))
}

fn run<R: Source + 'static>(
    source: R,
    opts: &IngestOptions,
    mut sink: Option<&mut dyn IngestSink>,
) -> Result<Ingest> {
    let started = Instant::now();
    check_options(opts)?;
    let limits = &opts.limits;
    limits.check_time()?;
    let mut decoder = Decoder::open(source)?;
    let probe = decoder.info().clone();
    limits.check_header(&probe)?;
    let max_frames = limits.max_frames(decoder.sample_rate());
    let channels = decoder.channels();
    let mut wave = WaveformBuilder::new(decoder.sample_rate(), channels, opts.waveform)?;
    if let Some(s) = sink.as_mut() {
        wave = wave.with_sink(s.waveform()?);
    }
    let mut resampler = Resampler::new(decoder.sample_rate(), channels, INGEST_CHUNK)?;
    let mut encoders = Encoders::start(channels, &probe, opts, sink)?;
    let mut timings = Timings::default();
    let mut pcm = opts.keep_pcm.then(Vec::new);
    let mut batch = Vec::with_capacity(BATCH_FRAMES * channels + INGEST_CHUNK * 4);
    let mut decoded = 0u64;
    loop {
        let t = Instant::now();
        let block = decoder.next_block();
        timings.decode += t.elapsed();
        let Some(block) = block? else { break };
        decoded = decoded.saturating_add((block.len() / channels) as u64);
        if decoded > max_frames {
            return Err(limits.max_duration.map_or(MediaError::Cancelled, too_long));
        }
        limits.check_time()?;
        let t = Instant::now();
        wave.push(block);
        timings.waveform += t.elapsed();
        let t = Instant::now();
        resampler.process(block, &mut batch)?;
        timings.resample += t.elapsed();
        if batch.len() >= BATCH_FRAMES * channels {
            send_batch(&mut encoders, &mut batch, pcm.as_mut())?;
        }
    }
    let t = Instant::now();
    resampler.finish(&mut batch)?;
    timings.resample += t.elapsed();
    send_batch(&mut encoders, &mut batch, pcm.as_mut())?;
    let (renditions, encode_time, frames_48k) = encoders.finish()?;
    limits.check_time()?;
    timings.encode = encode_time;
    timings.total = started.elapsed();
    Ok(Ingest {
        probe,
        renditions,
        waveform: wave.finish_streamed()?,
        pcm: pcm.map(Bytes::from),
        frames_48k,
        timings,
    })
}

/// [`ingest`] over bytes already in memory.
pub fn ingest_bytes(data: Bytes, opts: &IngestOptions) -> Result<Ingest> {
    ingest(std::io::Cursor::new(data), opts)
}

fn check_options(opts: &IngestOptions) -> Result<()> {
    if opts.bitrates_kbps.is_empty() || opts.bitrates_kbps.len() > 16 {
        return Err(MediaError::InvalidArgument("1 to 16 bitrates".into()));
    }
    if !(20..=1000).contains(&opts.page_ms) {
        return Err(MediaError::InvalidArgument(
            "page_ms must be 20–1000".into(),
        ));
    }
    Ok(())
}

fn send_batch(
    encoders: &mut Encoders,
    batch: &mut Vec<f32>,
    pcm: Option<&mut Vec<u8>>,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    if let Some(pcm) = pcm {
        crate::pcm::f32_to_s16le(batch, pcm);
    }
    encoders.push(batch)
}

/// One rendition's encoder and muxer, and the writer its pages go to (when streaming).
struct Lane {
    bitrate_kbps: u32,
    encoder: OpusEncoder,
    muxer: OggOpusMuxer,
    sink: Option<Box<dyn Write + Send>>,
    busy: Duration,
}

impl Lane {
    fn new(
        channels: usize,
        probe: &ProbeInfo,
        opts: &IngestOptions,
        kbps: u32,
        serial: u32,
        sink: Option<Box<dyn Write + Send>>,
    ) -> Result<Lane> {
        let encoder = OpusEncoder::new(
            channels,
            EncoderSettings {
                bitrate_kbps: kbps,
                complexity: opts.complexity,
            },
        )?;
        let tags: &Tags = &probe.tags;
        let mut muxer = OggOpusMuxer::new(
            channels as u8,
            encoder.pre_skip(),
            probe.sample_rate,
            opts.page_ms,
            tags,
            serial,
        );
        if sink.is_none() {
            // Expected size + 10 % (capped at 256 MiB), so the output is not regrown and copied.
            let expected = probe.duration_ms.saturating_mul(u64::from(kbps)) / 8 / 10 * 11;
            muxer.reserve(expected.min(256 << 20) as usize);
        }
        Ok(Lane {
            bitrate_kbps: kbps,
            encoder,
            muxer,
            sink,
            busy: Duration::ZERO,
        })
    }

    fn push(&mut self, pcm: &[f32]) -> Result<()> {
        let t = Instant::now();
        let muxer = &mut self.muxer;
        self.encoder
            .push(pcm, &mut |p| muxer.push(p, crate::encode::FRAME as u64))?;
        if let Some(sink) = self.sink.as_mut() {
            self.muxer.drain_to(sink)?;
        }
        self.busy += t.elapsed();
        Ok(())
    }

    fn finish(mut self) -> LaneResult {
        let t = Instant::now();
        let muxer = &mut self.muxer;
        self.encoder
            .finish(&mut |p| muxer.push(p, crate::encode::FRAME as u64))?;
        let frames = self.encoder.frames_in();
        let end = frames.saturating_add(u64::from(self.encoder.pre_skip()));
        let (data, len, index) = match self.sink.as_mut() {
            Some(sink) => {
                let (index, len) = self.muxer.finish_to(end, sink)?;
                (Bytes::new(), len, index)
            }
            None => {
                let (data, index) = self.muxer.finish(end);
                (Bytes::from(data), 0, index)
            }
        };
        let len = if data.is_empty() {
            len
        } else {
            data.len() as u64
        };
        let rendition = Rendition {
            bitrate_kbps: self.bitrate_kbps,
            data,
            len,
            index: Arc::new(index),
        };
        Ok((rendition, self.busy + t.elapsed(), frames))
    }
}

/// What an encoder lane hands back: the rendition, its busy time, and frames encoded.
type LaneResult = Result<(Rendition, Duration, u64)>;

/// The renditions, inline or on a pool of `cores − 1` workers plus the decoding thread.
enum Encoders {
    Inline(Vec<Lane>),
    Pool(LanePool<Lane>),
}

impl Encoders {
    fn start(
        channels: usize,
        probe: &ProbeInfo,
        opts: &IngestOptions,
        mut sink: Option<&mut dyn IngestSink>,
    ) -> Result<Encoders> {
        let mut lanes = Vec::with_capacity(opts.bitrates_kbps.len());
        for (i, &kbps) in opts.bitrates_kbps.iter().enumerate() {
            let writer = match sink.as_mut() {
                Some(s) => Some(s.rendition(kbps)?),
                None => None,
            };
            let serial = 0x5645_5a00 + i as u32;
            lanes.push(Lane::new(channels, probe, opts, kbps, serial, writer)?);
        }
        if !opts.parallel || lanes.len() == 1 {
            return Ok(Encoders::Inline(lanes));
        }
        // The decoding thread runs lanes too while the queues are full: one worker fewer.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = cores.saturating_sub(1).clamp(1, lanes.len());
        Ok(Encoders::Pool(LanePool::start(
            lanes,
            threads,
            |lane, pcm| lane.push(pcm),
        )))
    }

    /// Hands a batch to every lane; pool threads share it without copying.
    fn push(&mut self, pcm: &mut Vec<f32>) -> Result<()> {
        match self {
            Encoders::Inline(lanes) => {
                lanes.iter_mut().try_for_each(|l| l.push(pcm))?;
                pcm.clear();
                Ok(())
            }
            Encoders::Pool(pool) => {
                let capacity = pcm.capacity();
                let shared = Arc::new(std::mem::replace(pcm, Vec::with_capacity(capacity)));
                pool.push(shared, QUEUE)
            }
        }
    }

    fn finish(self) -> Result<(Vec<Rendition>, Duration, u64)> {
        let lanes = match self {
            Encoders::Inline(lanes) => lanes,
            Encoders::Pool(pool) => pool.finish()?,
        };
        let mut out = Vec::with_capacity(lanes.len());
        let (mut busy, mut frames) = (Duration::ZERO, 0);
        for lane in lanes {
            let (rendition, t, f) = lane.finish()?;
            busy += t;
            frames = f;
            out.push(rendition);
        }
        Ok((out, busy, frames))
    }
}
