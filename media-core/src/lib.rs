//! Veza media core: decode → resample → Opus → Ogg pages → zero-copy chunks, and waveforms.
//!
//! Everything here is synchronous and CPU-bound: call it from `spawn_blocking`.
//! See `docs/MEDIA.md` for the API summary.

pub mod chunk;
pub mod decode;
pub mod encode;
pub mod error;
pub mod index;
pub mod live;
pub mod live_opus;
pub mod live_source;
pub mod meta;
pub mod mux;
pub mod ogg;
pub mod opus_head;
pub mod opus_in;
pub mod pcm;
pub mod pipeline;
mod pool;
pub mod probe;
pub mod resample;
pub mod source;
pub mod source_audio;
pub mod transcode;
pub mod waveform;

pub use chunk::{AudioChunk, Chunker, Codec, LIVE_CHUNK_MS, TRACK_CHUNK_MS};
pub use decode::Decoder;
pub use error::{MediaError, Result};
pub use index::{PageEntry, SeekIndex};
pub use live::{LiveEncoder, LiveInput, LiveOptions};
pub use live_source::{SourceAudio, SourceKind, SourceReader};
pub use meta::{ProbeInfo, Tags};
pub use pcm::{PcmChunks, source_to_pcm};
pub use pipeline::{
    Ingest, IngestOptions, IngestSink, Limits, Rendition, Timings, ingest, ingest_bytes, ingest_to,
};
pub use probe::probe;
pub use source::Source;
pub use waveform::{Waveform, WaveformBuilder, WaveformOptions};
