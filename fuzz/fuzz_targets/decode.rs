//! Fuzz target: probe + full decode of arbitrary bytes must return Ok or a typed error,
//! never panic, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = bytes::Bytes::copy_from_slice(data);
    let Ok(mut decoder) = veza_media_core::Decoder::open(std::io::Cursor::new(bytes)) else {
        return;
    };
    // Bound the work per input: 10 minutes of audio at most.
    let limit = 48_000 * 600;
    while let Ok(Some(_)) = decoder.next_block() {
        if decoder.decoded_frames() > limit {
            break;
        }
    }
});
