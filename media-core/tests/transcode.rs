//! `transcode::run`: the files `veza transcode` writes and the report it returns.

mod common;

use common::fixture;
use veza_media_core::transcode::{TranscodeOptions, run};
use veza_media_core::{SeekIndex, Waveform};

#[test]
fn transcode_writes_renditions_indexes_and_waveforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = TranscodeOptions::new(fixture("stereo_44k.flac"), dir.path().join("out"));
    opts.bitrates_kbps = vec![48, 96];
    opts.samples_per_pixel = 512;
    opts.waveform_bits = 16;
    let report = run(&opts).expect("transcode");
    assert_eq!(
        (report.probe.codec.as_str(), report.probe.duration_ms),
        ("flac", 2000)
    );
    assert_eq!(report.renditions.len(), 2);
    for r in &report.renditions {
        let data = std::fs::read(&r.path).expect("opus file");
        assert_eq!(data.len() as u64, r.bytes);
        assert_eq!(r.duration_ms, 2000);
        let index: SeekIndex =
            serde_json::from_slice(&std::fs::read(&r.index_path).expect("index")).expect("json");
        assert_eq!(index, SeekIndex::from_ogg(&data).expect("rebuilt"));
    }
    let dat =
        Waveform::from_dat(&std::fs::read(&report.waveform_dat).expect("dat")).expect("parse");
    let json: Waveform =
        serde_json::from_slice(&std::fs::read(&report.waveform_json).expect("json"))
            .expect("parse");
    assert_eq!(dat, json);
    assert_eq!(
        (dat.samples_per_pixel, dat.bits, dat.length),
        (512, 16, 88_200u32.div_ceil(512))
    );
    assert!(report.timings.total > report.timings.decode);
}

#[test]
fn transcode_of_a_broken_file_fails_without_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let err = run(&TranscodeOptions::new(fixture("truncated.flac"), &out)).expect_err("truncated");
    assert!(
        matches!(err, veza_media_core::MediaError::Truncated(_)),
        "{err:?}"
    );
    assert!(!out.exists());
}
