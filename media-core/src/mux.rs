//! The Ogg Opus muxer: Opus packets into Ogg pages, recording every audio page in a seek index.

use crate::index::{PageEntry, SeekIndex};
use crate::meta::Tags;
use crate::ogg::{FLAG_BOS, FLAG_EOS, parse_pages, write_page};
use crate::opus_head::{OPUS_RATE, OpusHead, opus_tags};

/// Vendor string written into `OpusTags`.
pub const VENDOR: &str = concat!("veza-media-core ", env!("CARGO_PKG_VERSION"));

/// Lacing segments a packet needs.
fn segments(len: usize) -> usize {
    len / 255 + 1
}

/// Largest Opus packet the muxer accepts.
pub const MAX_PACKET: usize = 255 * 254;

/// Builds an Ogg Opus stream page by page, recording every audio page in a seek index.
pub struct OggOpusMuxer {
    out: Vec<u8>,
    serial: u32,
    seq: u32,
    page_frames: u64,
    granule: u64,
    pending: Vec<u8>,
    pending_lens: Vec<usize>,
    pending_frames: u64,
    index: SeekIndex,
    /// Start offset in `out` of pages not yet taken with [`OggOpusMuxer::take_pages`].
    taken: usize,
    /// Bytes already handed to a writer by [`OggOpusMuxer::drain_to`] (the file offset of `out[0]`).
    base: u64,
}

impl OggOpusMuxer {
    /// Writes the two header pages. `page_ms` is the audio duration per page.
    pub fn new(
        channels: u8,
        pre_skip: u16,
        input_rate: u32,
        page_ms: u32,
        tags: &Tags,
        serial: u32,
    ) -> Self {
        let head = OpusHead {
            channels,
            pre_skip,
            input_rate,
            gain: 0,
        }
        .to_bytes();
        let comments = opus_tags(VENDOR, tags);
        let mut out = Vec::with_capacity(64 * 1024);
        write_page(&mut out, FLAG_BOS, 0, serial, 0, &[&head]);
        write_tags_pages(&mut out, serial, &comments);
        let seq = parse_pages(&out).map_or(2, |p| p.len() as u32);
        let index = SeekIndex::new(out.len() as u64, pre_skip, u16::from(channels));
        OggOpusMuxer {
            taken: out.len(),
            out,
            serial,
            seq,
            page_frames: u64::from(page_ms.max(1)) * u64::from(OPUS_RATE) / 1000,
            granule: 0,
            pending: Vec::new(),
            pending_lens: Vec::new(),
            pending_frames: 0,
            index,
            base: 0,
        }
    }

    /// Reserves room for `bytes` more output bytes.
    pub fn reserve(&mut self, bytes: usize) {
        self.out.reserve(bytes);
    }

    /// The header pages (`OpusHead` + `OpusTags`); empty once [`OggOpusMuxer::drain_to`] ran.
    pub fn headers(&self) -> &[u8] {
        if self.base > 0 {
            return &[];
        }
        &self.out[..self.index.header_len as usize]
    }

    /// Bytes of the stream produced so far (written out or buffered).
    pub fn len(&self) -> u64 {
        self.base.saturating_add(self.out.len() as u64)
    }

    /// Whether nothing was produced (never: the header pages are written at once).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes every complete page buffered so far to `w` and frees them, so a muxer writing a
    /// file keeps only the page being filled in memory (the seek index is kept).
    pub fn drain_to(&mut self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        w.write_all(&self.out)?;
        self.base = self.len();
        self.out.clear();
        self.taken = 0;
        if self.out.capacity() > 1 << 20 {
            self.out.shrink_to(64 * 1024);
        }
        Ok(())
    }

    /// Queues one packet of `frames` 48 kHz samples; flushes a page when it is full.
    pub fn push(&mut self, packet: &[u8], frames: u64) -> crate::Result<()> {
        if packet.len() > MAX_PACKET {
            return Err(crate::MediaError::Limit(format!(
                "Opus packet of {} bytes",
                packet.len()
            )));
        }
        let segs: usize = self.pending_lens.iter().map(|&l| segments(l)).sum();
        if segs + segments(packet.len()) > 255 {
            self.flush(0, None);
        }
        self.pending.extend_from_slice(packet);
        self.pending_lens.push(packet.len());
        self.pending_frames = self.pending_frames.saturating_add(frames);
        if self.pending_frames >= self.page_frames {
            self.flush(0, None);
        }
        Ok(())
    }

    /// Writes the queued packets as one page; `end_granule` overrides the granule (end trim).
    pub fn flush(&mut self, flags: u8, end_granule: Option<u64>) {
        if self.pending_lens.is_empty() && flags & FLAG_EOS == 0 {
            return;
        }
        self.granule =
            end_granule.unwrap_or_else(|| self.granule.saturating_add(self.pending_frames));
        let mut packets = Vec::with_capacity(self.pending_lens.len());
        let mut at = 0;
        for &len in &self.pending_lens {
            packets.push(&self.pending[at..at + len]);
            at += len;
        }
        let offset = self.len();
        write_page(
            &mut self.out,
            flags,
            self.granule,
            self.serial,
            self.seq,
            &packets,
        );
        self.index.pages.push(PageEntry {
            offset,
            granule: self.granule,
        });
        self.seq = self.seq.wrapping_add(1);
        self.pending.clear();
        self.pending_lens.clear();
        self.pending_frames = 0;
    }

    /// Granule position after everything pushed so far.
    pub fn granule(&self) -> u64 {
        self.granule.saturating_add(self.pending_frames)
    }

    /// Granule position of the last page written (an end trim may not go below it).
    pub fn written_granule(&self) -> u64 {
        self.granule
    }

    /// Bytes of complete pages written since the last call (for live streaming).
    pub fn take_pages(&mut self) -> &[u8] {
        let from = self.taken;
        self.taken = self.out.len();
        &self.out[from..]
    }

    /// Drops bytes already taken, keeping headers (bounds a live muxer's memory).
    pub fn discard_taken(&mut self) {
        let header = self.index.header_len as usize;
        if self.taken > header {
            self.out.drain(header..self.taken);
            self.taken = header;
            self.index.pages.clear();
        }
    }

    /// Ends the stream: last page flagged EOS with granule `end_granule`.
    pub fn finish(mut self, end_granule: u64) -> (Vec<u8>, SeekIndex) {
        self.flush(FLAG_EOS, Some(end_granule.max(self.granule)));
        if self.out.capacity() > self.out.len() / 4 * 5 {
            self.out.shrink_to_fit();
        }
        (self.out, self.index)
    }

    /// Ends the stream like [`OggOpusMuxer::finish`], writing what is left to `w`; returns the
    /// seek index and the stream's total length in bytes.
    pub fn finish_to(
        mut self,
        end_granule: u64,
        w: &mut dyn std::io::Write,
    ) -> std::io::Result<(SeekIndex, u64)> {
        self.flush(FLAG_EOS, Some(end_granule.max(self.granule)));
        self.drain_to(w)?;
        w.flush()?;
        Ok((self.index, self.base))
    }
}

/// `OpusTags` on its own page (tag values are capped so it always fits one page).
fn write_tags_pages(out: &mut Vec<u8>, serial: u32, comments: &[u8]) {
    write_page(out, 0, 0, serial, 1, &[comments]);
}
