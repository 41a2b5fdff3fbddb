//! Media core benches: chunking throughput, decode, resample+encode ingest, waveform.
//!
//! Decode benches read the 10-minute inputs from `fixtures/bench-inputs.sh` (generated on first
//! use into `target/bench-media`); the others synthesise their input in memory.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use veza_media_core::{
    Chunker, Decoder, IngestOptions, WaveformBuilder, WaveformOptions, ingest_bytes,
};

/// A music-like stereo signal (chords, plucked melody, noise bursts).
fn music(rate: u32, seconds: f32) -> Vec<f32> {
    let frames = (rate as f32 * seconds) as usize;
    let mut seed = 0x1234_5678u32;
    let mut out = Vec::with_capacity(frames * 2);
    for i in 0..frames {
        let t = i as f32 / rate as f32;
        let env = (-(t * 4.0).fract() * 6.0).exp();
        let note = 220.0 * 2f32.powf(((t * 4.0) as u32 * 7 % 12) as f32 / 12.0);
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
        let s = |f: f32| (2.0 * std::f32::consts::PI * f * t).sin();
        let pad = 0.12 * (s(110.0) + s(164.8) + s(220.0));
        let hat = 0.12 * noise * (-(t * 8.0).fract() * 40.0).exp();
        out.push(pad + 0.25 * env * s(note) + hat);
        out.push(pad * 0.9 + 0.2 * env * s(note * 1.5) + hat);
    }
    out
}

/// 16-bit WAV bytes.
fn wav(samples: &[f32], rate: u32) -> Bytes {
    let len = (samples.len() * 2) as u32;
    let mut v = Vec::with_capacity(44 + len as usize);
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + len).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    for x in [
        16u32.to_le_bytes(),
        [1, 0, 2, 0],
        rate.to_le_bytes(),
        (rate * 4).to_le_bytes(),
        [4, 0, 16, 0],
    ] {
        v.extend_from_slice(&x);
    }
    v.extend_from_slice(b"data");
    v.extend_from_slice(&len.to_le_bytes());
    for s in samples {
        v.extend_from_slice(&((s * 32767.0) as i16).to_le_bytes());
    }
    Bytes::from(v)
}

/// The 10-minute bench inputs, generated on first use.
fn bench_input(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var_os("VEZA_BENCH_MEDIA")
        .map_or_else(|| root.join("target/bench-media"), PathBuf::from);
    let path = dir.join(name);
    if !path.exists() {
        let status = Command::new("bash")
            .arg(root.join("fixtures/bench-inputs.sh"))
            .arg(&dir)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "fixtures/bench-inputs.sh failed (needs ffmpeg)"
        );
    }
    path
}

fn chunking(c: &mut Criterion) {
    let opts = IngestOptions {
        bitrates_kbps: vec![128],
        ..IngestOptions::default()
    };
    let out = ingest_bytes(wav(&music(48_000, 120.0), 48_000), &opts).expect("ingest");
    let r = &out.renditions[0];
    let mut group = c.benchmark_group("media_chunking");
    for chunk_ms in [200u32, 1000, 5000] {
        let count = Chunker::new(r.data.clone(), Arc::clone(&r.index), 0, chunk_ms).count() as u64;
        group.throughput(Throughput::Elements(count));
        group.bench_with_input(
            BenchmarkId::from_parameter(chunk_ms),
            &chunk_ms,
            |b, &ms| {
                b.iter(|| {
                    Chunker::new(r.data.clone(), Arc::clone(&r.index), 0, ms)
                        .map(|c| c.data.len())
                        .sum::<usize>()
                })
            },
        );
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("media_decode_10min");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for name in ["music_10min.mp3", "music_10min.flac"] {
        let data = Bytes::from(std::fs::read(bench_input(name)).expect("bench input"));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut d = Decoder::open(std::io::Cursor::new(data.clone())).expect("open");
                while d.next_block().expect("decode").is_some() {}
                d.decoded_frames()
            })
        });
    }
    group.finish();
}

fn ingest(c: &mut Criterion) {
    let input = wav(&music(44_100, 20.0), 44_100);
    let mut group = c.benchmark_group("media_ingest_20s");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));
    for parallel in [false, true] {
        let opts = IngestOptions {
            parallel,
            ..IngestOptions::default()
        };
        let id = if parallel {
            "3_renditions_threads"
        } else {
            "3_renditions_one_thread"
        };
        group.bench_function(id, |b| {
            b.iter(|| {
                ingest_bytes(input.clone(), &opts)
                    .expect("ingest")
                    .frames_48k
            })
        });
    }
    group.finish();
}

fn waveform(c: &mut Criterion) {
    let samples = music(44_100, 10.0);
    let mut group = c.benchmark_group("media_waveform");
    group.throughput(Throughput::Elements((samples.len() / 2) as u64));
    group.bench_function("10s_stereo_spp256", |b| {
        b.iter(|| {
            let mut w =
                WaveformBuilder::new(44_100, 2, WaveformOptions::default()).expect("builder");
            w.push(&samples);
            w.finish().length
        })
    });
    group.finish();
}

criterion_group!(benches, chunking, waveform, ingest, decode);
criterion_main!(benches);
