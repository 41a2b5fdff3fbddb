//! Streaming resampling to 48 kHz with rubato, delay-compensated and length-exact.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler as _};

use crate::error::{MediaError, Result};
use crate::opus_head::OPUS_RATE;

/// Input frames per resampler call for file ingest.
pub const INGEST_CHUNK: usize = 4096;
/// Input frames per resampler call for live input (keeps added latency low).
pub const LIVE_CHUNK: usize = 512;

/// Converts interleaved f32 at any rate to 48 kHz; a passthrough when already at 48 kHz.
pub struct Resampler {
    fft: Option<Fft<f32>>,
    channels: usize,
    rate_in: u32,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    delay_left: usize,
    frames_in: u64,
    frames_out: u64,
}

impl Resampler {
    /// A resampler from `rate_in` to 48 kHz with `chunk` input frames per FFT call.
    pub fn new(rate_in: u32, channels: usize, chunk: usize) -> Result<Resampler> {
        if channels == 0 || rate_in == 0 {
            return Err(MediaError::InvalidArgument("zero rate or channels".into()));
        }
        let fft = if rate_in == OPUS_RATE {
            None
        } else {
            let f = Fft::<f32>::new(
                rate_in as usize,
                OPUS_RATE as usize,
                chunk,
                channels,
                FixedSync::Input,
            )
            .map_err(|e| MediaError::Resample(e.to_string()))?;
            Some(f)
        };
        let delay_left = fft.as_ref().map_or(0, |f| f.output_delay());
        let scratch = vec![0.0; fft.as_ref().map_or(0, |f| f.output_frames_max() * channels)];
        Ok(Resampler {
            fft,
            channels,
            rate_in,
            pending: Vec::new(),
            scratch,
            delay_left,
            frames_in: 0,
            frames_out: 0,
        })
    }

    /// Appends the 48 kHz version of `input` (so far as whole chunks allow) to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<()> {
        self.frames_in += (input.len() / self.channels) as u64;
        if self.fft.is_none() {
            out.extend_from_slice(input);
            self.frames_out += (input.len() / self.channels) as u64;
            return Ok(());
        }
        self.pending.extend_from_slice(input);
        let mut used = 0;
        loop {
            let need = self.fft.as_ref().map_or(0, |f| f.input_frames_next()) * self.channels;
            if self.pending.len() - used < need {
                break;
            }
            self.run(used, None, out)?;
            used += need;
        }
        self.pending.drain(..used);
        Ok(())
    }

    /// Flushes the tail so the total output is exactly `round(frames_in × 48000 / rate_in)`.
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<()> {
        if self.fft.is_none() {
            return Ok(());
        }
        let want = (self.frames_in * u64::from(OPUS_RATE) + u64::from(self.rate_in) / 2)
            / u64::from(self.rate_in);
        let mut partial = self.pending.len() / self.channels;
        let mut guard = 0;
        while self.frames_out < want && guard < 64 {
            let len = out.len();
            self.run(0, Some(partial), out)?;
            let over = self.frames_out.saturating_sub(want) as usize;
            out.truncate(out.len() - over.min((out.len() - len) / self.channels) * self.channels);
            self.frames_out -= over as u64;
            self.pending.clear();
            partial = 0;
            guard += 1;
        }
        Ok(())
    }

    /// One rubato call on `pending[offset..]`, dropping the leading delay.
    fn run(&mut self, offset: usize, partial: Option<usize>, out: &mut Vec<f32>) -> Result<()> {
        let Some(fft) = self.fft.as_mut() else {
            return Ok(());
        };
        let ch = self.channels;
        let need = fft.input_frames_next();
        let zeros;
        let input: &[f32] = if partial.is_some() {
            let mut z = vec![0.0; need * ch];
            let have = (self.pending.len() - offset).min(need * ch);
            z[..have].copy_from_slice(&self.pending[offset..offset + have]);
            zeros = z;
            &zeros
        } else {
            &self.pending[offset..offset + need * ch]
        };
        let frames_out_max = self.scratch.len() / ch;
        let adapter_in = InterleavedSlice::new(input, ch, need)
            .map_err(|e| MediaError::Resample(e.to_string()))?;
        let mut adapter_out = InterleavedSlice::new_mut(&mut self.scratch, ch, frames_out_max)
            .map_err(|e| MediaError::Resample(e.to_string()))?;
        let indexing = partial.map(|p| Indexing {
            input_offset: 0,
            output_offset: 0,
            partial_len: Some(p),
            active_channels_mask: None,
        });
        let (_, produced) = fft
            .process_into_buffer(&adapter_in, &mut adapter_out, indexing.as_ref())
            .map_err(|e| MediaError::Resample(e.to_string()))?;
        let skip = self.delay_left.min(produced);
        self.delay_left -= skip;
        out.extend_from_slice(&self.scratch[skip * ch..produced * ch]);
        self.frames_out += (produced - skip) as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_length_is_exact_for_any_block_split() {
        for (rate, block) in [
            (44_100u32, 1152usize),
            (22_050, 333),
            (96_000, 4096),
            (48_000, 100),
        ] {
            let mut rs = Resampler::new(rate, 2, INGEST_CHUNK).expect("resampler");
            let input = vec![0.25f32; rate as usize * 2 * 3 / 2];
            let mut out = Vec::new();
            for part in input.chunks(block * 2) {
                rs.process(part, &mut out).expect("process");
            }
            rs.finish(&mut out).expect("finish");
            assert_eq!(out.len(), 72_000 * 2, "{rate} Hz");
        }
    }

    #[test]
    fn a_constant_stays_constant() {
        let mut rs = Resampler::new(44_100, 1, INGEST_CHUNK).expect("resampler");
        let mut out = Vec::new();
        rs.process(&vec![0.5; 44_100], &mut out).expect("process");
        rs.finish(&mut out).expect("finish");
        assert!(out[2000..40_000].iter().all(|s| (s - 0.5).abs() < 0.01));
    }
}
