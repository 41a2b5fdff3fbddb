//! `veza transcode IN --out DIR`: the media core on one file, without a server.

use std::path::PathBuf;

use clap::Args;
use veza_media_core::transcode::{TranscodeOptions, run as transcode};

/// Options of `veza transcode`.
#[derive(Args, Debug)]
pub struct TranscodeArgs {
    /// The audio file to transcode (MP3, FLAC, WAV, Ogg Vorbis, Ogg Opus).
    input: PathBuf,
    /// Directory for the renditions, waveform and seek indexes.
    #[arg(long)]
    out: PathBuf,
    /// Rendition bitrates in kbps.
    #[arg(long, value_delimiter = ',', default_value = "32,64,128")]
    bitrates: Vec<u32>,
    /// Waveform resolution.
    #[arg(long, default_value_t = 256)]
    samples_per_pixel: u32,
    /// Waveform sample size: 8 or 16 bits.
    #[arg(long, default_value_t = 8)]
    bits: u8,
    /// Encode the renditions one after another instead of on all cores.
    #[arg(long)]
    sequential: bool,
}

/// Runs the transcode on the blocking pool and prints the probe result, the files and stage times.
pub async fn run(args: TranscodeArgs) -> anyhow::Result<()> {
    let mut opts = TranscodeOptions::new(args.input, args.out);
    opts.bitrates_kbps = args.bitrates;
    opts.samples_per_pixel = args.samples_per_pixel;
    opts.waveform_bits = args.bits;
    opts.parallel = !args.sequential;
    let report = tokio::task::spawn_blocking(move || transcode(&opts)).await??;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
