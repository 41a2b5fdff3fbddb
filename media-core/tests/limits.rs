//! Streaming ingest and its limits: outputs written to sinks match the in-memory ingest; the
//! duration limit refuses from the header or while decoding; deadlines and cancel flags stop it.

mod common;

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{fixture_bytes, music, wav};
use veza_media_core::{IngestOptions, IngestSink, Limits, MediaError, ingest_bytes, ingest_to};

/// A writer into a shared buffer.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().expect("lock").clone()
    }
}

/// Records what the ingest opened and wrote.
#[derive(Default)]
struct Recorder {
    renditions: Vec<(u32, Shared)>,
    waveform: Shared,
}

impl IngestSink for Recorder {
    fn rendition(&mut self, kbps: u32) -> std::io::Result<Box<dyn Write + Send>> {
        let w = Shared::default();
        self.renditions.push((kbps, w.clone()));
        Ok(Box::new(w))
    }
    fn waveform(&mut self) -> std::io::Result<Box<dyn Write + Send>> {
        Ok(Box::new(self.waveform.clone()))
    }
}

fn opts(limits: Limits) -> IngestOptions {
    IngestOptions {
        bitrates_kbps: vec![32, 64],
        limits,
        ..IngestOptions::default()
    }
}

fn run(data: Bytes, limits: Limits) -> (Result<veza_media_core::Ingest, MediaError>, Recorder) {
    let mut rec = Recorder::default();
    let out = ingest_to(std::io::Cursor::new(data), &opts(limits), &mut rec);
    (out, rec)
}

/// The FLAC fixture (2 s) with its STREAMINFO total-samples field zeroed: duration unknown.
fn flac_without_duration() -> Bytes {
    let mut d = fixture_bytes("mono_48k.flac").to_vec();
    d[21] &= 0xf0;
    d[22..26].fill(0);
    Bytes::from(d)
}

#[test]
fn streamed_outputs_are_the_in_memory_outputs() {
    let input = wav(&music(44_100, 3.0), 44_100, 2);
    let whole = ingest_bytes(input.clone(), &opts(Limits::default())).expect("ingest");
    let (streamed, rec) = run(input, Limits::default());
    let streamed = streamed.expect("streamed ingest");
    assert_eq!(rec.renditions.len(), 2);
    for ((r, (kbps, w)), s) in whole
        .renditions
        .iter()
        .zip(&rec.renditions)
        .zip(&streamed.renditions)
    {
        assert_eq!(r.bitrate_kbps, *kbps);
        assert!(s.data.is_empty(), "streamed rendition holds no data");
        assert_eq!(w.bytes(), r.data.to_vec(), "{kbps} kbps file");
        assert_eq!((s.len, &s.index), (r.data.len() as u64, &r.index));
    }
    let (wave, body) = (&streamed.waveform, rec.waveform.bytes());
    assert!(wave.data.is_empty());
    let mut dat = wave.dat_header().to_vec();
    dat.extend_from_slice(&body);
    assert_eq!(dat, whole.waveform.to_dat());
    let mut json = Vec::new();
    wave.write_json(&mut body.as_slice(), &mut json)
        .expect("json");
    assert_eq!(
        String::from_utf8(json).expect("utf-8"),
        whole.waveform.to_json()
    );
}

#[test]
fn sixteen_bit_waveform_json_streams_too() {
    let input = wav(&music(48_000, 1.0), 48_000, 1);
    let mut o = opts(Limits::default());
    o.waveform.bits = 16;
    let whole = ingest_bytes(input.clone(), &o).expect("ingest");
    let mut rec = Recorder::default();
    let streamed = ingest_to(std::io::Cursor::new(input), &o, &mut rec).expect("ingest");
    let mut json = Vec::new();
    let body = rec.waveform.bytes();
    streamed
        .waveform
        .write_json(&mut body.as_slice(), &mut json)
        .expect("json");
    assert_eq!(
        String::from_utf8(json).expect("utf-8"),
        whole.waveform.to_json()
    );
}

#[test]
fn a_header_over_the_limit_is_refused_before_any_output() {
    let limits = Limits {
        max_duration: Some(Duration::from_secs(1)),
        ..Limits::default()
    };
    let (out, rec) = run(fixture_bytes("mono_48k.flac"), limits);
    assert!(matches!(out, Err(MediaError::TooLong(_))), "{out:?}");
    assert!(rec.renditions.is_empty(), "refused from the header");
}

#[test]
fn an_undeclared_duration_is_refused_while_decoding() {
    let limits = Limits {
        max_duration: Some(Duration::from_secs(1)),
        ..Limits::default()
    };
    let (out, rec) = run(flac_without_duration(), limits.clone());
    assert!(matches!(out, Err(MediaError::TooLong(_))), "{out:?}");
    assert_eq!(rec.renditions.len(), 2, "refused once decoding passed 1 s");
    let fits = Limits {
        max_duration: Some(Duration::from_secs(3)),
        ..Limits::default()
    };
    assert!(run(flac_without_duration(), fits).0.is_ok());
}

#[test]
fn a_passed_deadline_or_a_cancel_flag_stops_the_ingest() {
    let input = wav(&music(48_000, 2.0), 48_000, 1);
    let late = Limits {
        deadline: Some(Instant::now()),
        ..Limits::default()
    };
    let out = run(input.clone(), late).0;
    assert!(matches!(out, Err(MediaError::Deadline)), "{out:?}");
    let cancelled = Limits {
        cancel: Some(Arc::new(AtomicBool::new(true))),
        ..Limits::default()
    };
    let out = run(input, cancelled).0;
    assert!(matches!(out, Err(MediaError::Cancelled)), "{out:?}");
}

#[test]
fn a_huge_ogg_granule_does_not_overflow_the_probe() {
    let mut d = fixture_bytes("mono_48k.opus").to_vec();
    // Set the granule of the last page to u64::MAX - 1 and fix its CRC.
    let last = (0..d.len() - 4)
        .rev()
        .find(|&i| &d[i..i + 4] == b"OggS")
        .expect("a page");
    d[last + 6..last + 14].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
    d[last + 22..last + 26].fill(0);
    let crc = veza_media_core::ogg::crc32(&d[last..]);
    d[last + 22..last + 26].copy_from_slice(&crc.to_le_bytes());
    let info = veza_media_core::probe(std::io::Cursor::new(Bytes::from(d))).expect("probe");
    assert!(info.duration_ms > 1_000_000_000_000, "{}", info.duration_ms);
}
