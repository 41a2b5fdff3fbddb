//! Live sources: an Icecast source's PUT body (Ogg Opus/Vorbis/FLAC, MP3) as `LiveEncoder` input.
//!
//! Ogg Opus is not decoded: its pages are parsed as they arrive, packets are reassembled across
//! pages and passed through after an `OpusHead` item (again at each link of a chained stream).
//! Everything else is decoded by symphonia over the non-seekable stream into pcm_s16le blocks of
//! at most 100 ms. All reads block: run a [`SourceReader`] on a blocking thread.

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
use crate::mux::MAX_PACKET;
use crate::ogg::{FLAG_BOS, FLAG_CONTINUED, FLAG_EOS, PageInfo, parse_page};
use crate::opus_head::OpusHead;
use crate::pcm::f32_to_s16le;

/// Longest Ogg page: header, 255 lacing values, 255 × 255 body bytes.
const MAX_PAGE: usize = 27 + 255 + 255 * 255;
/// Bytes asked of the input per read.
const READ_CHUNK: usize = 16 * 1024;
/// First-pages (BOS) looked at for an Opus stream before handing the stream to symphonia.
const MAX_BOS_PAGES: usize = 4;
/// Longest PCM block yielded.
const BLOCK_MS: usize = 100;
/// Sample rates `LiveEncoder` takes.
const RATES: std::ops::RangeInclusive<u32> = 8000..=192_000;
/// Leading ID3v2 tags skipped on an MP3 source.
const MAX_ID3_TAGS: usize = 4;

type Input = Box<dyn Read + Send + Sync>;

/// The container a source declares with its Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Ogg,
    Mp3,
}

impl SourceKind {
    /// `audio/ogg`, `application/ogg`, `audio/opus`, `audio/vorbis`, `audio/flac`, `audio/x-flac`
    /// (Ogg FLAC) → Ogg; `audio/mpeg`, `audio/mp3`, `audio/x-mpeg` → Mp3; parameters after `;`
    /// ignored, case-insensitive; anything else None.
    pub fn from_content_type(ct: &str) -> Option<SourceKind> {
        let essence = ct.split_once(';').map_or(ct, |(e, _)| e);
        match essence.trim().to_ascii_lowercase().as_str() {
            "audio/ogg" | "application/ogg" | "audio/opus" | "audio/vorbis" | "audio/flac"
            | "audio/x-flac" => Some(SourceKind::Ogg),
            "audio/mpeg" | "audio/mp3" | "audio/x-mpeg" => Some(SourceKind::Mp3),
            _ => None,
        }
    }
}

/// What a source yields.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceAudio {
    /// An Ogg Opus source's head (first item of each logical stream): its packets follow undecoded.
    OpusHead { channels: u16, pre_skip: u16 },
    /// One Opus packet, passed through as it came.
    OpusPacket(Bytes),
    /// Decoded audio of any other format: interleaved pcm_s16le (little-endian bytes), downmixed
    /// to ≤ 2 channels, at the source's own rate.
    Pcm {
        sample_rate: u32,
        channels: u16,
        data: Bytes,
    },
}

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
fn open_ogg(input: Input) -> Result<Inner> {
    let mut pages = PageReader::new(input);
    let Some(first) = pages.next_page()? else {
        return Err(if pages.buf.is_empty() {
            MediaError::Empty
        } else {
            MediaError::Truncated("the stream ends inside its first Ogg page".into())
        });
    };
    if first.flags & FLAG_BOS == 0 {
        return Err(MediaError::Malformed(
            "not an Ogg stream: the first page is not a stream start".into(),
        ));
    }
    if has_opus_start(&mut pages, first)? {
        pages.rewind();
        let opus = OpusPackets {
            pages,
            demux: OpusDemux::default(),
        };
        return Ok(Inner::Opus(Box::new(opus)));
    }
    let (prefix, rest) = pages.into_parts();
    Ok(Inner::Decoded(Box::new(Decoded::open(
        Container::Ogg,
        prefix,
        rest,
    )?)))
}

/// Whether one of the stream's first BOS pages (from `first` on) starts with `OpusHead`.
fn has_opus_start(pages: &mut PageReader, first: PageInfo) -> Result<bool> {
    let mut page = Some(first);
    for _ in 0..MAX_BOS_PAGES {
        let Some(p) = page.filter(|p| p.flags & FLAG_BOS != 0) else {
            break;
        };
        if first_packet(pages.bytes(&p)).starts_with(b"OpusHead") {
            return Ok(true);
        }
        page = pages.next_page()?;
    }
    Ok(false)
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
// Ogg pages from a byte stream.

/// Ogg pages parsed from a blocking, non-seekable reader, holding at most about one page.
struct PageReader {
    input: Input,
    buf: Vec<u8>,
    /// Start of the bytes not parsed yet.
    pos: usize,
    /// Keep every byte read (until [`PageReader::rewind`] or [`PageReader::into_parts`]).
    recording: bool,
    /// A valid page was seen: later garbage is skipped (resync) instead of refused.
    synced: bool,
    eof: bool,
}

/// What the bytes at the read position hold.
enum Found {
    Page(PageInfo),
    Invalid,
    End,
}

impl PageReader {
    fn new(input: Input) -> Self {
        PageReader {
            input,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            recording: true,
            synced: false,
            eof: false,
        }
    }

    /// The next valid page (offsets into the buffer, valid until the next call); `None` at the end.
    fn next_page(&mut self) -> Result<Option<PageInfo>> {
        if !self.recording {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut skipped = 0usize;
        loop {
            match self.at_pos()? {
                Found::Page(page) => {
                    self.pos += page.len;
                    self.synced = true;
                    return Ok(Some(page));
                }
                Found::End => return Ok(None),
                Found::Invalid if !self.synced => {
                    return Err(MediaError::Malformed("not an Ogg stream".into()));
                }
                Found::Invalid => {
                    skipped += self.skip_to_capture();
                    if skipped > MAX_PAGE {
                        return Err(MediaError::Malformed(format!(
                            "lost Ogg page sync: no valid page in {MAX_PAGE} bytes"
                        )));
                    }
                }
            }
        }
    }

    /// Reads and checks the page at the read position.
    fn at_pos(&mut self) -> Result<Found> {
        if !self.fill(27)? {
            return Ok(Found::End);
        }
        let h = &self.buf[self.pos..self.pos + 27];
        if &h[..4] != b"OggS" || h[4] != 0 {
            return Ok(Found::Invalid);
        }
        let nseg = usize::from(h[26]);
        if !self.fill(27 + nseg)? {
            return Ok(Found::End);
        }
        let table = &self.buf[self.pos + 27..self.pos + 27 + nseg];
        let body: usize = table.iter().map(|&s| usize::from(s)).sum();
        if !self.fill(27 + nseg + body)? {
            return Ok(Found::End);
        }
        Ok(parse_page(&self.buf, self.pos).map_or(Found::Invalid, Found::Page))
    }

    /// Moves past at least one byte, to the next `OggS` buffered (or near the buffer's end).
    fn skip_to_capture(&mut self) -> usize {
        let rest = self.buf.get(self.pos + 1..).unwrap_or_default();
        let step = match rest.windows(4).position(|w| w == b"OggS") {
            Some(at) => at + 1,
            None => rest.len().saturating_sub(3) + 1,
        };
        self.pos = (self.pos + step).min(self.buf.len());
        step
    }

    /// Makes `want` unparsed bytes available; false if the input ends first.
    fn fill(&mut self, want: usize) -> Result<bool> {
        while self.buf.len() - self.pos < want {
            if self.eof {
                return Ok(false);
            }
            self.read_more()?;
        }
        Ok(true)
    }

    /// One read of the input into the buffer.
    fn read_more(&mut self) -> Result<()> {
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        let got = loop {
            match self.input.read(&mut self.buf[len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(e.into());
                }
            }
        };
        self.buf.truncate(len + got.min(READ_CHUNK));
        self.eof = got == 0;
        Ok(())
    }

    /// The bytes of a page returned by the last [`PageReader::next_page`].
    fn bytes(&self, page: &PageInfo) -> &[u8] {
        self.buf
            .get(page.offset..page.offset + page.len)
            .unwrap_or_default()
    }

    /// Parses the recorded bytes again from the start, then stops recording.
    fn rewind(&mut self) {
        self.pos = 0;
        self.recording = false;
    }

    /// Every byte read so far, and the rest of the input.
    fn into_parts(self) -> (Vec<u8>, Input) {
        (self.buf, self.input)
    }
}

/// A page's lacing table and body.
fn split_page(page: &[u8]) -> (&[u8], &[u8]) {
    let nseg = page.get(26).map_or(0, |&n| usize::from(n));
    let table = page.get(27..27 + nseg).unwrap_or_default();
    let body = page.get(27 + nseg..).unwrap_or_default();
    (table, body)
}

/// The first packet on a page (up to the page's end if it goes on).
fn first_packet(page: &[u8]) -> &[u8] {
    let (table, body) = split_page(page);
    let mut len = 0usize;
    for &lace in table {
        len += usize::from(lace);
        if lace < 255 {
            break;
        }
    }
    body.get(..len).unwrap_or(body)
}

// ---------------------------------------------------------------------------------------------
// Ogg Opus passthrough.

/// Opus packets of an Ogg stream, undecoded.
struct OpusPackets {
    pages: PageReader,
    demux: OpusDemux,
}

impl OpusPackets {
    /// Queues the items of the next page; false at the end of input.
    fn fill(&mut self, out: &mut VecDeque<SourceAudio>) -> Result<bool> {
        let Some(page) = self.pages.next_page()? else {
            return Ok(false);
        };
        self.demux.page(self.pages.bytes(&page), &page, out)?;
        Ok(true)
    }
}

/// Follows one Opus logical stream (per chain link) through its pages.
#[derive(Default)]
struct OpusDemux {
    follow: Option<Follow>,
    /// The last page was a BOS page: further BOS pages belong to the same link.
    in_bos_group: bool,
    packet: Vec<u8>,
    /// `packet` holds the start of a packet that goes on.
    open: bool,
}

/// The stream being followed.
struct Follow {
    serial: u32,
    stage: Stage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Tags,
    Audio,
    Ended,
}

impl OpusDemux {
    /// Handles one page, queueing what it completes.
    fn page(
        &mut self,
        page: &[u8],
        info: &PageInfo,
        out: &mut VecDeque<SourceAudio>,
    ) -> Result<()> {
        if info.flags & FLAG_BOS != 0 {
            return self.bos_page(page, info, out);
        }
        if std::mem::take(&mut self.in_bos_group) && self.follow.is_none() {
            return Err(MediaError::Unsupported(
                "a chained Ogg stream changed from Opus to another codec".into(),
            ));
        }
        let ours = self
            .follow
            .as_ref()
            .is_some_and(|f| f.serial == info.serial && f.stage != Stage::Ended);
        if !ours {
            return Ok(());
        }
        self.feed(page, info, out)?;
        if info.flags & FLAG_EOS != 0 {
            self.end_stream();
        }
        Ok(())
    }

    /// A stream's first page: a new chain link starts at the first BOS after other pages.
    fn bos_page(
        &mut self,
        page: &[u8],
        info: &PageInfo,
        out: &mut VecDeque<SourceAudio>,
    ) -> Result<()> {
        if !self.in_bos_group {
            self.in_bos_group = true;
            self.follow = None;
            self.reset_packet();
        }
        let head = first_packet(page);
        if self.follow.is_some() || !head.starts_with(b"OpusHead") {
            return Ok(());
        }
        out.push_back(parse_head(head)?);
        self.follow = Some(Follow {
            serial: info.serial,
            stage: Stage::Tags,
        });
        if info.flags & FLAG_EOS != 0 {
            self.end_stream();
        }
        Ok(())
    }

    /// Splits a page of the followed stream into packet pieces by its lacing values.
    fn feed(
        &mut self,
        page: &[u8],
        info: &PageInfo,
        out: &mut VecDeque<SourceAudio>,
    ) -> Result<()> {
        let (table, body) = split_page(page);
        let continued = info.flags & FLAG_CONTINUED != 0;
        if !continued && self.open {
            self.reset_packet(); // the packet held never ended: drop it
        }
        // The end of a packet whose start was not seen (lost page, or a stream cut in).
        let mut skipping = continued && !self.open;
        let mut at = 0usize;
        for &lace in table {
            let end = at + usize::from(lace);
            let piece = body.get(at..end).unwrap_or_default();
            at = end;
            if !skipping {
                self.append(piece)?;
                self.open = true;
            }
            if lace < 255 {
                if skipping {
                    skipping = false;
                } else {
                    self.finish_packet(out)?;
                }
            }
        }
        Ok(())
    }

    /// Adds a piece to the packet: only the magic of `OpusTags`, at most `MAX_PACKET` of audio.
    fn append(&mut self, piece: &[u8]) -> Result<()> {
        if self.stage() == Some(Stage::Tags) {
            let room = 8usize.saturating_sub(self.packet.len());
            self.packet
                .extend_from_slice(piece.get(..room).unwrap_or(piece));
            return Ok(());
        }
        if self.packet.len() + piece.len() > MAX_PACKET {
            return Err(MediaError::Limit(format!(
                "Opus packet over {MAX_PACKET} bytes"
            )));
        }
        self.packet.extend_from_slice(piece);
        Ok(())
    }

    /// A packet ended: checks `OpusTags`, or queues an audio packet.
    fn finish_packet(&mut self, out: &mut VecDeque<SourceAudio>) -> Result<()> {
        self.open = false;
        let Some(follow) = self.follow.as_mut() else {
            self.packet.clear();
            return Ok(());
        };
        match follow.stage {
            Stage::Tags if !self.packet.starts_with(b"OpusTags") => {
                return Err(MediaError::Malformed("missing OpusTags".into()));
            }
            Stage::Tags => follow.stage = Stage::Audio,
            Stage::Audio if !self.packet.is_empty() => {
                out.push_back(SourceAudio::OpusPacket(Bytes::copy_from_slice(
                    &self.packet,
                )));
            }
            _ => {}
        }
        self.packet.clear();
        Ok(())
    }

    fn stage(&self) -> Option<Stage> {
        self.follow.as_ref().map(|f| f.stage)
    }

    /// The followed stream's EOS page: ignore its serial until the next chain link.
    fn end_stream(&mut self) {
        if let Some(f) = self.follow.as_mut() {
            f.stage = Stage::Ended;
        }
        self.reset_packet();
    }

    fn reset_packet(&mut self) {
        self.packet.clear();
        self.open = false;
    }
}

/// The `OpusHead` item, for the mono or stereo streams a live encoder takes.
fn parse_head(packet: &[u8]) -> Result<SourceAudio> {
    let head = OpusHead::parse(packet)?;
    if head.channels > 2 {
        return Err(MediaError::Unsupported(format!(
            "{}-channel Opus",
            head.channels
        )));
    }
    let family = packet.get(18).copied().unwrap_or(0);
    // Family 1 with one (coupled) stream in order is the same bitstream as family 0.
    let ch = head.channels;
    let plain = [1, ch.saturating_sub(1), 0, 1];
    let table = &plain[..2 + usize::from(ch)];
    if family != 0 && packet.get(19..21 + usize::from(ch)) != Some(table) {
        return Err(MediaError::Unsupported(format!(
            "Opus channel mapping family {family}"
        )));
    }
    Ok(SourceAudio::OpusHead {
        channels: u16::from(ch),
        pre_skip: head.pre_skip,
    })
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
