//! What a source is (codec, container, rate, channels, duration, tags): the probe's results,
//! shared by the readers that fill them and the pipeline that reads them.

use serde::{Deserialize, Serialize};

/// Title, artist and album, when the source carries them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tags {
    pub title: Option<String>,
    pub artist: Option<String>,
    pub album: Option<String>,
}

impl Tags {
    /// Records `value` under a Vorbis-comment / ID3-style key when it is one we keep.
    pub(crate) fn set(&mut self, key: &str, value: &str) {
        let slot = match key.to_ascii_uppercase().as_str() {
            "TITLE" | "TIT2" => &mut self.title,
            "ARTIST" | "TPE1" => &mut self.artist,
            "ALBUM" | "TALB" => &mut self.album,
            _ => return,
        };
        if slot.is_none() && !value.is_empty() {
            *slot = Some(value.to_owned());
        }
    }
}

/// What a source is, as read from its headers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeInfo {
    /// Codec short name: `mp3`, `flac`, `vorbis`, `opus`, `pcm_s16le`...
    pub codec: String,
    /// Container short name: `mp3`, `flac`, `wave`, `ogg`.
    pub container: String,
    /// Source sample rate in Hz.
    pub sample_rate: u32,
    /// Source channel count (before any downmix).
    pub channels: u16,
    /// Playable frames per channel, when the headers say (0 if unknown).
    pub frames: u64,
    /// Duration in milliseconds (0 if unknown).
    pub duration_ms: u64,
    /// Average bitrate of the whole file in bits per second (0 if unknown).
    pub bitrate_bps: u64,
    /// Size of the source in bytes.
    pub byte_len: u64,
    pub tags: Tags,
}

impl ProbeInfo {
    /// Fills duration and bitrate from `frames`, `sample_rate` and `byte_len`.
    pub(crate) fn derive_rates(&mut self) {
        if self.sample_rate > 0 && self.frames > 0 {
            // The frame count is the file's own claim (e.g. an Ogg granule): no overflow.
            let ms = u128::from(self.frames) * 1000 / u128::from(self.sample_rate);
            self.duration_ms = u64::try_from(ms).unwrap_or(u64::MAX);
        }
        if let Some(bps) = self
            .byte_len
            .saturating_mul(8000)
            .checked_div(self.duration_ms)
        {
            self.bitrate_bps = bps;
        }
    }
}
