//! A live page as `StreamAudio` sends it: the `AudioChunk` message and its gRPC frame, encoded
//! once per page for every listener (after a DATA frame header, for the direct writes).

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use veza_proto::stream as pb;

use super::direct::frames;
use crate::domain::live::Page;

/// A live page as an `AudioChunk`: the payload is the shared `Bytes`, never copied here.
pub fn live_audio_chunk(id: i64, p: &Page) -> pb::AudioChunk {
    pb::AudioChunk {
        stream_id: id,
        chunk_index: p.index as i32,
        audio_data: p.data.clone(),
        sample_rate: 48_000,
        channels: i32::from(p.channels),
        codec: "opus".into(),
        timestamp: Some(position(p.timestamp_ms)),
    }
}

/// A chunk's position (ms from the start of the stream) as a protobuf timestamp.
pub fn position(ms: u64) -> prost_types::Timestamp {
    super::timestamp_at(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// The gRPC frame of `page` as an `AudioChunk` of stream `id`, encoded on first use.
pub(crate) fn wire(id: i64, page: &Page) -> Bytes {
    wire_frame(id, page).slice(frames::HEAD..)
}

/// The same frame after a 9-byte HTTP/2 DATA frame header for stream 1 (most listeners' stream,
/// which can then send frame and header as one buffer); any other stream replaces the header.
pub(crate) fn wire_frame(id: i64, page: &Page) -> &Bytes {
    page.encoded.get_or_init(|| {
        let msg = live_audio_chunk(id, page);
        let len = msg.encoded_len();
        // Cache-line aligned: the kernel copies it once per listener.
        let mut b = BytesMut::with_capacity(64 + frames::HEAD + 5 + len);
        let pad = b.as_ptr().align_offset(64);
        b.put_bytes(0, pad);
        b.put_slice(&frames::Head::data(5 + len, 1));
        b.put_u8(0);
        b.put_u32(len as u32);
        // Encoding into a buffer of the exact length cannot fail.
        let _ = msg.encode(&mut b);
        b.freeze().slice(pad..)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_as_audio_chunks() {
        let page = Page::new(7, 1500, 2, Bytes::from_static(b"OggS page"), 0);
        let frame = wire(42, &page);
        assert_eq!(frame[0], 0);
        let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
        assert_eq!(frame.len(), 5 + len);
        let c = pb::AudioChunk::decode(&frame[5..]).expect("decodes");
        assert_eq!((c.stream_id, c.chunk_index, c.channels), (42, 7, 2));
        assert_eq!(&c.audio_data[..], b"OggS page");
        // Encoded once: the second call hands out the same buffer.
        assert_eq!(wire(42, &page).as_ptr(), frame.as_ptr());
    }
}
