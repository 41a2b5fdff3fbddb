//! Probe and decode of every supported format, and typed errors for broken input.

mod common;

use common::{decode_all, fixture, fixture_bytes};
use veza_media_core::{MediaError, probe};

/// (file, codec, rate, channels, seconds) of each playable fixture.
const PLAYABLE: &[(&str, &str, u32, usize, f64)] = &[
    ("stereo_44k.mp3", "mp3", 44100, 2, 3.0),
    ("mono_48k.mp3", "mp3", 48000, 1, 3.0),
    ("stereo_44k.flac", "flac", 44100, 2, 2.0),
    ("mono_48k.flac", "flac", 48000, 1, 2.0),
    ("stereo_44k_s16.wav", "pcm_s16le", 44100, 2, 1.0),
    ("mono_48k_s24.wav", "pcm_s24le", 48000, 1, 1.0),
    ("mono_44k_s32.wav", "pcm_s32le", 44100, 1, 1.0),
    ("mono_48k_f32.wav", "pcm_f32le", 48000, 1, 1.0),
    ("stereo_44k.ogg", "vorbis", 44100, 2, 3.0),
    ("mono_44k.ogg", "vorbis", 44100, 1, 3.0),
    ("stereo_48k.opus", "opus", 48000, 2, 3.0),
    ("mono_48k.opus", "opus", 48000, 1, 3.0),
];

/// One codec frame: the largest of MP3 (1152), Vorbis (2048) and Opus (960) blocks.
const ONE_FRAME: i64 = 2048;

#[test]
fn each_format_decodes_to_its_duration_and_channels() {
    for &(name, codec, rate, channels, seconds) in PLAYABLE {
        let (samples, ch, sr) =
            decode_all(fixture_bytes(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((ch, sr), (channels, rate), "{name}");
        let frames = (samples.len() / ch) as i64;
        let want = (seconds * f64::from(rate)) as i64;
        assert!(
            (frames - want).abs() <= ONE_FRAME,
            "{name}: {frames} frames, want {want}"
        );
        let info = probe(std::fs::File::open(fixture(name)).expect("open")).expect("probe");
        assert_eq!(info.codec, codec, "{name}");
        assert_eq!(usize::from(info.channels), channels, "{name}");
        assert!(
            (info.duration_ms as i64 - (seconds * 1000.0) as i64).abs() <= 50,
            "{name}: {}",
            info.duration_ms
        );
        assert!(info.bitrate_bps > 0, "{name}");
    }
}

#[test]
fn probe_reports_container_and_tags() {
    for name in [
        "stereo_44k.mp3",
        "stereo_44k.flac",
        "stereo_44k.ogg",
        "stereo_48k.opus",
    ] {
        let info = probe(std::fs::File::open(fixture(name)).expect("open")).expect("probe");
        assert_eq!(info.tags.title.as_deref(), Some("Veza Tone"), "{name}");
        assert_eq!(info.tags.artist.as_deref(), Some("Veza Fixtures"), "{name}");
        assert_eq!(info.tags.album.as_deref(), Some("Test Signals"), "{name}");
    }
    let wav =
        probe(std::fs::File::open(fixture("stereo_44k_s16.wav")).expect("open")).expect("probe");
    assert_eq!(wav.container, "wave");
    assert_eq!(wav.bitrate_bps / 1000, 1411);
}

#[test]
fn decoded_tone_has_the_source_level() {
    let (samples, _, _) = decode_all(fixture_bytes("mono_48k_s24.wav")).expect("decode");
    let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    // sox `gain -6` → 0.501 full scale.
    assert!((peak - 0.501).abs() < 0.01, "peak {peak}");
}

#[test]
fn more_than_two_channels_are_downmixed_to_stereo() {
    let (samples, ch, _) = decode_all(fixture_bytes("surround_48k.wav")).expect("decode");
    assert_eq!(ch, 2);
    assert_eq!(samples.len(), 24_000 * 2);
    assert!(samples.iter().all(|s| s.abs() <= 1.0));
    assert!(samples.iter().any(|s| s.abs() > 0.05));
}

#[test]
fn broken_inputs_return_typed_errors() {
    type Check = fn(&MediaError) -> bool;
    let cases: &[(&str, Check)] = &[
        ("empty.bin", |e| matches!(e, MediaError::Empty)),
        ("corrupt.bin", |e| matches!(e, MediaError::Unsupported(_))),
        ("corrupt.mp3", |e| {
            matches!(e, MediaError::Malformed(_) | MediaError::Truncated(_))
        }),
        ("truncated.flac", |e| matches!(e, MediaError::Truncated(_))),
        ("truncated.wav", |e| matches!(e, MediaError::Truncated(_))),
        ("truncated.opus", |e| matches!(e, MediaError::Truncated(_))),
        ("huge_header.wav", |e| {
            matches!(
                e,
                MediaError::Malformed(_) | MediaError::Limit(_) | MediaError::Truncated(_)
            )
        }),
        ("bad_opushead.opus", |e| {
            matches!(e, MediaError::Malformed(_))
        }),
    ];
    for (name, expected) in cases {
        let err = decode_all(fixture_bytes(name)).expect_err(name);
        assert!(expected(&err), "{name}: unexpected {err:?}");
    }
}

#[test]
fn mutated_inputs_never_panic() {
    let mut seed = 7u64;
    for name in [
        "stereo_44k.mp3",
        "stereo_44k.flac",
        "stereo_44k.ogg",
        "stereo_48k.opus",
        "stereo_44k_s16.wav",
    ] {
        let original = fixture_bytes(name).to_vec();
        for round in 0..40 {
            let mut data = original.clone();
            for _ in 0..1 + round % 8 {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let at = (seed >> 33) as usize % data.len();
                data[at] = (seed >> 13) as u8;
            }
            if round % 5 == 4 {
                data.truncate((seed >> 40) as usize % data.len());
            }
            // Either outcome is fine; panicking or hanging is not.
            let _ = decode_all(bytes::Bytes::from(data));
        }
    }
}

#[test]
fn fuzz_findings_stay_fixed() {
    for entry in std::fs::read_dir(fixture("fuzz")).expect("fixtures/fuzz") {
        let path = entry.expect("entry").path();
        let data = bytes::Bytes::from(std::fs::read(&path).expect("read"));
        // Ok or a typed error; a panic fails the test.
        let _ = decode_all(data);
    }
}
