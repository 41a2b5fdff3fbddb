//! Decoding any supported source to interleaved f32 at its own rate, downmixed to ≤ 2 channels.

use std::io::{Read, Seek, SeekFrom};

use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::{MetadataOptions, MetadataRevision, StandardTag};

use crate::error::{MediaError, Result};
use crate::meta::{ProbeInfo, Tags};
use crate::opus_in::OggOpusReader;
use crate::source::{Measured, Source};

/// Most source channels we accept (they are downmixed to stereo).
pub const MAX_CHANNELS: u16 = 32;
/// Consecutive undecodable packets tolerated before giving up.
pub(crate) const MAX_BAD_PACKETS: u32 = 32;

/// A streaming decoder over any supported format.
pub struct Decoder {
    backend: Backend,
    info: ProbeInfo,
    raw: Vec<f32>,
    mixed: Vec<f32>,
    decoded_frames: u64,
}

enum Backend {
    Symphonia(SymphoniaBackend),
    Opus(Box<OggOpusReader<Measured<Box<dyn Source>>>>),
}

impl Decoder {
    /// Opens a source, reading its headers. Fails with a typed error on anything undecodable.
    pub fn open<R: Source + 'static>(source: R) -> Result<Decoder> {
        let boxed: Box<dyn Source> = Box::new(source);
        let mut src = Measured::new(boxed)?;
        if src.is_empty() {
            return Err(MediaError::Empty);
        }
        let head = read_head(&mut src)?;
        guard_wav_header(&head)?;
        let (backend, info) = if crate::opus_head::is_ogg_opus(&head) {
            let (reader, info) = guarded(|| OggOpusReader::open(src))?;
            (Backend::Opus(Box::new(reader)), info)
        } else {
            let (backend, info) = guarded(|| SymphoniaBackend::open(src))?;
            (Backend::Symphonia(backend), info)
        };
        check_layout(&info)?;
        Ok(Decoder {
            backend,
            info,
            raw: Vec::new(),
            mixed: Vec::new(),
            decoded_frames: 0,
        })
    }

    /// What the headers said.
    pub fn info(&self) -> &ProbeInfo {
        &self.info
    }

    /// Channels of the blocks returned by [`Decoder::next_block`] (1 or 2).
    pub fn channels(&self) -> usize {
        usize::from(self.info.channels.min(2))
    }

    /// Sample rate of the decoded blocks.
    pub fn sample_rate(&self) -> u32 {
        self.info.sample_rate
    }

    /// Frames returned so far.
    pub fn decoded_frames(&self) -> u64 {
        self.decoded_frames
    }

    /// The next block of interleaved samples, or `None` at the end of the stream.
    pub fn next_block(&mut self) -> Result<Option<&[f32]>> {
        let src_ch = usize::from(self.info.channels);
        let got = match &mut self.backend {
            Backend::Symphonia(b) => guarded(|| b.next(&mut self.raw, src_ch))?,
            Backend::Opus(b) => guarded(|| b.next(&mut self.raw))?,
        };
        if !got {
            self.check_complete()?;
            return Ok(None);
        }
        self.decoded_frames = self
            .decoded_frames
            .saturating_add((self.raw.len() / src_ch) as u64);
        if src_ch <= 2 {
            return Ok(Some(&self.raw));
        }
        downmix(&self.raw, src_ch, &mut self.mixed);
        Ok(Some(&self.mixed))
    }

    /// Fails when the stream ended well before its headers promised, or held no audio.
    fn check_complete(&self) -> Result<()> {
        if self.decoded_frames == 0 {
            return Err(MediaError::Malformed("no audio could be decoded".into()));
        }
        let offset = match &self.backend {
            Backend::Opus(b) => b.start_offset(),
            Backend::Symphonia(_) => 0,
        };
        let want = self.info.frames.saturating_sub(offset);
        let slack = self.decoded_frames.saturating_add(want / 20 + 8192);
        if want > 0 && slack < want {
            return Err(MediaError::Truncated(format!(
                "decoded {} of {} frames",
                self.decoded_frames, want
            )));
        }
        Ok(())
    }
}

/// Runs decoder code (symphonia, and the Ogg Opus reader over `ogg` and libopus), turning a
/// panic (e.g. an overflow check) into an error.
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(MediaError::Malformed(
            "decoder failed on this stream".into(),
        ))
    })
}

/// Reads up to 4 KiB and rewinds.
fn read_head<R: Read + Seek>(src: &mut R) -> Result<Vec<u8>> {
    let mut head = Vec::with_capacity(4096);
    src.by_ref().take(4096).read_to_end(&mut head)?;
    src.seek(SeekFrom::Start(0))?;
    Ok(head)
}

/// Rejects WAV `fmt ` chunks that would overflow symphonia's arithmetic (found by fuzzing):
/// too many channels, or an extensible channel mask that cannot take the missing channels.
fn guard_wav_header(head: &[u8]) -> Result<()> {
    let Some(base) = head
        .windows(12)
        .position(|w| &w[..4] == b"RIFF" && &w[8..] == b"WAVE")
    else {
        return Ok(());
    };
    let mut at = base + 12;
    while let Some(body) = at.checked_add(8) {
        let Some(chunk) = head.get(at..body) else {
            break;
        };
        let len = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]) as usize;
        if &chunk[..4] == b"fmt " {
            return check_wav_fmt(head.get(body..).unwrap_or_default());
        }
        at = body.saturating_add(len.saturating_add(len & 1));
    }
    Ok(())
}

fn check_wav_fmt(fmt: &[u8]) -> Result<()> {
    let word = |i: usize| fmt.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    match word(2) {
        Some(0) => return Err(MediaError::Malformed("WAV with zero channels".into())),
        Some(n) if n > MAX_CHANNELS => return Err(MediaError::Limit(format!("{n} channels"))),
        _ => {}
    }
    let (Some(0xfffe), Some(channels)) = (word(0), word(2)) else {
        return Ok(());
    };
    let Some(mask) = fmt
        .get(20..24)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    else {
        return Ok(());
    };
    let missing = u32::from(channels).saturating_sub(mask.count_ones());
    if missing > 0 && (32 - mask.leading_zeros()) + missing > 30 {
        return Err(MediaError::Malformed(
            "WAV channel mask does not fit the channel count".into(),
        ));
    }
    Ok(())
}

fn check_layout(info: &ProbeInfo) -> Result<()> {
    if info.channels == 0 {
        return Err(MediaError::Malformed("zero channels".into()));
    }
    if info.channels > MAX_CHANNELS {
        return Err(MediaError::Limit(format!("{} channels", info.channels)));
    }
    if !(1000..=768_000).contains(&info.sample_rate) {
        return Err(MediaError::Unsupported(format!(
            "sample rate {}",
            info.sample_rate
        )));
    }
    Ok(())
}

/// Folds N > 2 channels (WAV/FLAC order: FL FR FC LFE BL BR SL SR…) into stereo.
pub(crate) fn downmix(input: &[f32], channels: usize, out: &mut Vec<f32>) {
    const CENTER: f32 = std::f32::consts::FRAC_1_SQRT_2;
    out.clear();
    let mut gains = vec![(0.0f32, 0.0f32); channels];
    for (i, g) in gains.iter_mut().enumerate() {
        *g = match i {
            0 => (1.0, 0.0),
            1 => (0.0, 1.0),
            2 => (CENTER, CENTER),
            3 => (0.0, 0.0),
            i if i % 2 == 0 => (CENTER, 0.0),
            _ => (0.0, CENTER),
        };
    }
    let norm_l: f32 = gains.iter().map(|g| g.0).sum();
    let norm_r: f32 = gains.iter().map(|g| g.1).sum();
    for frame in input.chunks_exact(channels) {
        let (mut l, mut r) = (0.0, 0.0);
        for (s, g) in frame.iter().zip(&gains) {
            l += s * g.0;
            r += s * g.1;
        }
        out.push(l / norm_l);
        out.push(r / norm_r);
    }
}

/// Formats symphonia reads: MP3, FLAC, WAV, Ogg Vorbis.
struct SymphoniaBackend {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
}

impl SymphoniaBackend {
    fn open(src: Measured<Box<dyn Source>>) -> Result<(Self, ProbeInfo)> {
        let byte_len = src.len();
        let mss = MediaSourceStream::new(Box::new(src), Default::default());
        let mut format = symphonia::default::get_probe().probe(
            &Hint::new(),
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )?;
        let track = format
            .default_track(TrackType::Audio)
            .ok_or_else(|| MediaError::Unsupported("no audio track".into()))?;
        let Some(CodecParameters::Audio(params)) = track.codec_params.clone() else {
            return Err(MediaError::Unsupported("no audio codec parameters".into()));
        };
        let (track_id, frames) = (track.id, track.num_frames.unwrap_or(0));
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(&params, &AudioDecoderOptions::default())?;
        let channels = params
            .channels
            .as_ref()
            .or(decoder.codec_params().channels.as_ref())
            .map(|c| c.count())
            .ok_or_else(|| MediaError::Malformed("unknown channel count".into()))?;
        let mut info = ProbeInfo {
            codec: codec_name(decoder.as_ref(), &params),
            container: format.format_info().short_name.to_owned(),
            sample_rate: params.sample_rate.unwrap_or(0),
            channels: u16::try_from(channels).unwrap_or(u16::MAX),
            frames,
            duration_ms: 0,
            bitrate_bps: 0,
            byte_len,
            tags: read_tags(format.as_mut()),
        };
        info.derive_rates();
        Ok((
            SymphoniaBackend {
                format,
                decoder,
                track_id,
            },
            info,
        ))
    }

    /// Decodes the next packet of our track into `raw`; `false` at the end.
    fn next(&mut self, raw: &mut Vec<f32>, channels: usize) -> Result<bool> {
        let mut bad = 0u32;
        loop {
            let Some(packet) = self.format.next_packet()? else {
                return Ok(false);
            };
            if packet.track_id != self.track_id {
                continue;
            }
            match self.decoder.decode(&packet) {
                Ok(buf) => {
                    if buf.spec().channels().count() != channels {
                        return Err(MediaError::Unsupported("channel count changes".into()));
                    }
                    raw.clear();
                    buf.copy_to_vec_interleaved(raw);
                    if !raw.is_empty() {
                        return Ok(true);
                    }
                }
                Err(symphonia::core::errors::Error::DecodeError(msg)) => {
                    bad += 1;
                    if bad > MAX_BAD_PACKETS {
                        return Err(MediaError::Malformed(msg.into()));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// `pcm_s16le`-style names for PCM, the decoder's short name otherwise.
fn codec_name(
    decoder: &dyn AudioDecoder,
    params: &symphonia::core::codecs::audio::AudioCodecParameters,
) -> String {
    let name = decoder.codec_info().short_name;
    if let (true, Some(fmt)) = (name.starts_with("pcm"), params.sample_format) {
        return format!("pcm_{fmt:?}").to_ascii_lowercase();
    }
    name.to_owned()
}

/// Title/artist/album from the latest metadata revision, media-level or per-track.
fn read_tags(format: &mut dyn FormatReader) -> Tags {
    let mut tags = Tags::default();
    let mut metadata = format.metadata();
    while let Some(rev) = metadata.pop() {
        collect_tags(&rev, &mut tags);
    }
    if let Some(rev) = metadata.current() {
        collect_tags(rev, &mut tags);
    }
    tags
}

fn collect_tags(rev: &MetadataRevision, tags: &mut Tags) {
    let all = rev
        .media
        .tags
        .iter()
        .chain(rev.per_track.iter().flat_map(|t| t.metadata.tags.iter()));
    for tag in all {
        match &tag.std {
            Some(StandardTag::TrackTitle(v)) => tags.set("TITLE", v),
            Some(StandardTag::Artist(v)) => tags.set("ARTIST", v),
            Some(StandardTag::Album(v)) => tags.set("ALBUM", v),
            _ => {}
        }
    }
}
