//! Waveform peaks and the audiowaveform version 2 JSON / `.dat` layouts.

mod common;

use common::{tone, wav};
use veza_media_core::{IngestOptions, Waveform, WaveformBuilder, WaveformOptions, ingest_bytes};

#[test]
fn known_signal_has_expected_peaks() {
    // A square-ish ramp: pixel k holds values in [-k, k] / 10.
    let spp = 100;
    let mut samples = Vec::new();
    for k in 0..10 {
        for i in 0..spp {
            let v = k as f32 / 10.0;
            samples.push(if i % 2 == 0 { v } else { -v });
        }
    }
    let opts = WaveformOptions {
        samples_per_pixel: spp as u32,
        bits: 16,
        split_channels: false,
    };
    let mut b = WaveformBuilder::new(8000, 1, opts).expect("builder");
    b.push(&samples);
    let w = b.finish();
    assert_eq!(w.length, 10);
    for k in 0..10usize {
        let v = (k as f32 / 10.0 * 32768.0) as i16;
        assert_eq!((w.data[2 * k], w.data[2 * k + 1]), (-v, v), "pixel {k}");
    }
}

#[test]
fn ingest_waveform_of_a_tone_at_half_scale() {
    let out = ingest_bytes(
        wav(&tone(44_100, &[441.0, 441.0], 1.0, 0.5), 44_100, 2),
        &IngestOptions::default(),
    )
    .expect("ingest");
    let w = &out.waveform;
    assert_eq!(
        (w.sample_rate, w.samples_per_pixel, w.bits, w.channels),
        (44_100, 256, 8, 1)
    );
    assert_eq!(w.length, 44_100u32.div_ceil(256));
    // 441 Hz = 100 samples per period, so every 256-sample pixel spans a full period: ±0.5 → ±64.
    for p in 0..w.length as usize - 1 {
        assert!(
            (w.data[2 * p] + 64).abs() <= 1 && (w.data[2 * p + 1] - 63).abs() <= 1,
            "pixel {p}"
        );
    }
}

#[test]
fn split_channels_and_partial_last_pixel() {
    let opts = WaveformOptions {
        samples_per_pixel: 4,
        bits: 8,
        split_channels: true,
    };
    let mut b = WaveformBuilder::new(48_000, 2, opts).expect("builder");
    b.push(&[0.5, -0.25, -0.5, 0.25, 0.0, 0.0, 0.0, 0.0, 1.0, -1.0]);
    let w = b.finish();
    assert_eq!((w.channels, w.length), (2, 2));
    assert_eq!(w.data, vec![-64, 64, -32, 32, 127, 127, -128, -128]);
}

#[test]
fn json_layout_matches_audiowaveform_v2() {
    let w = Waveform {
        version: 2,
        channels: 1,
        sample_rate: 44_100,
        samples_per_pixel: 256,
        bits: 8,
        length: 2,
        data: vec![-3, 4, -5, 6],
    };
    assert_eq!(
        w.to_json(),
        r#"{"version":2,"channels":1,"sample_rate":44100,"samples_per_pixel":256,"bits":8,"length":2,"data":[-3,4,-5,6]}"#
    );
}

#[test]
fn dat_layout_matches_audiowaveform_v2() {
    let w8 = Waveform {
        version: 2,
        channels: 1,
        sample_rate: 44_100,
        samples_per_pixel: 256,
        bits: 8,
        length: 2,
        data: vec![-3, 4, -5, 6],
    };
    let dat = w8.to_dat();
    let word = |i: usize| i32::from_le_bytes(dat[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    assert_eq!(
        [word(0), word(1), word(2), word(3), word(4), word(5)],
        [2, 1, 44_100, 256, 2, 1]
    );
    assert_eq!(&dat[24..], &[0xfd, 4, 0xfb, 6]);
    assert_eq!(Waveform::from_dat(&dat).expect("parse"), w8);

    let w16 = Waveform {
        bits: 16,
        data: vec![-300, 400, -500, 600],
        ..w8
    };
    let dat = w16.to_dat();
    assert_eq!(dat.len(), 24 + 8);
    assert_eq!(
        u32::from_le_bytes(dat[4..8].try_into().expect("4")),
        0,
        "flags: 16-bit"
    );
    assert_eq!(&dat[24..26], &(-300i16).to_le_bytes());
    assert_eq!(Waveform::from_dat(&dat).expect("parse"), w16);
}

#[test]
fn bad_waveform_options_are_rejected() {
    assert!(
        WaveformBuilder::new(
            48_000,
            1,
            WaveformOptions {
                samples_per_pixel: 0,
                ..Default::default()
            }
        )
        .is_err()
    );
    assert!(
        WaveformBuilder::new(
            48_000,
            1,
            WaveformOptions {
                bits: 4,
                ..Default::default()
            }
        )
        .is_err()
    );
}
