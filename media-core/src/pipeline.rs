//! Full ingest in one pass: decode → waveform → resample → N Opus renditions → Ogg + seek index.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use crate::decode::Decoder;
use crate::encode::{DEFAULT_COMPLEXITY, EncoderSettings, OpusEncoder};
use crate::error::{MediaError, Result};
use crate::index::SeekIndex;
use crate::ogg::OggOpusMuxer;
use crate::pool::LanePool;
use crate::probe::{ProbeInfo, Tags};
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
        }
    }
}

/// One encoded rendition: a complete `.opus` file and its seek index.
#[derive(Clone, Debug)]
pub struct Rendition {
    pub bitrate_kbps: u32,
    pub data: Bytes,
    pub index: Arc<SeekIndex>,
}

impl Rendition {
    /// Real audio bitrate in bits per second (whole file over playable duration).
    pub fn real_bitrate_bps(&self) -> u64 {
        let frames = self.index.total_frames();
        if frames == 0 {
            return 0;
        }
        self.data.len() as u64 * 8 * u64::from(self.index.sample_rate) / frames
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

/// Runs a full ingest from any `Read + Seek` source. Blocking: call it off the async runtime.
pub fn ingest<R: Source + 'static>(source: R, opts: &IngestOptions) -> Result<Ingest> {
    let started = Instant::now();
    check_options(opts)?;
    let mut decoder = Decoder::open(source)?;
    let probe = decoder.info().clone();
    let channels = decoder.channels();
    let mut wave = WaveformBuilder::new(decoder.sample_rate(), channels, opts.waveform)?;
    let mut resampler = Resampler::new(decoder.sample_rate(), channels, INGEST_CHUNK)?;
    let mut encoders = Encoders::start(channels, &probe, opts)?;
    let mut timings = Timings::default();
    let mut pcm = opts.keep_pcm.then(Vec::new);
    let mut batch = Vec::with_capacity(BATCH_FRAMES * channels + INGEST_CHUNK * 4);
    loop {
        let t = Instant::now();
        let block = decoder.next_block();
        timings.decode += t.elapsed();
        let Some(block) = block? else { break };
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
    timings.encode = encode_time;
    timings.total = started.elapsed();
    Ok(Ingest {
        probe,
        renditions,
        waveform: wave.finish(),
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

/// One rendition's encoder and muxer.
struct Lane {
    bitrate_kbps: u32,
    encoder: OpusEncoder,
    muxer: OggOpusMuxer,
    busy: Duration,
}

impl Lane {
    fn new(
        channels: usize,
        probe: &ProbeInfo,
        opts: &IngestOptions,
        kbps: u32,
        serial: u32,
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
        // Expected size + 10 % (capped at 256 MiB), so the output is not regrown and copied.
        let expected = probe.duration_ms.saturating_mul(u64::from(kbps)) / 8 * 11 / 10;
        muxer.reserve(expected.min(256 << 20) as usize);
        Ok(Lane {
            bitrate_kbps: kbps,
            encoder,
            muxer,
            busy: Duration::ZERO,
        })
    }

    fn push(&mut self, pcm: &[f32]) -> Result<()> {
        let t = Instant::now();
        let muxer = &mut self.muxer;
        self.encoder
            .push(pcm, &mut |p| muxer.push(p, crate::encode::FRAME as u64))?;
        self.busy += t.elapsed();
        Ok(())
    }

    fn finish(mut self) -> LaneResult {
        let t = Instant::now();
        let muxer = &mut self.muxer;
        self.encoder
            .finish(&mut |p| muxer.push(p, crate::encode::FRAME as u64))?;
        let frames = self.encoder.frames_in();
        let end = frames + u64::from(self.encoder.pre_skip());
        let (data, index) = self.muxer.finish(end);
        let rendition = Rendition {
            bitrate_kbps: self.bitrate_kbps,
            data: Bytes::from(data),
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
    fn start(channels: usize, probe: &ProbeInfo, opts: &IngestOptions) -> Result<Encoders> {
        let lanes = opts
            .bitrates_kbps
            .iter()
            .enumerate()
            .map(|(i, &kbps)| Lane::new(channels, probe, opts, kbps, 0x5645_5a00 + i as u32))
            .collect::<Result<Vec<_>>>()?;
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
