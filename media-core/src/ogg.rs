//! Ogg pages (RFC 3533): CRC, page parsing, and an Ogg Opus muxer that records a seek index.

use crate::index::{PageEntry, SeekIndex};
use crate::opus_in::{OPUS_RATE, OpusHead};
use crate::probe::Tags;

/// Header flag: packet continued from the previous page.
pub const FLAG_CONTINUED: u8 = 0x01;
/// Header flag: first page of the logical stream.
pub const FLAG_BOS: u8 = 0x02;
/// Header flag: last page of the logical stream.
pub const FLAG_EOS: u8 = 0x04;
/// Vendor string written into `OpusTags`.
pub const VENDOR: &str = concat!("veza-media-core ", env!("CARGO_PKG_VERSION"));

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut j = 0;
        while j < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04c1_1db7
            } else {
                r << 1
            };
            j += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
}

/// The Ogg CRC-32 (polynomial 0x04c11db7, no reflection, zero init).
pub fn crc32(data: &[u8]) -> u32 {
    data.iter().fold(0u32, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[((crc >> 24) as u8 ^ b) as usize]
    })
}

/// One parsed page header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageInfo {
    /// Byte offset of the page in the buffer it was parsed from.
    pub offset: usize,
    /// Total page length (header + segment table + body).
    pub len: usize,
    pub flags: u8,
    pub granule: u64,
    pub serial: u32,
    pub sequence: u32,
    /// Number of packets that end on this page.
    pub packets_ending: usize,
}

/// Parses and CRC-checks the page at `offset`; `None` if it is not a valid page.
pub fn parse_page(data: &[u8], offset: usize) -> Option<PageInfo> {
    let table_at = offset.checked_add(27)?;
    let h = data.get(offset..table_at)?;
    if &h[..4] != b"OggS" || h[4] != 0 {
        return None;
    }
    let nseg = usize::from(h[26]);
    let table = data.get(table_at..table_at.checked_add(nseg)?)?;
    // At most 255 × 255 bytes: no overflow.
    let body: usize = table.iter().map(|&s| usize::from(s)).sum();
    let len = 27 + nseg + body;
    let page = data.get(offset..offset.checked_add(len)?)?;
    let stored = u32::from_le_bytes(page[22..26].try_into().ok()?);
    let mut crc = crc32(&page[..22]);
    for &b in &[0u8; 4] {
        crc = (crc << 8) ^ CRC_TABLE[((crc >> 24) as u8 ^ b) as usize];
    }
    for &b in &page[26..] {
        crc = (crc << 8) ^ CRC_TABLE[((crc >> 24) as u8 ^ b) as usize];
    }
    if crc != stored {
        return None;
    }
    Some(PageInfo {
        offset,
        len,
        flags: h[5],
        granule: u64::from_le_bytes(h[6..14].try_into().ok()?),
        serial: u32::from_le_bytes(h[14..18].try_into().ok()?),
        sequence: u32::from_le_bytes(h[18..22].try_into().ok()?),
        packets_ending: table.iter().filter(|&&s| s < 255).count(),
    })
}

/// Parses every page of a buffer; `None` if any byte is not part of a valid page.
pub fn parse_pages(data: &[u8]) -> Option<Vec<PageInfo>> {
    let mut pages = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        let page = parse_page(data, offset)?;
        offset = offset.checked_add(page.len)?;
        pages.push(page);
    }
    Some(pages)
}

/// Packet bodies of one page, split by its lacing values (packets continued across pages are
/// not reassembled: the muxer never writes them).
pub fn page_packets(data: &[u8], page: &PageInfo) -> Vec<std::ops::Range<usize>> {
    let Some(&nseg) = data.get(page.offset + 26) else {
        return Vec::new();
    };
    let nseg = usize::from(nseg);
    let Some(table_at) = page.offset.checked_add(27) else {
        return Vec::new();
    };
    let Some(body_at) = table_at.checked_add(nseg) else {
        return Vec::new();
    };
    let Some(table) = data.get(table_at..body_at) else {
        return Vec::new();
    };
    let mut start = body_at;
    let mut end = start;
    let mut out = Vec::new();
    for &lace in table {
        end = end.saturating_add(usize::from(lace));
        if end > data.len() {
            break;
        }
        if lace < 255 {
            out.push(start..end);
            start = end;
        }
    }
    out
}

/// Writes one page holding whole packets.
fn write_page(
    out: &mut Vec<u8>,
    flags: u8,
    granule: u64,
    serial: u32,
    seq: u32,
    packets: &[&[u8]],
) {
    let start = out.len();
    out.extend_from_slice(b"OggS");
    out.push(0);
    out.push(flags);
    out.extend_from_slice(&granule.to_le_bytes());
    out.extend_from_slice(&serial.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let nseg_at = out.len();
    out.push(0);
    let mut nseg = 0u8;
    for p in packets {
        for _ in 0..p.len() / 255 {
            out.push(255);
        }
        out.push((p.len() % 255) as u8);
        nseg += (p.len() / 255 + 1) as u8;
    }
    out[nseg_at] = nseg;
    for p in packets {
        out.extend_from_slice(p);
    }
    let crc = crc32(&out[start..]);
    out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
}

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
        let comments = crate::opus_in::opus_tags(VENDOR, tags);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Vec<u8> {
        let mut out = Vec::new();
        write_page(&mut out, FLAG_BOS, 42, 7, 0, &[b"hello", &[9u8; 300]]);
        out
    }

    #[test]
    fn written_page_parses_with_its_fields() {
        let data = page();
        let p = parse_page(&data, 0).expect("valid page");
        assert_eq!(
            (p.len, p.flags, p.granule, p.serial, p.sequence),
            (data.len(), FLAG_BOS, 42, 7, 0)
        );
        assert_eq!(p.packets_ending, 2);
        let packets = page_packets(&data, &p);
        assert_eq!(&data[packets[0].clone()], b"hello");
        assert_eq!(packets[1].len(), 300);
    }

    #[test]
    fn any_flipped_byte_fails_the_crc() {
        let data = page();
        for i in [5, 10, 22, 27, data.len() - 1] {
            let mut bad = data.clone();
            bad[i] ^= 0x10;
            assert!(parse_page(&bad, 0).is_none(), "byte {i}");
        }
    }
}
