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
        let mut out = self.dat_header().to_vec();
        out.extend_from_slice(&dat_body(&self.data, self.bits));
        out
    }

    /// The 24-byte `.dat` header (the body follows it).
    pub fn dat_header(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        let words = [
            2u32,
            u32::from(self.bits == 8),
            self.sample_rate,
            self.samples_per_pixel,
            self.length,
            self.channels,
        ];
        for (slot, w) in out.chunks_exact_mut(4).zip(words) {
            slot.copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// Writes this waveform's JSON with its values read from `body` (a `.dat` body, as
    /// streamed by [`WaveformBuilder::with_sink`]): the bytes of [`Waveform::to_json`], in
    /// bounded memory.
    pub fn write_json(
        &self,
        body: &mut dyn std::io::Read,
        out: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        write!(
            out,
            "{{\"version\":{},\"channels\":{},\"sample_rate\":{},\"samples_per_pixel\":{},\"bits\":{},\"length\":{},\"data\":[",
            self.version,
            self.channels,
            self.sample_rate,
            self.samples_per_pixel,
            self.bits,
            self.length
        )?;
        let wide = self.bits != 8;
        let mut buf = vec![0u8; 64 * 1024];
        let mut text = String::with_capacity(buf.len() * 5);
        let (mut first, mut carry) = (true, None::<u8>);
        loop {
            let n = body.read(&mut buf)?;
            if n == 0 {
                break;
            }
            text.clear();
            for &b in &buf[..n] {
                let v = match (wide, carry.take()) {
                    (false, _) => i16::from(b as i8),
                    (true, Some(lo)) => i16::from_le_bytes([lo, b]),
                    (true, None) => {
                        carry = Some(b);
                        continue;
                    }
                };
                if !first {
                    text.push(',');
                }
                first = false;
                text.push_str(&v.to_string());
            }
            out.write_all(text.as_bytes())?;
        }
        out.write_all(b"]}")?;
        out.flush()
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
        if data.len() as u128 != u128::from(length) * u128::from(channels) * 2 {
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
    /// Receives the `.dat` body as it is produced (then `data` stays small).
    sink: Option<Box<dyn std::io::Write + Send>>,
    /// Points emitted so far.
    points: u64,
    sink_error: Option<std::io::Error>,
}

/// Values buffered before they are written to a sink.
const SINK_BATCH: usize = 32 * 1024;

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
            sink: None,
            points: 0,
            sink_error: None,
        })
    }

    /// Streams the `.dat` body (the values after its 24-byte header, see
    /// [`Waveform::dat_header`]) to `sink` instead of keeping it: memory stays bounded whatever
    /// the duration, and [`WaveformBuilder::finish_streamed`] returns a waveform without `data`.
    pub fn with_sink(mut self, sink: Box<dyn std::io::Write + Send>) -> WaveformBuilder {
        self.sink = Some(sink);
        self
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
        self.points = self.points.saturating_add(1);
        if self.sink.is_some() && self.data.len() >= SINK_BATCH {
            self.write_out();
        }
    }

    /// Writes the buffered values to the sink, if there is one.
    fn write_out(&mut self) {
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        if self.sink_error.is_none() {
            let bytes = dat_body(&self.data, self.opts.bits);
            if let Err(e) = sink.write_all(&bytes) {
                self.sink_error = Some(e);
            }
        }
        self.data.clear();
    }

    /// Emits the last partial point and returns the waveform, for a builder without a sink
    /// (see [`WaveformBuilder::finish_streamed`]).
    pub fn finish(mut self) -> Waveform {
        if self.count > 0 {
            self.emit();
        }
        let length = u32::try_from(self.data.len() / (2 * self.out_channels)).unwrap_or(u32::MAX);
        self.waveform(length)
    }

    /// Emits the last partial point, flushes the sink and returns the waveform (without `data`
    /// when it was streamed). Fails when the sink failed or the length does not fit 32 bits.
    pub fn finish_streamed(mut self) -> Result<Waveform> {
        if self.count > 0 {
            self.emit();
        }
        self.write_out();
        if let Some(e) = self.sink_error.take() {
            return Err(e.into());
        }
        if let Some(sink) = self.sink.as_mut() {
            sink.flush()?;
        }
        let length = u32::try_from(self.points)
            .map_err(|_| MediaError::Limit("waveform longer than 2³² points".into()))?;
        Ok(self.waveform(length))
    }

    fn waveform(self, length: u32) -> Waveform {
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

/// `.dat` body bytes of `values` at `bits` resolution.
fn dat_body(values: &[i16], bits: u8) -> Vec<u8> {
    if bits == 8 {
        values.iter().map(|&v| v as i8 as u8).collect()
    } else {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}

fn to_i16(s: f32) -> i16 {
    (s * 32768.0).clamp(-32768.0, 32767.0) as i16
}
