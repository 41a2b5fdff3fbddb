//! Thin CLI over `media_core::transcode::run`:
//! `cargo run --release -p veza-media-core --example transcode -- IN --out DIR [--bitrates 32,64,128] [--samples-per-pixel 256] [--sequential]`

use std::process::ExitCode;

use veza_media_core::transcode::{TranscodeOptions, run};

fn main() -> ExitCode {
    match parse(std::env::args().skip(1).collect()) {
        Ok(opts) => match run(&opts) {
            Ok(report) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("transcode failed: {e}");
                ExitCode::FAILURE
            }
        },
        Err(usage) => {
            eprintln!("{usage}");
            ExitCode::from(2)
        }
    }
}

fn parse(args: Vec<String>) -> Result<TranscodeOptions, String> {
    let usage = "usage: transcode IN --out DIR [--bitrates 32,64,128] [--samples-per-pixel 256] [--bits 8|16] [--sequential]";
    let mut input = None;
    let mut opts = TranscodeOptions::new("", "");
    let mut out = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--out" => out = it.next(),
            "--bitrates" => {
                let list = it.next().ok_or(usage)?;
                opts.bitrates_kbps = list
                    .split(',')
                    .map(|b| b.trim().parse().map_err(|_| usage.to_string()))
                    .collect::<Result<_, _>>()?;
            }
            "--samples-per-pixel" => {
                opts.samples_per_pixel = it.next().and_then(|v| v.parse().ok()).ok_or(usage)?
            }
            "--bits" => opts.waveform_bits = it.next().and_then(|v| v.parse().ok()).ok_or(usage)?,
            "--sequential" => opts.parallel = false,
            _ if input.is_none() && !arg.starts_with("--") => input = Some(arg),
            _ => return Err(usage.into()),
        }
    }
    opts.input = input.ok_or(usage)?.into();
    opts.out_dir = out.ok_or(usage)?.into();
    Ok(opts)
}
