//! What a live source declares (its container, from the Content-Type) and what it yields.

use bytes::Bytes;

/// The container a source declares with its Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Ogg,
    Mp3,
}

impl SourceKind {
    /// `audio/ogg`, `application/ogg`, `audio/opus`, `audio/vorbis`, `audio/flac`, `audio/x-flac`
    /// (Ogg FLAC) → Ogg; `audio/mpeg`, `audio/mp3`, `audio/x-mpeg` → Mp3; parameters after `;`
    /// ignored, case-insensitive; anything else None.
    pub fn from_content_type(ct: &str) -> Option<SourceKind> {
        let essence = ct.split_once(';').map_or(ct, |(e, _)| e);
        match essence.trim().to_ascii_lowercase().as_str() {
            "audio/ogg" | "application/ogg" | "audio/opus" | "audio/vorbis" | "audio/flac"
            | "audio/x-flac" => Some(SourceKind::Ogg),
            "audio/mpeg" | "audio/mp3" | "audio/x-mpeg" => Some(SourceKind::Mp3),
            _ => None,
        }
    }
}

/// What a source yields.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceAudio {
    /// An Ogg Opus source's head (first item of each logical stream): its packets follow undecoded.
    OpusHead { channels: u16, pre_skip: u16 },
    /// One Opus packet, passed through as it came.
    OpusPacket(Bytes),
    /// Decoded audio of any other format: interleaved pcm_s16le (little-endian bytes), downmixed
    /// to ≤ 2 channels, at the source's own rate.
    Pcm {
        sample_rate: u32,
        channels: u16,
        data: Bytes,
    },
}
