//! Ogg Opus input: pages read with the `ogg` crate, headers from `opus_head`, audio decoded by libopus.

use std::io::{Read, Seek, SeekFrom};

use ogg::PacketReader;

use crate::error::{MediaError, Result};
use crate::meta::ProbeInfo;
use crate::ogg::parse_page;
use crate::opus_head::{OPUS_RATE, OpusHead, parse_opus_tags};
use crate::source::Measured;

/// Largest Opus packet duration (120 ms at 48 kHz).
const MAX_PACKET_FRAMES: usize = 5760;

/// Streaming Ogg Opus decoder with pre-skip and end trimming.
pub struct OggOpusReader<R: Read + Seek> {
    packets: PacketReader<R>,
    decoder: opus::Decoder,
    head: OpusHead,
    serial: u32,
    /// Samples (48 kHz, incl. pre-skip) decoded so far on the stream's granule timeline.
    pos: u64,
    pre_skip_left: usize,
    first_audio_page: bool,
    start_offset: u64,
    pcm: Vec<f32>,
}

impl<R: crate::source::Source> OggOpusReader<Measured<R>> {
    /// Reads `OpusHead` and `OpusTags` and returns a reader positioned on the first audio packet.
    pub fn open(src: Measured<R>) -> Result<(Self, ProbeInfo)> {
        let byte_len = src.len();
        let mut src = src;
        let last_granule = last_granule(&mut src)?;
        let mut packets = PacketReader::new(src);
        let first = packets
            .read_packet()?
            .ok_or(MediaError::Truncated("no OpusHead".into()))?;
        let head = OpusHead::parse(&first.data)?;
        let serial = first.stream_serial();
        let tags_packet =
            next_of(&mut packets, serial)?.ok_or(MediaError::Truncated("no OpusTags".into()))?;
        if !tags_packet.starts_with(b"OpusTags") {
            return Err(MediaError::Malformed("missing OpusTags".into()));
        }
        let channels = if head.channels == 1 {
            opus::Channels::Mono
        } else {
            opus::Channels::Stereo
        };
        let mut decoder = opus::Decoder::new(OPUS_RATE, channels)?;
        if head.gain != 0 {
            decoder.set_gain(i32::from(head.gain))?;
        }
        let mut info = ProbeInfo {
            codec: "opus".into(),
            container: "ogg".into(),
            sample_rate: OPUS_RATE,
            channels: u16::from(head.channels.min(2)),
            frames: last_granule.saturating_sub(u64::from(head.pre_skip)),
            duration_ms: 0,
            bitrate_bps: 0,
            byte_len,
            tags: parse_opus_tags(&tags_packet),
        };
        info.derive_rates();
        let reader = OggOpusReader {
            packets,
            decoder,
            head,
            serial,
            pos: 0,
            pre_skip_left: usize::from(head.pre_skip),
            first_audio_page: true,
            start_offset: 0,
            pcm: vec![0.0; MAX_PACKET_FRAMES * usize::from(head.channels.min(2))],
        };
        Ok((reader, info))
    }
}

impl<R: Read + Seek> OggOpusReader<R> {
    /// Decodes the next packet into `out` (interleaved f32); `false` at the end.
    pub fn next(&mut self, out: &mut Vec<f32>) -> Result<bool> {
        let mut bad = 0u32;
        loop {
            let Some(packet) = self.packets.read_packet()? else {
                return Ok(false);
            };
            if packet.stream_serial() != self.serial || packet.data.is_empty() {
                continue;
            }
            let ch = usize::from(self.head.channels.min(2));
            let frames = match self
                .decoder
                .decode_float(&packet.data, &mut self.pcm, false)
            {
                Ok(n) => n,
                Err(e) => {
                    bad += 1;
                    if bad > 32 {
                        return Err(e.into());
                    }
                    continue;
                }
            };
            let keep = self.trim_end(frames, &packet);
            let skip = self.pre_skip_left.min(keep);
            self.pre_skip_left -= skip;
            out.clear();
            out.extend_from_slice(&self.pcm[skip * ch..keep * ch]);
            if !out.is_empty() {
                return Ok(true);
            }
        }
    }

    /// Samples before the first page when the stream was cut from a later point (0 otherwise).
    pub fn start_offset(&self) -> u64 {
        self.start_offset
    }

    /// Advances the granule position; returns how many of `frames` are inside the stream.
    fn trim_end(&mut self, frames: usize, packet: &ogg::Packet) -> usize {
        let granule = packet.absgp_page();
        let mut keep = frames;
        if packet.last_in_stream() {
            keep = frames.min(granule.saturating_sub(self.pos) as usize);
        }
        self.pos = self.pos.saturating_add(frames as u64);
        if packet.last_in_page() && self.first_audio_page {
            // A stream cut from the middle starts later on the granule timeline (RFC 7845 §4.5).
            self.first_audio_page = false;
            self.start_offset = granule.saturating_sub(self.pos);
            self.pos = self.pos.max(granule);
        }
        keep
    }
}

/// The next packet of `serial`, skipping other logical streams.
fn next_of<R: Read + Seek>(packets: &mut PacketReader<R>, serial: u32) -> Result<Option<Vec<u8>>> {
    while let Some(p) = packets.read_packet()? {
        if p.stream_serial() == serial {
            return Ok(Some(p.data));
        }
    }
    Ok(None)
}

/// Granule of the last page, found by scanning the file's tail for `OggS`.
fn last_granule<R: crate::source::Source>(src: &mut Measured<R>) -> Result<u64> {
    let len = src.len();
    let start = len.saturating_sub(64 * 1024);
    src.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    src.by_ref().take(64 * 1024).read_to_end(&mut tail)?;
    src.seek(SeekFrom::Start(0))?;
    let mut best = 0;
    let mut i = 0;
    while let Some(found) = find_capture(&tail, i) {
        match parse_page(&tail, found) {
            Some(page) => {
                if page.granule != u64::MAX {
                    best = page.granule;
                }
                i = found.saturating_add(page.len);
            }
            None => i = found + 1,
        }
    }
    Ok(best)
}

fn find_capture(data: &[u8], from: usize) -> Option<usize> {
    let rest = data.get(from..)?;
    rest.windows(4).position(|w| w == b"OggS").map(|p| p + from)
}
