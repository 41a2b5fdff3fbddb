//! Min/max waveform peaks in BBC audiowaveform's version 2 format (JSON and binary `.dat`).

use serde::{Deserialize, Serialize};

use crate::error::{MediaError, Result};

/// How to draw the waveform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveformOptions {
    /// Source samples per output point (default 256).
    pub samples_per_pixel: u32,
    /// 8 or 16 bits per value (default 8).
    pub bits: u8,
    /// One min/max series per channel instead of one for the mix (default false).
    pub split_channels: bool,
}

impl Default for WaveformOptions {
    fn default() -> Self {
        WaveformOptions {
            samples_per_pixel: 256,
            bits: 8,
            split_channels: false,
        }
    }
}

/// A finished waveform: `data` holds min,max per channel per point, at `bits` resolution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waveform {
    pub version: u32,
    pub channels: u32,
    pub sample_rate: u32,
    pub samples_per_pixel: u32,
    pub bits: u8,
    pub length: u32,
    pub data: Vec<i16>,
}

impl Waveform {
    /// audiowaveform `--output-format json` layout.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// audiowaveform `.dat` (version 2) layout, little-endian.
    pub fn to_dat(&self) -> Vec<u8> {
        let width = if self.bits == 8 { 1 } else { 2 };
        let mut out = Vec::with_capacity(24 + self.data.len() * width);
        out.extend_from_slice(&2i32.to_le_bytes());
        out.extend_from_slice(&u32::from(self.bits == 8).to_le_bytes());
        out.extend_from_slice(&(self.sample_rate as i32).to_le_bytes());
        out.extend_from_slice(&(self.samples_per_pixel as i32).to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&(self.channels as i32).to_le_bytes());
        for &v in &self.data {
            if self.bits == 8 {
                out.push(v as i8 as u8);
            } else {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// Parses a version 2 `.dat` file.
    pub fn from_dat(dat: &[u8]) -> Result<Waveform> {
        let word = |i: usize| -> Result<u32> {
            let b = dat
                .get(i * 4..i * 4 + 4)
                .ok_or(MediaError::Truncated("dat header".into()))?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if word(0)? != 2 {
            return Err(MediaError::Unsupported("dat version".into()));
        }
        let bits = if word(1)? & 1 == 1 { 8 } else { 16 };
        let (length, channels) = (word(4)?, word(5)?);
        let body = &dat[24..];
        let data: Vec<i16> = if bits == 8 {
            body.iter().map(|&b| i16::from(b as i8)).collect()
        } else {
            body.chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect()
        };
        if data.len() as u64 != u64::from(length) * u64::from(channels) * 2 {
            return Err(MediaError::Malformed("dat length".into()));
        }
        Ok(Waveform {
            version: 2,
            channels,
            sample_rate: word(2)?,
            samples_per_pixel: word(3)?,
            bits,
            length,
            data,
        })
    }
}

/// Accumulates peaks block by block while the audio streams past.
pub struct WaveformBuilder {
    opts: WaveformOptions,
    sample_rate: u32,
    in_channels: usize,
    out_channels: usize,
    min: Vec<i16>,
    max: Vec<i16>,
    count: u32,
    data: Vec<i16>,
}

impl WaveformBuilder {
    /// A builder for audio with `channels` interleaved channels at `sample_rate`.
    pub fn new(
        sample_rate: u32,
        channels: usize,
        opts: WaveformOptions,
    ) -> Result<WaveformBuilder> {
        if opts.samples_per_pixel < 2 || !(opts.bits == 8 || opts.bits == 16) || channels == 0 {
            return Err(MediaError::InvalidArgument(
                "waveform: samples_per_pixel ≥ 2, bits 8 or 16".into(),
            ));
        }
        let out_channels = if opts.split_channels { channels } else { 1 };
        Ok(WaveformBuilder {
            opts,
            sample_rate,
            in_channels: channels,
            out_channels,
            min: vec![i16::MAX; out_channels],
            max: vec![i16::MIN; out_channels],
            count: 0,
            data: Vec::new(),
        })
    }

    /// Adds a block of interleaved samples.
    pub fn push(&mut self, block: &[f32]) {
        for frame in block.chunks_exact(self.in_channels) {
            if self.opts.split_channels {
                for (c, &s) in frame.iter().enumerate() {
                    let v = to_i16(s);
                    self.min[c] = self.min[c].min(v);
                    self.max[c] = self.max[c].max(v);
                }
            } else {
                let sum: i32 = frame.iter().map(|&s| i32::from(to_i16(s))).sum();
                let v = (sum / self.in_channels as i32) as i16;
                self.min[0] = self.min[0].min(v);
                self.max[0] = self.max[0].max(v);
            }
            self.count += 1;
            if self.count == self.opts.samples_per_pixel {
                self.emit();
            }
        }
    }

    fn emit(&mut self) {
        for c in 0..self.out_channels {
            let (lo, hi) = (self.min[c], self.max[c]);
            if self.opts.bits == 8 {
                self.data.push(lo / 256);
                self.data.push(hi / 256);
            } else {
                self.data.push(lo);
                self.data.push(hi);
            }
            self.min[c] = i16::MAX;
            self.max[c] = i16::MIN;
        }
        self.count = 0;
    }

    /// Emits the last partial point and returns the waveform.
    pub fn finish(mut self) -> Waveform {
        if self.count > 0 {
            self.emit();
        }
        let length = (self.data.len() / (2 * self.out_channels)) as u32;
        Waveform {
            version: 2,
            channels: self.out_channels as u32,
            sample_rate: self.sample_rate,
            samples_per_pixel: self.opts.samples_per_pixel,
            bits: self.opts.bits,
            length,
            data: self.data,
        }
    }
}

fn to_i16(s: f32) -> i16 {
    (s * 32768.0).clamp(-32768.0, 32767.0) as i16
}
