//! Shared helpers for the media-core integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use bytes::Bytes;
use veza_media_core::{Decoder, MediaError};

/// Path of a committed fixture.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name)
}

/// Bytes of a committed fixture.
pub fn fixture_bytes(name: &str) -> Bytes {
    Bytes::from(std::fs::read(fixture(name)).expect("fixture present"))
}

/// Decodes a whole file with media-core: (interleaved samples, channels, rate).
pub fn decode_all(data: Bytes) -> Result<(Vec<f32>, usize, u32), MediaError> {
    let mut dec = Decoder::open(std::io::Cursor::new(data))?;
    let mut out = Vec::new();
    while let Some(block) = dec.next_block()? {
        out.extend_from_slice(block);
    }
    Ok((out, dec.channels(), dec.sample_rate()))
}

/// Interleaved sine tone(s): one frequency per channel.
pub fn tone(rate: u32, freqs: &[f32], seconds: f32, amp: f32) -> Vec<f32> {
    let frames = (rate as f32 * seconds) as usize;
    let mut out = Vec::with_capacity(frames * freqs.len());
    for i in 0..frames {
        for f in freqs {
            out.push(amp * (2.0 * std::f32::consts::PI * f * i as f32 / rate as f32).sin());
        }
    }
    out
}

/// A music-like stereo signal: chords with a moving melody, rhythm and some noise.
pub fn music(rate: u32, seconds: f32) -> Vec<f32> {
    let frames = (rate as f32 * seconds) as usize;
    let mut seed = 0x1234_5678u32;
    let mut out = Vec::with_capacity(frames * 2);
    for i in 0..frames {
        let t = i as f32 / rate as f32;
        let beat = (t * 2.0).fract();
        let env = (-beat * 6.0).exp();
        let note = [220.0, 277.2, 329.6, 440.0][(t * 2.0) as usize % 4];
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
        let s = |f: f32| (2.0 * std::f32::consts::PI * f * t).sin();
        let chord = 0.15 * (s(110.0) + s(164.8) + s(220.0));
        let lead = 0.2 * env * (s(note) + 0.5 * s(note * 2.0) + 0.25 * s(note * 3.0));
        let hat = 0.3 * noise * (-(t * 8.0).fract() * 30.0).exp();
        out.push(chord + lead + hat);
        out.push(chord * 0.9 + lead * 0.7 + hat);
    }
    out
}

/// A 16-bit WAV file in memory.
pub fn wav(samples: &[f32], rate: u32, channels: u16) -> Bytes {
    let data_len = (samples.len() * 2) as u32;
    let mut v = Vec::with_capacity(44 + data_len as usize);
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data_len).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    v.extend_from_slice(&(channels * 2).to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        v.extend_from_slice(&((s * 32767.0).round() as i16).to_le_bytes());
    }
    Bytes::from(v)
}

/// Signal-to-noise ratio in dB of `test` against `reference`.
pub fn snr_db(reference: &[f32], test: &[f32]) -> f64 {
    let (mut sig, mut err) = (0.0f64, 0.0f64);
    for (r, t) in reference.iter().zip(test) {
        sig += f64::from(*r) * f64::from(*r);
        err += f64::from(r - t) * f64::from(r - t);
    }
    10.0 * (sig / err.max(1e-20)).log10()
}
