//! Opus encoding with libopus: 20 ms frames, constrained VBR, lookahead-aware padding at the end.

use crate::error::{MediaError, Result};

/// Samples per channel in a 20 ms frame at 48 kHz.
pub const FRAME: usize = 960;
/// Maximum bytes of one encoded packet we ask libopus for.
const MAX_PACKET: usize = 4000;
/// libopus' default complexity, the one ffmpeg uses.
pub const DEFAULT_COMPLEXITY: i32 = 10;

/// Settings of one Opus rendition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderSettings {
    pub bitrate_kbps: u32,
    pub complexity: i32,
}

/// A libopus encoder fed with arbitrary-sized blocks of interleaved 48 kHz f32.
pub struct OpusEncoder {
    enc: opus::Encoder,
    channels: usize,
    pre_skip: u16,
    frame: Vec<f32>,
    packet: Vec<u8>,
    frames_in: u64,
    packets_out: u64,
}

impl OpusEncoder {
    /// A constrained-VBR encoder for `channels` (1 or 2).
    pub fn new(channels: usize, settings: EncoderSettings) -> Result<OpusEncoder> {
        let layout = match channels {
            1 => opus::Channels::Mono,
            2 => opus::Channels::Stereo,
            n => {
                return Err(MediaError::InvalidArgument(format!(
                    "{n} channels for Opus"
                )));
            }
        };
        if !(6..=510).contains(&settings.bitrate_kbps) {
            return Err(MediaError::InvalidArgument(format!(
                "{} kbps",
                settings.bitrate_kbps
            )));
        }
        let mut enc = opus::Encoder::new(48_000, layout, opus::Application::Audio)?;
        enc.set_bitrate(opus::Bitrate::Bits(settings.bitrate_kbps as i32 * 1000))?;
        enc.set_vbr(true)?;
        enc.set_vbr_constraint(true)?;
        enc.set_complexity(settings.complexity.clamp(0, 10))?;
        let pre_skip = u16::try_from(enc.get_lookahead()?).unwrap_or(312);
        Ok(OpusEncoder {
            enc,
            channels,
            pre_skip,
            frame: Vec::with_capacity(FRAME * channels),
            packet: vec![0; MAX_PACKET],
            frames_in: 0,
            packets_out: 0,
        })
    }

    /// Samples the decoder must drop at the start (the encoder's lookahead).
    pub fn pre_skip(&self) -> u16 {
        self.pre_skip
    }

    /// Frames (per channel) pushed so far.
    pub fn frames_in(&self) -> u64 {
        self.frames_in
    }

    /// Encodes every complete 20 ms frame; `sink` gets each packet.
    pub fn push(
        &mut self,
        mut pcm: &[f32],
        sink: &mut impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let frame_len = FRAME * self.channels;
        self.frames_in += (pcm.len() / self.channels) as u64;
        if !self.frame.is_empty() {
            let take = (frame_len - self.frame.len()).min(pcm.len());
            self.frame.extend_from_slice(&pcm[..take]);
            pcm = &pcm[take..];
            if self.frame.len() == frame_len {
                let frame = std::mem::take(&mut self.frame);
                self.encode(&frame, sink)?;
                self.frame = frame;
                self.frame.clear();
            }
        }
        let mut whole = pcm.chunks_exact(frame_len);
        for frame in whole.by_ref() {
            self.encode(frame, sink)?;
        }
        self.frame.extend_from_slice(whole.remainder());
        Ok(())
    }

    /// Pads with silence until the decoded output covers pre-skip + every input sample.
    pub fn finish(&mut self, sink: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let needed = (self.frames_in + u64::from(self.pre_skip)).div_ceil(FRAME as u64);
        let frame_len = FRAME * self.channels;
        while self.packets_out < needed {
            let mut frame = std::mem::take(&mut self.frame);
            frame.resize(frame_len, 0.0);
            self.encode(&frame, sink)?;
            frame.clear();
            self.frame = frame;
        }
        Ok(())
    }

    fn encode(&mut self, frame: &[f32], sink: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let n = self.enc.encode_float(frame, &mut self.packet)?;
        self.packets_out += 1;
        sink(&self.packet[..n])
    }
}
