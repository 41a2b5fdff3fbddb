//! Zero-copy chunking, start_ms streams and pcm_s16le output from renditions.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{decode_all, music, wav};
use veza_media_core::ogg::{FLAG_BOS, parse_pages};
use veza_media_core::{Chunker, Codec, IngestOptions, PcmChunks, Rendition, ingest_bytes};

fn rendition(seconds: f32) -> Rendition {
    let opts = IngestOptions {
        bitrates_kbps: vec![64],
        ..IngestOptions::default()
    };
    let out = ingest_bytes(wav(&music(48_000, seconds), 48_000, 2), &opts).expect("ingest");
    out.renditions.into_iter().next().expect("one rendition")
}

#[test]
fn concatenated_chunks_are_the_whole_file() {
    let r = rendition(7.3);
    for chunk_ms in [100, 200, 1000, 2500] {
        let chunks: Vec<_> =
            Chunker::new(r.data.clone(), Arc::clone(&r.index), 0, chunk_ms).collect();
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
        assert_eq!(joined, r.data.as_ref(), "chunk_ms {chunk_ms}");
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.index, i as u64);
            assert_eq!(
                (c.sample_rate, c.channels, c.codec),
                (48_000, 2, Codec::Opus)
            );
        }
        assert!(
            chunks
                .windows(2)
                .all(|w| w[0].timestamp_ms < w[1].timestamp_ms)
        );
    }
}

#[test]
fn chunks_are_slices_of_the_rendition_not_copies() {
    let r = rendition(3.0);
    let base = r.data.as_ptr() as usize;
    for c in Chunker::new(r.data.clone(), Arc::clone(&r.index), 0, 1000) {
        let at = c.data.as_ptr() as usize;
        assert!(at >= base && at + c.data.len() <= base + r.data.len());
    }
}

#[test]
fn chunks_hold_about_the_requested_duration_on_page_boundaries() {
    let r = rendition(10.0);
    let chunks: Vec<_> = Chunker::new(r.data.clone(), Arc::clone(&r.index), 0, 1000).collect();
    // Ten 1 s chunks, plus the last packet that carries the encoder's pre-skip tail.
    assert_eq!(chunks.len(), 11);
    assert!(chunks[10].data.len() < chunks[9].data.len() / 4);
    for (i, c) in chunks.iter().enumerate() {
        assert!(
            c.timestamp_ms.abs_diff(i as u64 * 1000) <= 10,
            "chunk {i} at {}",
            c.timestamp_ms
        );
        assert!(parse_pages(&c.data).is_some(), "chunk {i} is whole pages");
    }
}

#[test]
fn start_ms_streams_begin_with_headers_and_decode() {
    let r = rendition(6.0);
    for start_ms in [1, 999, 2500, 5900, 60_000] {
        let chunks: Vec<_> =
            Chunker::new(r.data.clone(), Arc::clone(&r.index), start_ms, 1000).collect();
        let stream: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
        let pages = parse_pages(&stream).expect("valid pages");
        assert_eq!(pages[0].flags & FLAG_BOS, FLAG_BOS);
        assert_eq!(&stream[28..36], b"OpusHead");
        let ts = chunks[0].timestamp_ms;
        assert!(
            ts <= start_ms && ts + 200 > start_ms.min(5800),
            "{start_ms}: starts at {ts}"
        );
        let (samples, ch, _) = decode_all(Bytes::from(stream)).expect("start_ms stream decodes");
        let expected = (6000 - ts) * 48 * 2;
        assert!(
            (samples.len() as i64 - expected as i64).abs() <= 960 * 2,
            "{start_ms}: {}",
            samples.len()
        );
        assert_eq!(ch, 2);
    }
}

#[test]
fn pcm_from_a_rendition_has_the_full_length_and_seeks() {
    let r = rendition(3.0);
    let chunks: Vec<_> = PcmChunks::new(r.data.clone(), Arc::clone(&r.index), 0, 1000)
        .expect("pcm")
        .collect::<Result<_, _>>()
        .expect("decode");
    let total: usize = chunks.iter().map(|c| c.data.len()).sum();
    assert_eq!(total, 3 * 48_000 * 2 * 2);
    assert!(
        chunks
            .iter()
            .all(|c| c.codec == Codec::PcmS16le && c.sample_rate == 48_000)
    );
    assert_eq!(
        chunks.iter().map(|c| c.timestamp_ms).collect::<Vec<_>>(),
        vec![0, 1000, 2000]
    );

    let from: Vec<_> = PcmChunks::new(r.data.clone(), Arc::clone(&r.index), 1500, 500)
        .expect("pcm")
        .collect::<Result<_, _>>()
        .expect("decode");
    assert_eq!(from[0].timestamp_ms, 1500);
    let total: usize = from.iter().map(|c| c.data.len()).sum();
    assert_eq!(total, 48_000 * 3 / 2 * 4);
}

#[test]
fn a_bogus_index_never_panics_the_chunker() {
    let r = rendition(1.0);
    let mut bogus = (*r.index).clone();
    bogus.header_len = u64::MAX;
    for (i, p) in bogus.pages.iter_mut().enumerate() {
        p.offset = if i % 2 == 0 { u64::MAX - i as u64 } else { 3 };
    }
    let bogus = Arc::new(bogus);
    for start_ms in [0, 500, 10_000] {
        let n = Chunker::new(r.data.clone(), Arc::clone(&bogus), start_ms, 200).count();
        assert!(n >= 1);
    }
}
