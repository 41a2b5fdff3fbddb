//! Live sources: an Icecast source's PUT body (Ogg Opus/Vorbis/FLAC, MP3) as `LiveEncoder` input.
//!
//! Ogg Opus is not decoded but passed through ([`crate::live_opus`], which also takes pushed
//! bytes without a reader). Everything else is decoded by symphonia over the non-seekable stream
//! into pcm_s16le blocks of at most 100 ms. All reads block: run a [`SourceReader`] on a
//! blocking thread.

use std::collections::VecDeque;
use std::io::{self, Cursor, ErrorKind, Read};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::{Hint, Probe};
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;
use symphonia::default::formats::{MpaReader, OggReader};

use crate::decode::{MAX_BAD_PACKETS, MAX_CHANNELS, downmix, guarded};
use crate::error::{MediaError, Result};
use crate::live_opus::{OggStart, OpusPassthrough, ogg_start};
use crate::pcm::f32_to_s16le;
pub use crate::source_audio::{SourceAudio, SourceKind};

/// Bytes asked of the input per read.
const READ_CHUNK: usize = 16 * 1024;
/// Longest PCM block yielded.
const BLOCK_MS: usize = 100;
/// Sample rates `LiveEncoder` takes.
const RATES: std::ops::RangeInclusive<u32> = 8000..=192_000;
/// Leading ID3v2 tags skipped on an MP3 source.
const MAX_ID3_TAGS: usize = 4;

type Input = Box<dyn Read + Send + Sync>;

/// Reads a live source's byte stream item by item.
pub struct SourceReader {
    inner: Inner,
    queue: VecDeque<SourceAudio>,
    /// An error met after items were queued: returned once they are handed out.
    error: Option<MediaError>,
    done: bool,
}

enum Inner {
    Opus(Box<OpusPackets>),
    Decoded(Box<Decoded>),
}

impl SourceReader {
    /// Reads from `input` (blocking reads; a non-seekable network stream). May read the first
    /// bytes to tell Opus from Vorbis/FLAC.
    pub fn new<R: Read + Send + Sync + 'static>(
        kind: SourceKind,
        input: R,
    ) -> Result<SourceReader> {
        let input: Input = Box::new(input);
        let inner = match kind {
            SourceKind::Ogg => open_ogg(input)?,
            SourceKind::Mp3 => Inner::Decoded(Box::new(open_mp3(input)?)),
        };
        Ok(SourceReader {
            inner,
            queue: VecDeque::new(),
            error: None,
            done: false,
        })
    }

    /// The next item; Ok(None) at the end of input. After an error the reader is finished.
    #[expect(
        clippy::should_implement_trait,
        reason = "the control plane calls it next; fallible, so not an Iterator"
    )]
    pub fn next(&mut self) -> Result<Option<SourceAudio>> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Ok(Some(item));
            }
            if let Some(err) = self.error.take() {
                return Err(err);
            }
            if self.done {
                return Ok(None);
            }
            let more = match &mut self.inner {
                Inner::Opus(o) => o.fill(&mut self.queue),
                Inner::Decoded(d) => d.fill(&mut self.queue),
            };
            match more {
                Ok(true) => {}
                Ok(false) => self.done = true,
                Err(err) => {
                    self.done = true;
                    self.error = Some(err);
                }
            }
        }
    }
}

/// Tells Ogg Opus (passed through) from other Ogg codecs (decoded by symphonia).
fn open_ogg(mut input: Input) -> Result<Inner> {
    let mut prefix = Vec::new();
    let mut eof = false;
    loop {
        match ogg_start(&prefix, eof)? {
            OggStart::More => eof = read_chunk(&mut input, &mut prefix)? == 0,
            OggStart::Opus => {
                let opus = OpusPackets {
                    input,
                    pass: OpusPassthrough::new(),
                    buf: prefix,
                };
                return Ok(Inner::Opus(Box::new(opus)));
            }
            OggStart::Other => {
                let d = Decoded::open(Container::Ogg, prefix, input)?;
                return Ok(Inner::Decoded(Box::new(d)));
            }
        }
    }
}

/// Appends one read of `input` to `buf`; the bytes read (0 at the end).
fn read_chunk(input: &mut Input, buf: &mut Vec<u8>) -> Result<usize> {
    let len = buf.len();
    buf.resize(len + READ_CHUNK, 0);
    let got = loop {
        match input.read(&mut buf[len..]) {
            Ok(n) => break n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(len);
                return Err(e.into());
            }
        }
    };
    buf.truncate(len + got.min(READ_CHUNK));
    Ok(got)
}

/// Opus packets of an Ogg stream read off a blocking input, undecoded.
struct OpusPackets {
    input: Input,
    pass: OpusPassthrough,
    /// Bytes read and not pushed yet (the prefix looked at first).
    buf: Vec<u8>,
}

impl OpusPackets {
    /// Queues the items of the next bytes; false at the end of input.
    fn fill(&mut self, out: &mut VecDeque<SourceAudio>) -> Result<bool> {
        if self.buf.is_empty() && read_chunk(&mut self.input, &mut self.buf)? == 0 {
            return Ok(false);
        }
        let pushed = self.pass.push(&self.buf, out);
        self.buf.clear();
        pushed.map(|()| true)
    }
}

/// Skips leading ID3v2 tags (without keeping them), then hands the stream to symphonia.
fn open_mp3(mut input: Input) -> Result<Decoded> {
    let prefix = skip_id3v2(&mut input)?;
    Decoded::open(Container::Mp3, prefix, input)
}

/// Reads past up to [`MAX_ID3_TAGS`] ID3v2 tags; returns the first bytes after them.
fn skip_id3v2(input: &mut Input) -> Result<Vec<u8>> {
    for n in 0..MAX_ID3_TAGS {
        let head = read_up_to(input, 10)?;
        let Some(len) = id3v2_len(&head) else {
            return match (head.is_empty(), n) {
                (true, 0) => Err(MediaError::Empty),
                (true, _) => Err(MediaError::Truncated("no audio after the ID3v2 tag".into())),
                _ => Ok(head),
            };
        };
        let skipped = io::copy(&mut input.take(len), &mut io::sink())?;
        if skipped < len {
            return Err(MediaError::Truncated(
                "the stream ends inside its ID3v2 tag".into(),
            ));
        }
    }
    Err(MediaError::Malformed("too many ID3v2 tags".into()))
}

/// Length after the 10-byte header of the ID3v2 tag `head` starts, if it is one.
fn id3v2_len(head: &[u8]) -> Option<u64> {
    let h = head.get(..10)?;
    if &h[..3] != b"ID3" || h[3] == 0xff || h[4] == 0xff || h[6..].iter().any(|b| b & 0x80 != 0) {
        return None;
    }
    let size = h[6..].iter().fold(0u64, |a, &b| (a << 7) | u64::from(b));
    let footer = if h[5] & 0x10 != 0 { 10 } else { 0 };
    Some(size + footer)
}

/// Reads until `n` bytes or the end of input.
fn read_up_to(input: &mut Input, n: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    input.take(n as u64).read_to_end(&mut out)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Decoded sources (symphonia).

/// The container symphonia reads.
#[derive(Clone, Copy)]
enum Container {
    Ogg,
    Mp3,
}

/// Where the input's first read error is kept (symphonia's probe reports read errors as
/// "no format found", and MP3 reading treats any end as the end).
type ErrorSlot = Arc<Mutex<Option<io::Error>>>;

/// The input as symphonia reads it: reads pass through, the first error is kept for the caller.
struct Tap {
    inner: Input,
    error: ErrorSlot,
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    let kind = e.kind();
                    if let Ok(mut slot) = self.error.lock() {
                        slot.get_or_insert(e);
                    }
                    return Err(io::Error::new(kind, "source read failed"));
                }
                ok => return ok,
            }
        }
    }
}

/// A source decoded by symphonia into PCM blocks.
struct Decoded {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    input_error: ErrorSlot,
    raw: Vec<f32>,
    mixed: Vec<f32>,
}

impl Decoded {
    /// Opens symphonia over `prefix` (bytes already read) followed by `rest`.
    fn open(container: Container, prefix: Vec<u8>, rest: Input) -> Result<Decoded> {
        let input_error = ErrorSlot::default();
        let tap = Tap {
            inner: rest,
            error: input_error.clone(),
        };
        let source = ReadOnlySource::new(Cursor::new(prefix).chain(tap));
        let mss = MediaSourceStream::new(Box::new(source), Default::default());
        let opened = guarded(|| {
            let format = open_format(container, mss)?;
            let (track_id, decoder) = select_track(format.as_ref())?;
            Ok((format, track_id, decoder))
        });
        let (format, track_id, decoder) = or_input_error(&input_error, opened)?;
        Ok(Decoded {
            format,
            decoder,
            track_id,
            input_error,
            raw: Vec::new(),
            mixed: Vec::new(),
        })
    }

    /// Queues the PCM of the next decoded packet; false at the end of input.
    fn fill(&mut self, out: &mut VecDeque<SourceAudio>) -> Result<bool> {
        let got = guarded(|| self.decode_next(out));
        match got {
            Ok(true) => Ok(true),
            other => or_input_error(&self.input_error, other),
        }
    }

    /// Decodes packets until one gives audio.
    fn decode_next(&mut self, out: &mut VecDeque<SourceAudio>) -> Result<bool> {
        let mut bad = 0u32;
        loop {
            let packet = match self.format.next_packet() {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(false),
                Err(SymphoniaError::ResetRequired) => {
                    // A chained Ogg stream: new tracks, new decoder.
                    (self.track_id, self.decoder) = select_track(self.format.as_ref())?;
                    continue;
                }
                // The source hung up mid-page or mid-frame: a live stream's usual end.
                Err(SymphoniaError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            let buf = match self.decoder.decode(&packet) {
                Ok(buf) => buf,
                Err(SymphoniaError::DecodeError(msg)) => {
                    bad += 1;
                    if bad > MAX_BAD_PACKETS {
                        return Err(MediaError::Malformed(msg.into()));
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let (rate, channels) = (buf.spec().rate(), buf.spec().channels().count());
            check_layout(rate, channels)?;
            buf.copy_to_vec_interleaved(&mut self.raw);
            if !self.raw.is_empty() {
                self.push_pcm(rate, channels, out);
                return Ok(true);
            }
        }
    }

    /// Downmixes `raw` to ≤ 2 channels and queues it as s16le blocks of ≤ [`BLOCK_MS`].
    fn push_pcm(&mut self, rate: u32, channels: usize, out: &mut VecDeque<SourceAudio>) {
        let samples = if channels > 2 {
            downmix(&self.raw, channels, &mut self.mixed);
            &self.mixed
        } else {
            &self.raw
        };
        let out_ch = channels.min(2);
        let mut bytes = Vec::with_capacity(samples.len() * 2);
        f32_to_s16le(samples, &mut bytes);
        let data = Bytes::from(bytes);
        let step = (rate as usize * BLOCK_MS / 1000).max(1) * out_ch * 2;
        let mut at = 0;
        while at < data.len() {
            let end = (at + step).min(data.len());
            out.push_back(SourceAudio::Pcm {
                sample_rate: rate,
                channels: out_ch as u16,
                data: data.slice(at..end),
            });
            at = end;
        }
    }
}

/// Symphonia's reader for the container (MP3 through a probe that finds the first frame).
fn open_format(
    container: Container,
    mss: MediaSourceStream<'static>,
) -> Result<Box<dyn FormatReader>> {
    match container {
        Container::Ogg => Ok(Box::new(OggReader::try_new(mss, FormatOptions::default())?)),
        Container::Mp3 => mp3_probe()
            .probe(
                &Hint::new(),
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|e| match e {
                SymphoniaError::Unsupported(_) => {
                    MediaError::Unsupported("not an MPEG audio stream".into())
                }
                other => other.into(),
            }),
    }
}

/// A probe that knows MPEG audio only (so a mislabelled stream is not read as another format).
fn mp3_probe() -> &'static Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    PROBE.get_or_init(|| {
        let mut probe = Probe::default();
        probe.register_format::<MpaReader<'_>>();
        probe
    })
}

/// The default audio track and a decoder for it.
fn select_track(format: &dyn FormatReader) -> Result<(u32, Box<dyn AudioDecoder>)> {
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| MediaError::Unsupported("no audio track that can be decoded".into()))?;
    let Some(CodecParameters::Audio(params)) = &track.codec_params else {
        return Err(MediaError::Unsupported("no audio codec parameters".into()));
    };
    let decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())?;
    Ok((track.id, decoder))
}

/// Channel counts and rates a live encoder can take.
fn check_layout(rate: u32, channels: usize) -> Result<()> {
    if channels == 0 {
        return Err(MediaError::Malformed("zero channels".into()));
    }
    if channels > usize::from(MAX_CHANNELS) {
        return Err(MediaError::Limit(format!("{channels} channels")));
    }
    if !RATES.contains(&rate) {
        return Err(MediaError::Unsupported(format!(
            "sample rate {rate} Hz (live sources take 8–192 kHz)"
        )));
    }
    Ok(())
}

/// `result`, or the input's own read error if one happened (the real cause).
fn or_input_error<T>(slot: &ErrorSlot, result: Result<T>) -> Result<T> {
    let taken = slot.lock().ok().and_then(|mut s| s.take());
    match taken {
        Some(err) => Err(MediaError::Io(err)),
        None => result,
    }
}
