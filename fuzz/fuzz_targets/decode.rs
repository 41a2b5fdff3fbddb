//! Fuzz target: probe + decode (every format, Ogg Opus included) + waveform + resample of
//! arbitrary bytes must return Ok or a typed error, never panic, hang or allocate without bound.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use veza_media_core::resample::{INGEST_CHUNK, Resampler};
use veza_media_core::{Decoder, WaveformBuilder, WaveformOptions, probe};

/// Work per input is bounded: at most this many decoded frames (60 s at 48 kHz).
const MAX_FRAMES: u64 = 48_000 * 60;

fuzz_target!(init: allow_guarded_panics(), |data: &[u8]| {
    let bytes = bytes::Bytes::copy_from_slice(data);
    let probed = probe(Cursor::new(bytes.clone()));
    let Ok(mut decoder) = Decoder::open(Cursor::new(bytes)) else {
        return;
    };
    if let Ok(info) = probed {
        assert_eq!(info.channels, decoder.info().channels, "probe and open agree");
    }
    let channels = decoder.channels();
    assert!((1..=2).contains(&channels));
    let mut wave = WaveformBuilder::new(decoder.sample_rate(), channels, WaveformOptions::default())
        .expect("default waveform options are valid");
    let mut resampler = Resampler::new(decoder.sample_rate(), channels, INGEST_CHUNK).ok();
    let mut out = Vec::new();
    while let Ok(Some(block)) = decoder.next_block() {
        assert_eq!(block.len() % channels, 0, "whole frames");
        wave.push(block);
        if let Some(r) = resampler.as_mut() {
            if r.process(block, &mut out).is_err() {
                resampler = None;
            }
            out.clear();
        }
        if decoder.decoded_frames() > MAX_FRAMES {
            break;
        }
    }
    if let Some(r) = resampler.as_mut() {
        let _ = r.finish(&mut out);
    }
    let w = wave.finish();
    let _ = w.to_dat();
});

/// libfuzzer-sys aborts on every panic, even one that is caught. media-core deliberately turns
/// a panic inside symphonia into `MediaError::Malformed` (`decode.rs` `guarded`), so a panic
/// raised in symphonia's code is let through to that guard (and printed); any other panic —
/// ours, libopus's wrapper, rubato's — still aborts and is a finding.
fn allow_guarded_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_symphonia = info
            .location()
            .is_some_and(|l| l.file().contains("symphonia"));
        if in_symphonia {
            eprintln!("guarded symphonia panic: {info}");
            return;
        }
        default(info);
        std::process::abort();
    }));
}
