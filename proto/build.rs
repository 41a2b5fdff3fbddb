//! Compiles `veza.proto` with protox (pure Rust, no protoc) and generates tonic code.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["veza.proto"];
    let fds = protox::compile(protos, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("veza_descriptor.bin"),
        protox::prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .generate_default_stubs(true)
        // tonic-prost answers an undecodable message with INTERNAL; ours says INVALID_ARGUMENT.
        .codec_path("crate::codec::Codec")
        .bytes(".veza.stream.AudioChunk.audio_data")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=veza.proto");
    println!("cargo:rerun-if-changed=veza");
    Ok(())
}
