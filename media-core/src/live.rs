//! Live encoding: PCM or Opus packets in, Ogg Opus pages out as chunks with bounded latency.

use bytes::Bytes;

use crate::chunk::{AudioChunk, Codec};
use crate::encode::{DEFAULT_COMPLEXITY, EncoderSettings, FRAME, OpusEncoder};
use crate::error::{MediaError, Result};
use crate::meta::Tags;
use crate::mux::OggOpusMuxer;
use crate::ogg::FLAG_EOS;
use crate::opus_head::OPUS_RATE;
use crate::resample::{LIVE_CHUNK, Resampler};

/// What the producer sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveInput {
    /// Interleaved pcm_s16le at any rate, 1 or more channels (more are downmixed to stereo).
    PcmS16le { sample_rate: u32, channels: u16 },
    /// One raw Opus packet per push (48 kHz timeline); `pre_skip` of the producer's encoder.
    Opus { channels: u16, pre_skip: u16 },
}

/// Longest page a live stream may use (1 s, like Icecast's usual page size); the default is
/// [`crate::LIVE_CHUNK_MS`] or less.
pub const MAX_LIVE_PAGE_MS: u32 = 1000;

/// Live encoder settings.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub bitrate_kbps: u32,
    pub complexity: i32,
    /// Audio per page/chunk in ms (1–[`MAX_LIVE_PAGE_MS`]; ≤ 200 keeps latency low).
    pub page_ms: u32,
    pub tags: Tags,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            bitrate_kbps: 64,
            complexity: DEFAULT_COMPLEXITY,
            page_ms: 100,
            tags: Tags::default(),
        }
    }
}

/// Turns a live feed into Ogg Opus pages, one chunk per page.
pub struct LiveEncoder {
    input: LiveInput,
    resampler: Option<Resampler>,
    encoder: Option<OpusEncoder>,
    muxer: OggOpusMuxer,
    headers: Bytes,
    channels: u16,
    carry: Vec<u8>,
    floats: Vec<f32>,
    resampled: Vec<f32>,
    next_index: u64,
    last: Option<AudioChunk>,
    frames_in: u64,
}

impl LiveEncoder {
    /// Starts a live stream. The header pages are available at once via [`LiveEncoder::headers`].
    pub fn new(input: LiveInput, opts: &LiveOptions) -> Result<LiveEncoder> {
        if opts.page_ms == 0 || opts.page_ms > MAX_LIVE_PAGE_MS {
            return Err(MediaError::InvalidArgument(format!(
                "live page_ms must be 1–{MAX_LIVE_PAGE_MS}"
            )));
        }
        let (channels, pre_skip, rate, resampler, encoder) = match input {
            LiveInput::PcmS16le {
                sample_rate,
                channels,
            } => {
                if channels == 0
                    || channels > crate::decode::MAX_CHANNELS
                    || !(8000..=192_000).contains(&sample_rate)
                {
                    return Err(MediaError::InvalidArgument(format!(
                        "{channels} channels at {sample_rate} Hz"
                    )));
                }
                let out_ch = channels.min(2);
                let settings = EncoderSettings {
                    bitrate_kbps: opts.bitrate_kbps,
                    complexity: opts.complexity,
                };
                let enc = OpusEncoder::new(usize::from(out_ch), settings)?;
                let rs = Resampler::new(sample_rate, usize::from(out_ch), LIVE_CHUNK)?;
                (out_ch, enc.pre_skip(), sample_rate, Some(rs), Some(enc))
            }
            LiveInput::Opus { channels, pre_skip } => {
                if !(1..=2).contains(&channels) {
                    return Err(MediaError::InvalidArgument(
                        "Opus live input is mono or stereo".into(),
                    ));
                }
                (channels, pre_skip, OPUS_RATE, None, None)
            }
        };
        let muxer = OggOpusMuxer::new(
            channels as u8,
            pre_skip,
            rate,
            opts.page_ms,
            &opts.tags,
            0x5645_5a4c,
        );
        let headers = Bytes::copy_from_slice(muxer.headers());
        Ok(LiveEncoder {
            input,
            resampler,
            encoder,
            muxer,
            headers,
            channels,
            carry: Vec::new(),
            floats: Vec::new(),
            resampled: Vec::new(),
            next_index: 1,
            last: None,
            frames_in: 0,
        })
    }

    /// The `OpusHead` + `OpusTags` pages every listener must get first.
    pub fn headers(&self) -> Bytes {
        self.headers.clone()
    }

    /// What a listener joining now receives first: the headers, then the latest page if any.
    pub fn join(&self) -> Vec<AudioChunk> {
        let ts = self.last.as_ref().map_or(0, |c| c.timestamp_ms);
        let mut out = vec![self.make_chunk(0, ts, self.headers.clone())];
        out.extend(self.last.clone());
        out
    }

    /// Feeds pcm_s16le bytes (any split, even mid-sample); returns the pages completed.
    pub fn push_pcm(&mut self, bytes: &[u8]) -> Result<Vec<AudioChunk>> {
        let LiveInput::PcmS16le { channels, .. } = self.input else {
            return Err(MediaError::InvalidArgument(
                "this stream takes Opus packets".into(),
            ));
        };
        let frame_bytes = 2 * usize::from(channels);
        self.carry.extend_from_slice(bytes);
        let whole = self.carry.len() / frame_bytes * frame_bytes;
        self.floats.clear();
        for s in self.carry[..whole].chunks_exact(2) {
            self.floats
                .push(f32::from(i16::from_le_bytes([s[0], s[1]])) / 32768.0);
        }
        self.carry.drain(..whole);
        let mut mixed = std::mem::take(&mut self.floats);
        if channels > 2 {
            mixed = downmix_to_stereo(&mixed, usize::from(channels));
        }
        self.frames_in += (whole / frame_bytes) as u64;
        self.encode(&mixed)?;
        self.floats = mixed;
        Ok(self.drain_pages())
    }

    /// Feeds one raw Opus packet; returns the pages completed.
    pub fn push_opus_packet(&mut self, packet: &[u8]) -> Result<Vec<AudioChunk>> {
        if !matches!(self.input, LiveInput::Opus { .. }) {
            return Err(MediaError::InvalidArgument(
                "this stream takes pcm_s16le".into(),
            ));
        }
        let frames = opus::packet::get_nb_samples(packet, OPUS_RATE)
            .map_err(|e| MediaError::Malformed(format!("Opus packet: {e}")))?;
        self.muxer.push(packet, frames as u64)?;
        self.frames_in += frames as u64;
        Ok(self.drain_pages())
    }

    /// Ends the stream: flushes the encoder and writes the EOS page.
    pub fn finish(mut self) -> Result<Vec<AudioChunk>> {
        let end = match (&mut self.resampler, &mut self.encoder) {
            (Some(rs), Some(enc)) => {
                let mut tail = Vec::new();
                rs.finish(&mut tail)?;
                let muxer = &mut self.muxer;
                enc.push(&tail, &mut |p| muxer.push(p, FRAME as u64))?;
                enc.finish(&mut |p| muxer.push(p, FRAME as u64))?;
                enc.frames_in() + u64::from(enc.pre_skip())
            }
            _ => self.muxer.granule(),
        };
        // End trimming may cut into the last page's packets, never behind a page already sent:
        // granule positions must not go back (RFC 7845 §4).
        self.muxer
            .flush(FLAG_EOS, Some(end.max(self.muxer.written_granule())));
        Ok(self.drain_pages())
    }

    /// Frames of input accepted so far: at the input rate for PCM, at 48 kHz for Opus packets.
    pub fn frames_in(&self) -> u64 {
        self.frames_in
    }

    fn encode(&mut self, pcm: &[f32]) -> Result<()> {
        let (Some(rs), Some(enc)) = (&mut self.resampler, &mut self.encoder) else {
            return Ok(());
        };
        self.resampled.clear();
        rs.process(pcm, &mut self.resampled)?;
        let muxer = &mut self.muxer;
        enc.push(&self.resampled, &mut |p| muxer.push(p, FRAME as u64))
    }

    /// Turns the pages completed since the last call into chunks (one per page).
    fn drain_pages(&mut self) -> Vec<AudioChunk> {
        let taken = self.muxer.take_pages();
        if taken.is_empty() {
            return Vec::new();
        }
        let bytes = Bytes::copy_from_slice(taken);
        self.muxer.discard_taken();
        let pages = crate::ogg::split_pages(&bytes).unwrap_or_default();
        let mut out = Vec::with_capacity(pages.len());
        for page in pages {
            let start = self.granule_start(page.granule, &bytes, &page);
            let ts = start.saturating_sub(u64::from(self.pre_skip())) * 1000 / u64::from(OPUS_RATE);
            let chunk = self.make_chunk(
                self.next_index,
                ts,
                bytes.slice(page.offset..page.offset + page.len),
            );
            self.next_index += 1;
            self.last = Some(chunk.clone());
            out.push(chunk);
        }
        out
    }

    /// Granule at the start of a page: its end minus the samples of its packets.
    fn granule_start(&self, end: u64, data: &[u8], page: &crate::ogg::PageInfo) -> u64 {
        let frames: u64 = crate::ogg::page_packets(data, page)
            .into_iter()
            .map(|r| opus::packet::get_nb_samples(&data[r], OPUS_RATE).unwrap_or(0) as u64)
            .sum();
        end.saturating_sub(frames)
    }

    fn pre_skip(&self) -> u16 {
        match self.input {
            LiveInput::Opus { pre_skip, .. } => pre_skip,
            LiveInput::PcmS16le { .. } => self.encoder.as_ref().map_or(0, |e| e.pre_skip()),
        }
    }

    fn make_chunk(&self, index: u64, timestamp_ms: u64, data: Bytes) -> AudioChunk {
        AudioChunk {
            index,
            timestamp_ms,
            sample_rate: OPUS_RATE,
            channels: self.channels,
            codec: Codec::Opus,
            data,
        }
    }
}

fn downmix_to_stereo(input: &[f32], channels: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(input.len() / channels * 2);
    for frame in input.chunks_exact(channels) {
        let (l, r) = frame.iter().enumerate().fold((0.0, 0.0), |(l, r), (i, s)| {
            if i % 2 == 0 { (l + s, r) } else { (l, r + s) }
        });
        let n = channels as f32 / 2.0;
        out.push(l / n);
        out.push(r / n);
    }
    out
}
