//! Ogg Opus from a live source, passed through: bytes are pushed in as they arrive (no blocking
//! reads), pages are parsed and checked, packets are reassembled across pages and come out
//! undecoded after an `OpusHead` item (again at each link of a chained stream).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::error::{MediaError, Result};
use crate::mux::MAX_PACKET;
use crate::ogg::{FLAG_BOS, FLAG_CONTINUED, FLAG_EOS, PageInfo, parse_page};
use crate::opus_head::OpusHead;
use crate::source_audio::SourceAudio;

/// Longest Ogg page: header, 255 lacing values, 255 × 255 body bytes.
const MAX_PAGE: usize = 27 + 255 + 255 * 255;
/// First pages (BOS) looked at for an Opus stream before calling the source something else.
const MAX_BOS_PAGES: usize = 4;

/// How an Ogg source's first bytes begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OggStart {
    /// Not enough bytes to tell yet.
    More,
    /// An Opus stream: pass it through with [`OpusPassthrough`].
    Opus,
    /// Another codec (Vorbis, FLAC): decode it.
    Other,
}

/// Tells from `prefix` (every byte of the source so far; `eof` when no more will come) whether
/// the stream is Ogg Opus. Errors for what is not an Ogg stream at all.
pub fn ogg_start(prefix: &[u8], eof: bool) -> Result<OggStart> {
    let mut scan = Scanner::default();
    for n in 0..MAX_BOS_PAGES {
        let page = match scan.next(prefix)? {
            Scan::Page(p) => p,
            Scan::More if !eof => return Ok(OggStart::More),
            Scan::More if n > 0 => return Ok(OggStart::Other),
            Scan::More if prefix.is_empty() => return Err(MediaError::Empty),
            Scan::More => {
                return Err(MediaError::Truncated(
                    "the stream ends inside its first Ogg page".into(),
                ));
            }
        };
        if page.flags & FLAG_BOS == 0 {
            if n == 0 {
                return Err(MediaError::Malformed(
                    "not an Ogg stream: the first page is not a stream start".into(),
                ));
            }
            return Ok(OggStart::Other);
        }
        let bytes = prefix.get(page.offset..page.offset + page.len);
        if first_packet(bytes.unwrap_or_default()).starts_with(b"OpusHead") {
            return Ok(OggStart::Opus);
        }
    }
    Ok(OggStart::Other)
}

/// Ogg Opus bytes in, Opus items out; holds at most about one page between pushes.
#[derive(Default)]
pub struct OpusPassthrough {
    buf: Vec<u8>,
    scan: Scanner,
    demux: OpusDemux,
}

impl OpusPassthrough {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next bytes of the stream; queues the items of the pages they complete.
    pub fn push(&mut self, data: &[u8], out: &mut VecDeque<SourceAudio>) -> Result<()> {
        self.buf.drain(..self.scan.pos);
        self.scan.pos = 0;
        self.buf.extend_from_slice(data);
        while let Scan::Page(page) = self.scan.next(&self.buf)? {
            let bytes = self.buf.get(page.offset..page.offset + page.len);
            self.demux.page(bytes.unwrap_or_default(), &page, out)?;
        }
        Ok(())
    }
}

/// Where a scan of buffered bytes is.
#[derive(Default)]
struct Scanner {
    /// Start of the bytes not parsed yet.
    pos: usize,
    /// A valid page was seen: later garbage is skipped (resync) instead of refused.
    synced: bool,
    /// Garbage skipped since the last page.
    skipped: usize,
}

/// The next thing in the buffer.
enum Scan {
    Page(PageInfo),
    /// The rest is (the start of) an incomplete page.
    More,
}

impl Scanner {
    /// The next valid page in `buf` from the scan's position, skipping garbage once synced.
    fn next(&mut self, buf: &[u8]) -> Result<Scan> {
        loop {
            match at(buf, self.pos) {
                Found::Page(page) => {
                    self.pos += page.len;
                    self.synced = true;
                    self.skipped = 0;
                    return Ok(Scan::Page(page));
                }
                Found::Short => return Ok(Scan::More),
                Found::Invalid if !self.synced => {
                    return Err(MediaError::Malformed("not an Ogg stream".into()));
                }
                Found::Invalid => {
                    self.skipped += self.skip_to_capture(buf);
                    if self.skipped > MAX_PAGE {
                        return Err(MediaError::Malformed(format!(
                            "lost Ogg page sync: no valid page in {MAX_PAGE} bytes"
                        )));
                    }
                }
            }
        }
    }

    /// Moves past at least one byte, to the next `OggS` buffered (or near the buffer's end).
    fn skip_to_capture(&mut self, buf: &[u8]) -> usize {
        let rest = buf.get(self.pos + 1..).unwrap_or_default();
        let step = match rest.windows(4).position(|w| w == b"OggS") {
            Some(at) => at + 1,
            None => rest.len().saturating_sub(3) + 1,
        };
        self.pos = (self.pos + step).min(buf.len());
        step
    }
}

/// What the bytes at `pos` hold.
enum Found {
    Page(PageInfo),
    Invalid,
    Short,
}

/// Checks the page at `pos` once all of it is buffered.
fn at(buf: &[u8], pos: usize) -> Found {
    let rest = buf.get(pos..).unwrap_or_default();
    let Some(h) = rest.get(..27) else {
        return Found::Short;
    };
    if &h[..4] != b"OggS" || h[4] != 0 {
        return Found::Invalid;
    }
    let nseg = usize::from(h[26]);
    let Some(table) = rest.get(27..27 + nseg) else {
        return Found::Short;
    };
    let body: usize = table.iter().map(|&s| usize::from(s)).sum();
    if rest.len() < 27 + nseg + body {
        return Found::Short;
    }
    parse_page(buf, pos).map_or(Found::Invalid, Found::Page)
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
