//! Seek index of an Ogg Opus rendition: byte offset and granule of every audio page.

use serde::{Deserialize, Serialize};

use crate::error::{MediaError, Result};
use crate::ogg::{FLAG_BOS, parse_pages};
use crate::opus_head::{OPUS_RATE, OpusHead};

/// One audio page: where it starts and the granule position at its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageEntry {
    pub offset: u64,
    pub granule: u64,
}

/// Where every audio page of a rendition lives, for seeking and chunking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeekIndex {
    /// Length of the header pages (`OpusHead` + `OpusTags`) at the start of the file.
    pub header_len: u64,
    pub pre_skip: u16,
    pub channels: u16,
    pub sample_rate: u32,
    pub pages: Vec<PageEntry>,
}

impl SeekIndex {
    pub(crate) fn new(header_len: u64, pre_skip: u16, channels: u16) -> Self {
        SeekIndex {
            header_len,
            pre_skip,
            channels,
            sample_rate: OPUS_RATE,
            pages: Vec::new(),
        }
    }

    /// Rebuilds the index of an Ogg Opus file held in memory (e.g. read back from storage).
    pub fn from_ogg(data: &[u8]) -> Result<SeekIndex> {
        let pages =
            parse_pages(data).ok_or_else(|| MediaError::Malformed("bad Ogg page".into()))?;
        let first = pages.first().ok_or(MediaError::Empty)?;
        if first.flags & FLAG_BOS == 0 {
            return Err(MediaError::Malformed("first page is not BOS".into()));
        }
        let body = crate::ogg::page_packets(data, first);
        let head = body.first().map(|r| &data[r.clone()]).unwrap_or_default();
        let head = OpusHead::parse(head)?;
        // Headers end with the page that completes OpusTags (the second packet).
        let mut done: usize = 1;
        let mut i = 1;
        while done < 2 {
            let page = pages
                .get(i)
                .ok_or_else(|| MediaError::Truncated("no OpusTags".into()))?;
            done = done.saturating_add(page.packets_ending);
            i += 1;
        }
        let header_len = pages.get(i).map_or(data.len(), |p| p.offset) as u64;
        let mut index = SeekIndex::new(header_len, head.pre_skip, u16::from(head.channels));
        index.pages = pages[i..]
            .iter()
            .map(|p| PageEntry {
                offset: p.offset as u64,
                granule: p.granule,
            })
            .collect();
        Ok(index)
    }

    /// Granule where page `i` starts (the end of page `i - 1`).
    pub fn page_start_granule(&self, i: usize) -> u64 {
        match i {
            0 => 0,
            _ => self.pages.get(i - 1).map_or(0, |p| p.granule),
        }
    }

    /// Media time in ms of a granule position (pre-skip removed).
    pub fn granule_ms(&self, granule: u64) -> u64 {
        let frames = u128::from(granule.saturating_sub(u64::from(self.pre_skip)));
        let ms = (frames * 1000).checked_div(u128::from(self.sample_rate));
        ms.map_or(0, |ms| u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// Playable duration in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.pages.last().map_or(0, |p| self.granule_ms(p.granule))
    }

    /// Playable samples per channel at 48 kHz.
    pub fn total_frames(&self) -> u64 {
        self.pages
            .last()
            .map_or(0, |p| p.granule.saturating_sub(u64::from(self.pre_skip)))
    }

    /// Index of the page that holds media time `start_ms` (the last page if past the end).
    pub fn page_for_ms(&self, start_ms: u64) -> usize {
        let frames = u128::from(start_ms) * u128::from(self.sample_rate) / 1000;
        let target = u64::try_from(frames)
            .unwrap_or(u64::MAX)
            .saturating_add(u64::from(self.pre_skip));
        let i = self.pages.partition_point(|p| p.granule <= target);
        i.min(self.pages.len().saturating_sub(1))
    }

    /// Byte offset where page `i` starts (`file_len` for one past the end).
    pub fn page_offset(&self, i: usize, file_len: u64) -> u64 {
        self.pages.get(i).map_or(file_len, |p| p.offset)
    }

    /// The index as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
