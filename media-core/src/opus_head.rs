//! Opus codec headers (RFC 7845 §5): `OpusHead`, `OpusTags`, and spotting an Ogg Opus stream.

use crate::error::{MediaError, Result};
use crate::meta::Tags;

/// Opus always decodes at 48 kHz.
pub const OPUS_RATE: u32 = 48_000;

/// The fields of an `OpusHead` packet that decoding needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpusHead {
    pub channels: u8,
    pub pre_skip: u16,
    pub input_rate: u32,
    pub gain: i16,
}

impl OpusHead {
    /// Parses and validates an `OpusHead` packet (RFC 7845 §5.1).
    pub fn parse(data: &[u8]) -> Result<OpusHead> {
        if data.len() < 19 || !data.starts_with(b"OpusHead") {
            return Err(MediaError::Malformed("missing OpusHead".into()));
        }
        if data[8] >> 4 != 0 {
            return Err(MediaError::Unsupported(format!(
                "OpusHead version {}",
                data[8]
            )));
        }
        let head = OpusHead {
            channels: data[9],
            pre_skip: u16::from_le_bytes([data[10], data[11]]),
            input_rate: u32::from_le_bytes([data[12], data[13], data[14], data[15]]),
            gain: i16::from_le_bytes([data[16], data[17]]),
        };
        if head.channels == 0 {
            return Err(MediaError::Malformed("OpusHead with zero channels".into()));
        }
        if data[18] != 0 && head.channels > 2 {
            return Err(MediaError::Unsupported("multichannel Opus".into()));
        }
        Ok(head)
    }

    /// Serialises the header (channel mapping family 0).
    pub fn to_bytes(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(19);
        v.extend_from_slice(b"OpusHead");
        v.push(1);
        v.push(self.channels);
        v.extend_from_slice(&self.pre_skip.to_le_bytes());
        v.extend_from_slice(&self.input_rate.to_le_bytes());
        v.extend_from_slice(&self.gain.to_le_bytes());
        v.push(0);
        v
    }
}

/// Builds an `OpusTags` packet with a vendor string and the known tags.
pub fn opus_tags(vendor: &str, tags: &Tags) -> Vec<u8> {
    let comments: Vec<String> = [
        ("TITLE", &tags.title),
        ("ARTIST", &tags.artist),
        ("ALBUM", &tags.album),
    ]
    .iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", cap(v, 1024))))
    .collect();
    let mut out = b"OpusTags".to_vec();
    push_str(&mut out, cap(vendor, 256));
    out.extend_from_slice(&(comments.len() as u32).to_le_bytes());
    for c in &comments {
        push_str(&mut out, c);
    }
    out
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn cap(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Reads the comments of an `OpusTags` packet; malformed tags are ignored, not fatal.
pub fn parse_opus_tags(data: &[u8]) -> Tags {
    let mut tags = Tags::default();
    let Some(mut rest) = data.strip_prefix(b"OpusTags") else {
        return tags;
    };
    let take = |rest: &mut &[u8]| -> Option<Vec<u8>> {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let end = 4usize.checked_add(len)?;
        let body = rest.get(4..end)?.to_vec();
        *rest = rest.get(end..)?;
        Some(body)
    };
    if take(&mut rest).is_none() {
        return tags;
    }
    let Some(count) = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
    else {
        return tags;
    };
    rest = &rest[4..];
    for _ in 0..count {
        let Some(comment) = take(&mut rest) else {
            break;
        };
        let text = String::from_utf8_lossy(&comment);
        if let Some((k, v)) = text.split_once('=') {
            tags.set(k, v);
        }
    }
    tags
}

/// True when `head` is the first page of an Ogg stream whose first packet is `OpusHead`.
pub fn is_ogg_opus(head: &[u8]) -> bool {
    if head.len() < 28 || !head.starts_with(b"OggS") {
        return false;
    }
    let body = 27 + usize::from(head[26]);
    head.get(body..body + 8) == Some(b"OpusHead")
}
