//! Opus renditions: fidelity, exact length, bitrate, and Ogg structure (RFC 3533 / RFC 7845).

mod common;

use bytes::Bytes;
use common::{decode_all, music, snr_db, tone, wav};
use veza_media_core::ogg::{FLAG_BOS, FLAG_EOS, parse_pages};
use veza_media_core::{IngestOptions, SeekIndex, ingest_bytes};

fn opts(bitrates: &[u32]) -> IngestOptions {
    IngestOptions {
        bitrates_kbps: bitrates.to_vec(),
        ..IngestOptions::default()
    }
}

#[test]
fn tone_at_128k_round_trips_through_libopus() {
    let source = tone(48_000, &[440.0, 660.0], 2.0, 0.5);
    let out = ingest_bytes(wav(&source, 48_000, 2), &opts(&[128])).expect("ingest");
    let (decoded, ch, rate) = decode_all(out.renditions[0].data.clone()).expect("decode rendition");
    assert_eq!((ch, rate), (2, 48_000));
    assert_eq!(
        decoded.len(),
        source.len(),
        "exact length after pre-skip and end trim"
    );
    let snr = snr_db(&source, &decoded);
    assert!(snr >= 20.0, "SNR {snr:.1} dB");
}

#[test]
fn resampled_source_keeps_its_exact_length() {
    for (rate, channels) in [(44_100u32, 2u16), (22_050, 1), (32_000, 2)] {
        let freqs: Vec<f32> = (0..channels)
            .map(|c| 440.0 + 220.0 * f32::from(c))
            .collect();
        let source = tone(rate, &freqs, 1.5, 0.5);
        let frames = (source.len() / usize::from(channels)) as u64;
        let out = ingest_bytes(wav(&source, rate, channels), &opts(&[64])).expect("ingest");
        let want = (frames * 48_000 + u64::from(rate) / 2) / u64::from(rate);
        assert_eq!(out.frames_48k, want, "{rate} Hz");
        let (decoded, ch, _) = decode_all(out.renditions[0].data.clone()).expect("decode");
        assert_eq!(ch, usize::from(channels));
        assert_eq!(
            (decoded.len() / ch) as u64,
            want,
            "{rate} Hz decoded length"
        );
        // The resampled tone still has the source level (no gain or phase wreckage).
        let peak = decoded[4800..].iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!((peak - 0.5).abs() < 0.06, "{rate} Hz peak {peak}");
    }
}

#[test]
fn renditions_stay_within_ten_percent_of_nominal_bitrate() {
    let source = music(44_100, 20.0);
    let out = ingest_bytes(wav(&source, 44_100, 2), &IngestOptions::default()).expect("ingest");
    assert_eq!(out.renditions.len(), 3);
    for r in &out.renditions {
        let nominal = f64::from(r.bitrate_kbps) * 1000.0;
        let real = r.real_bitrate_bps() as f64;
        assert!(
            (real - nominal).abs() / nominal <= 0.10,
            "{} kbps rendition at {real} bps",
            r.bitrate_kbps
        );
    }
}

#[test]
fn ogg_pages_pass_crc_with_increasing_granules_and_eos_last() {
    let source = music(48_000, 5.0);
    let out = ingest_bytes(wav(&source, 48_000, 2), &opts(&[32, 128])).expect("ingest");
    for r in &out.renditions {
        let pages = parse_pages(&r.data).expect("every page parses and passes its CRC");
        assert_eq!(pages[0].flags & FLAG_BOS, FLAG_BOS);
        assert!(pages[1..].iter().all(|p| p.flags & FLAG_BOS == 0));
        assert_eq!(pages.last().map(|p| p.flags & FLAG_EOS), Some(FLAG_EOS));
        assert!(
            pages[..pages.len() - 1]
                .iter()
                .all(|p| p.flags & FLAG_EOS == 0)
        );
        for (i, p) in pages.iter().enumerate() {
            assert_eq!(p.sequence as usize, i);
        }
        let audio = &pages[2..];
        assert!(
            audio.windows(2).all(|w| w[0].granule < w[1].granule),
            "granules increase"
        );
        let pre_skip = u64::from(r.index.pre_skip);
        assert_eq!(
            audio.last().map(|p| p.granule),
            Some(pre_skip + 5 * 48_000),
            "end trim granule"
        );
        // OpusHead fields.
        let head = &r.data[28..47];
        assert_eq!(&head[..8], b"OpusHead");
        assert_eq!(head[9], 2);
        assert_eq!(u16::from_le_bytes([head[10], head[11]]), r.index.pre_skip);
        assert_eq!(
            &r.data[pages[1].offset + 28..pages[1].offset + 36],
            b"OpusTags"
        );
    }
}

#[test]
fn seek_index_matches_pages_and_rebuilds_from_bytes() {
    let source = music(48_000, 4.0);
    let out = ingest_bytes(wav(&source, 48_000, 2), &opts(&[64])).expect("ingest");
    let r = &out.renditions[0];
    let rebuilt = SeekIndex::from_ogg(&r.data).expect("index from bytes");
    assert_eq!(&rebuilt, r.index.as_ref());
    assert_eq!(r.index.duration_ms(), 4000);
    let pages = parse_pages(&r.data).expect("pages");
    assert_eq!(r.index.pages.len(), pages.len() - 2);
    assert_eq!(r.index.page_for_ms(0), 0);
    // 200 ms pages: 2.5 s is in the 13th page.
    assert_eq!(r.index.page_for_ms(2500), 12);
    let json: SeekIndex = serde_json::from_str(&r.index.to_json()).expect("json");
    assert_eq!(&json, r.index.as_ref());
}

#[test]
fn keep_pcm_gives_48k_s16le() {
    let source = tone(44_100, &[440.0], 1.0, 0.5);
    let mut o = opts(&[32]);
    o.keep_pcm = true;
    let out = ingest_bytes(wav(&source, 44_100, 1), &o).expect("ingest");
    let pcm: Bytes = out.pcm.expect("pcm kept");
    assert_eq!(pcm.len(), 48_000 * 2);
}

#[test]
fn sequential_and_parallel_ingest_give_identical_files() {
    let data = wav(&music(44_100, 3.0), 44_100, 2);
    let seq = IngestOptions {
        parallel: false,
        ..IngestOptions::default()
    };
    let a = ingest_bytes(data.clone(), &seq).expect("sequential");
    let b = ingest_bytes(data, &IngestOptions::default()).expect("parallel");
    for (x, y) in a.renditions.iter().zip(&b.renditions) {
        assert_eq!(x.data, y.data);
    }
    assert_eq!(a.waveform, b.waveform);
}

#[test]
fn invalid_options_are_rejected() {
    let data = wav(&tone(48_000, &[440.0], 0.5, 0.5), 48_000, 1);
    assert!(ingest_bytes(data.clone(), &opts(&[])).is_err());
    assert!(ingest_bytes(data.clone(), &opts(&[1])).is_err());
    let mut o = IngestOptions::default();
    o.waveform = veza_media_core::WaveformOptions {
        bits: 12,
        ..o.waveform
    };
    assert!(ingest_bytes(data, &o).is_err());
}
