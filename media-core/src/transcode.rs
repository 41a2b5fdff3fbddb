//! `veza transcode`: ingest a file and write renditions, waveform and seek indexes to a folder.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Result;
use crate::meta::ProbeInfo;
use crate::pipeline::{IngestOptions, Timings, ingest};
use crate::waveform::WaveformOptions;

/// Inputs of a transcode run.
#[derive(Clone, Debug)]
pub struct TranscodeOptions {
    pub input: PathBuf,
    pub out_dir: PathBuf,
    pub bitrates_kbps: Vec<u32>,
    pub samples_per_pixel: u32,
    pub waveform_bits: u8,
    pub parallel: bool,
}

impl TranscodeOptions {
    /// Defaults: 32/64/128 kbps, 256 samples per pixel, 8-bit waveform, renditions on threads.
    pub fn new(input: impl Into<PathBuf>, out_dir: impl Into<PathBuf>) -> Self {
        TranscodeOptions {
            input: input.into(),
            out_dir: out_dir.into(),
            bitrates_kbps: vec![32, 64, 128],
            samples_per_pixel: 256,
            waveform_bits: 8,
            parallel: true,
        }
    }
}

/// One written rendition.
#[derive(Clone, Debug, Serialize)]
pub struct RenditionReport {
    pub bitrate_kbps: u32,
    pub path: PathBuf,
    pub index_path: PathBuf,
    pub bytes: u64,
    pub real_bitrate_bps: u64,
    pub pages: usize,
    pub duration_ms: u64,
}

/// What a transcode produced.
#[derive(Clone, Debug, Serialize)]
pub struct TranscodeReport {
    pub probe: ProbeInfo,
    pub renditions: Vec<RenditionReport>,
    pub waveform_json: PathBuf,
    pub waveform_dat: PathBuf,
    pub timings: Timings,
}

/// Runs the ingest and writes `<kbps>k.opus`, `<kbps>k.index.json`, `waveform.json`, `waveform.dat`.
pub fn run(opts: &TranscodeOptions) -> Result<TranscodeReport> {
    let source = BufReader::with_capacity(256 * 1024, File::open(&opts.input)?);
    let ingest_opts = IngestOptions {
        bitrates_kbps: opts.bitrates_kbps.clone(),
        waveform: WaveformOptions {
            samples_per_pixel: opts.samples_per_pixel,
            bits: opts.waveform_bits,
            split_channels: false,
        },
        parallel: opts.parallel,
        ..IngestOptions::default()
    };
    let result = ingest(source, &ingest_opts)?;
    std::fs::create_dir_all(&opts.out_dir)?;
    let mut renditions = Vec::new();
    for r in &result.renditions {
        let path = opts.out_dir.join(format!("{}k.opus", r.bitrate_kbps));
        let index_path = opts.out_dir.join(format!("{}k.index.json", r.bitrate_kbps));
        std::fs::write(&path, &r.data)?;
        std::fs::write(&index_path, r.index.to_json())?;
        renditions.push(RenditionReport {
            bitrate_kbps: r.bitrate_kbps,
            path,
            index_path,
            bytes: r.data.len() as u64,
            real_bitrate_bps: r.real_bitrate_bps(),
            pages: r.index.pages.len(),
            duration_ms: r.index.duration_ms(),
        });
    }
    let (waveform_json, waveform_dat) = write_waveform(&opts.out_dir, &result.waveform)?;
    Ok(TranscodeReport {
        probe: result.probe,
        renditions,
        waveform_json,
        waveform_dat,
        timings: result.timings,
    })
}

fn write_waveform(dir: &Path, waveform: &crate::Waveform) -> Result<(PathBuf, PathBuf)> {
    let json = dir.join("waveform.json");
    let dat = dir.join("waveform.dat");
    std::fs::write(&json, waveform.to_json())?;
    std::fs::write(&dat, waveform.to_dat())?;
    Ok((json, dat))
}
