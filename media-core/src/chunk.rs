//! Zero-copy chunking of an Ogg Opus rendition into page-aligned `AudioChunk`s.

use std::sync::Arc;

use bytes::Bytes;

use crate::index::SeekIndex;

/// Codec of a chunk's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Codec {
    /// Ogg Opus pages.
    Opus,
    /// Raw interleaved signed 16-bit little-endian PCM.
    PcmS16le,
}

impl Codec {
    /// The name used on the wire (`opus`, `pcm_s16le`).
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Opus => "opus",
            Codec::PcmS16le => "pcm_s16le",
        }
    }
}

/// A piece of a stream, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioChunk {
    /// Position in the sequence sent to one listener (0, 1, 2…).
    pub index: u64,
    /// Media time of the first sample, in ms.
    pub timestamp_ms: u64,
    pub sample_rate: u32,
    pub channels: u16,
    pub codec: Codec,
    /// Payload: a slice of the rendition (no copy) or PCM bytes.
    pub data: Bytes,
}

/// Default chunk duration for tracks.
pub const TRACK_CHUNK_MS: u32 = 1000;
/// Largest chunk duration for live streams.
pub const LIVE_CHUNK_MS: u32 = 200;

/// Iterator over page-aligned chunks of a rendition, from a start time.
pub struct Chunker {
    data: Bytes,
    index: Arc<SeekIndex>,
    chunk_frames: u64,
    next_page: usize,
    next_index: u64,
    pending_headers: bool,
}

impl Chunker {
    /// Chunks of about `chunk_ms` starting at the page holding `start_ms`.
    /// The first chunk starts with the header pages, so every stream is a valid Ogg Opus file.
    pub fn new(data: Bytes, index: Arc<SeekIndex>, start_ms: u64, chunk_ms: u32) -> Chunker {
        let next_page = if start_ms == 0 {
            0
        } else {
            index.page_for_ms(start_ms)
        };
        let chunk_frames = u64::from(chunk_ms.max(1)) * u64::from(index.sample_rate) / 1000;
        Chunker {
            data,
            index,
            chunk_frames,
            next_page,
            next_index: 0,
            pending_headers: true,
        }
    }

    fn chunk(&mut self, data: Bytes, timestamp_ms: u64) -> AudioChunk {
        let chunk = AudioChunk {
            index: self.next_index,
            timestamp_ms,
            sample_rate: self.index.sample_rate,
            channels: self.index.channels,
            codec: Codec::Opus,
            data,
        };
        self.next_index += 1;
        chunk
    }

    /// End page (exclusive) of the chunk starting at page `first`.
    fn end_page(&self, first: usize) -> usize {
        let target = self.index.page_start_granule(first) + self.chunk_frames;
        let rest = &self.index.pages[first..];
        let n = rest.partition_point(|p| p.granule < target);
        first + (n + 1).min(rest.len())
    }
}

impl Iterator for Chunker {
    type Item = AudioChunk;

    fn next(&mut self) -> Option<AudioChunk> {
        let len = self.data.len() as u64;
        let header_len = self.index.header_len.min(len) as usize;
        let pages = self.index.pages.len();
        if self.next_page >= pages {
            if self.pending_headers {
                self.pending_headers = false;
                let headers = self.data.slice(..header_len);
                return Some(self.chunk(headers, 0));
            }
            return None;
        }
        let first = self.next_page;
        let end = self.end_page(first);
        self.next_page = end;
        let from = self.index.page_offset(first, len) as usize;
        let to = (self.index.page_offset(end, len) as usize).min(self.data.len());
        let ts = self.index.granule_ms(self.index.page_start_granule(first));
        if self.pending_headers {
            self.pending_headers = false;
            if first == 0 || from == header_len {
                let data = self.data.slice(..to);
                return Some(self.chunk(data, ts));
            }
            self.next_page = first;
            let headers = self.data.slice(..header_len);
            return Some(self.chunk(headers, ts));
        }
        let data = self.data.slice(from.min(to)..to);
        Some(self.chunk(data, ts))
    }
}
