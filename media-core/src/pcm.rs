//! pcm_s16le output: from a rendition (decoded with libopus, from any start time) or a source.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;

use crate::chunk::{AudioChunk, Codec};
use crate::decode::Decoder;
use crate::error::Result;
use crate::index::SeekIndex;
use crate::opus_head::OPUS_RATE;
use crate::opus_in::OggOpusReader;
use crate::resample::{INGEST_CHUNK, Resampler};
use crate::source::{Measured, Source};

/// Appends `samples` as little-endian i16, clamped.
pub fn f32_to_s16le(samples: &[f32], out: &mut Vec<u8>) {
    out.reserve(samples.len() * 2);
    for &s in samples {
        let v = (s * 32768.0).clamp(-32768.0, 32767.0) as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Decodes and resamples a whole source to 48 kHz interleaved pcm_s16le (≤ 2 channels).
pub fn source_to_pcm<R: Source + 'static>(source: R) -> Result<(crate::ProbeInfo, Bytes)> {
    let mut decoder = Decoder::open(source)?;
    let mut resampler = Resampler::new(decoder.sample_rate(), decoder.channels(), INGEST_CHUNK)?;
    let (mut f32s, mut out) = (Vec::new(), Vec::new());
    while let Some(block) = decoder.next_block()? {
        resampler.process(block, &mut f32s)?;
        f32_to_s16le(&f32s, &mut out);
        f32s.clear();
    }
    resampler.finish(&mut f32s)?;
    f32_to_s16le(&f32s, &mut out);
    Ok((decoder.info().clone(), Bytes::from(out)))
}

/// Iterator of pcm_s16le chunks decoded from a rendition, starting at `start_ms`.
pub struct PcmChunks {
    reader: OggOpusReader<Measured<Concat>>,
    channels: u16,
    chunk_bytes: usize,
    skip_frames: u64,
    /// Frames since media time zero of the next sample to emit.
    position: u64,
    buf: Vec<u8>,
    block: Vec<f32>,
    next_index: u64,
    done: bool,
}

impl PcmChunks {
    /// Decodes `data` (an Ogg Opus rendition indexed by `index`) into chunks of ~`chunk_ms`.
    pub fn new(
        data: Bytes,
        index: Arc<SeekIndex>,
        start_ms: u64,
        chunk_ms: u32,
    ) -> Result<PcmChunks> {
        let first = if start_ms == 0 {
            0
        } else {
            index.page_for_ms(start_ms)
        };
        let header = data.slice(..(index.header_len as usize).min(data.len()));
        let from = (index.page_offset(first, data.len() as u64) as usize).min(data.len());
        let concat = Concat::new(header, data.slice(from..));
        let (reader, _) = OggOpusReader::open(Measured::new(concat)?)?;
        let start_frame = index.page_start_granule(first);
        let want = start_ms * u64::from(OPUS_RATE) / 1000;
        let frames_per_chunk = (u64::from(chunk_ms.max(1)) * u64::from(OPUS_RATE) / 1000) as usize;
        Ok(PcmChunks {
            reader,
            channels: index.channels.min(2),
            chunk_bytes: frames_per_chunk * usize::from(index.channels.min(2)) * 2,
            skip_frames: want.saturating_sub(start_frame),
            position: start_frame.max(want),
            buf: Vec::new(),
            block: Vec::new(),
            next_index: 0,
            done: false,
        })
    }

    /// Decodes until a full chunk is buffered or the stream ends.
    fn fill(&mut self) -> Result<()> {
        let ch = usize::from(self.channels);
        while self.buf.len() < self.chunk_bytes {
            if !self.reader.next(&mut self.block)? {
                self.done = true;
                return Ok(());
            }
            let frames = (self.block.len() / ch) as u64;
            let skip = self.skip_frames.min(frames);
            self.skip_frames -= skip;
            f32_to_s16le(&self.block[skip as usize * ch..], &mut self.buf);
        }
        Ok(())
    }
}

impl Iterator for PcmChunks {
    type Item = Result<AudioChunk>;

    fn next(&mut self) -> Option<Result<AudioChunk>> {
        let filled = if self.done { Ok(()) } else { self.fill() };
        if let Err(e) = filled {
            self.done = true;
            return Some(Err(e));
        }
        if self.buf.is_empty() {
            return None;
        }
        let take = self.chunk_bytes.min(self.buf.len());
        let rest = self.buf.split_off(take);
        let data = Bytes::from(std::mem::replace(&mut self.buf, rest));
        let frames = (data.len() / (2 * usize::from(self.channels))) as u64;
        let chunk = AudioChunk {
            index: self.next_index,
            timestamp_ms: self.position * 1000 / u64::from(OPUS_RATE),
            sample_rate: OPUS_RATE,
            channels: self.channels,
            codec: Codec::PcmS16le,
            data,
        };
        self.next_index += 1;
        self.position += frames;
        Some(Ok(chunk))
    }
}

/// Two byte buffers read as one (headers + the pages from a seek point), without copying.
pub struct Concat {
    parts: [Bytes; 2],
    pos: u64,
}

impl Concat {
    pub fn new(a: Bytes, b: Bytes) -> Concat {
        Concat {
            parts: [a, b],
            pos: 0,
        }
    }

    fn len(&self) -> u64 {
        (self.parts[0].len() + self.parts[1].len()) as u64
    }
}

impl Read for Concat {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let first = self.parts[0].len() as u64;
        let (part, at) = if self.pos < first {
            (&self.parts[0], self.pos)
        } else {
            (&self.parts[1], self.pos - first)
        };
        let at = (at as usize).min(part.len());
        let n = buf.len().min(part.len() - at);
        buf[..n].copy_from_slice(&part[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Concat {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before start")
        })?;
        Ok(self.pos)
    }
}
