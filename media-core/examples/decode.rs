//! Decode-only timing helper: `cargo run --release -p veza-media-core --example decode -- IN`
//! (the counterpart of `ffmpeg -threads 1 -i IN -f null -`).

use std::io::BufReader;
use std::process::ExitCode;

use veza_media_core::Decoder;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: decode IN");
        return ExitCode::from(2);
    };
    let run = || -> veza_media_core::Result<u64> {
        let file = std::fs::File::open(&path)?;
        let mut decoder = Decoder::open(BufReader::with_capacity(256 * 1024, file))?;
        while decoder.next_block()?.is_some() {}
        Ok(decoder.decoded_frames())
    };
    match run() {
        Ok(frames) => {
            println!("{frames} frames");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("decode failed: {e}");
            ExitCode::FAILURE
        }
    }
}
