//! Live sources: Ogg Opus passthrough (split reads, lacing across pages, chains, other streams),
//! Ogg Vorbis / Ogg FLAC / MP3 decoded to PCM, and hostile, truncated or failing input.

mod common;

use std::collections::VecDeque;
use std::io::{Cursor, ErrorKind, Read};
use std::process::Command;

use common::{decode_all, fixture, fixture_bytes};
use veza_media_core::live_opus::{OggStart, OpusPassthrough, ogg_start};
use veza_media_core::ogg::{FLAG_BOS, FLAG_CONTINUED, FLAG_EOS, crc32};
use veza_media_core::opus_head::OpusHead;
use veza_media_core::pcm::f32_to_s16le;
use veza_media_core::{
    LiveEncoder, LiveInput, LiveOptions, MediaError, SourceAudio, SourceKind, SourceReader,
};

/// Hands out its bytes in irregular reads of 1..=700 bytes, like a network socket.
struct Trickle {
    data: Vec<u8>,
    at: usize,
    seed: u32,
}

fn trickle(data: Vec<u8>) -> Trickle {
    Trickle {
        data,
        at: 0,
        seed: 0x9e37_79b9,
    }
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.seed = self
            .seed
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        let want = 1 + (self.seed >> 8) as usize % 700;
        let n = want.min(buf.len()).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Yields its bytes, then fails as a dropped connection does.
struct Failing(Cursor<Vec<u8>>);

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(500);
        match self.0.read(&mut buf[..n])? {
            0 => Err(std::io::Error::new(
                ErrorKind::ConnectionReset,
                "peer reset",
            )),
            n => Ok(n),
        }
    }
}

/// Items until the end, and the error that ended them (`new`'s error gives no items).
fn read_all(
    kind: SourceKind,
    input: impl Read + Send + Sync + 'static,
) -> (Vec<SourceAudio>, Option<MediaError>) {
    let mut reader = match SourceReader::new(kind, input) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut items = Vec::new();
    for _ in 0..1_000_000 {
        match reader.next() {
            Ok(Some(item)) => items.push(item),
            Ok(None) => return (items, None),
            Err(e) => return (items, Some(e)),
        }
    }
    panic!("the reader never ended");
}

/// Like [`read_all`] through [`Trickle`], failing on any error.
fn read_ok(kind: SourceKind, data: Vec<u8>) -> Vec<SourceAudio> {
    let (items, err) = read_all(kind, trickle(data));
    assert!(err.is_none(), "unexpected error {err:?}");
    items
}

// ---------------------------------------------------------------------------------------------
// Ogg Opus inputs.

/// An Ogg Opus stream from the crate's live encoder (a 440 Hz tone), with or without EOS page.
fn live_opus(channels: u16, seconds: f32, eos: bool) -> Vec<u8> {
    let input = LiveInput::PcmS16le {
        sample_rate: 48_000,
        channels,
    };
    let mut live = LiveEncoder::new(input, &LiveOptions::default()).expect("live encoder");
    let mut data = live.headers().to_vec();
    let frames = (48_000.0 * seconds) as usize;
    let mut pcm = Vec::with_capacity(frames * usize::from(channels) * 2);
    for i in 0..frames {
        let s = (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 48_000.0).sin();
        for _ in 0..channels {
            pcm.extend_from_slice(&((s * 8000.0) as i16).to_le_bytes());
        }
    }
    for part in pcm.chunks(3840) {
        for chunk in live.push_pcm(part).expect("push") {
            data.extend_from_slice(&chunk.data);
        }
    }
    if eos {
        for chunk in live.finish().expect("finish") {
            data.extend_from_slice(&chunk.data);
        }
    }
    data
}

/// The items a reader should give for one Ogg Opus stream, by the `ogg` crate's packet reader.
fn expected_items(data: &[u8]) -> Vec<SourceAudio> {
    let mut packets = ::ogg::PacketReader::new(Cursor::new(data.to_vec()));
    let first = packets.read_packet().expect("ogg").expect("OpusHead");
    let head = OpusHead::parse(&first.data).expect("OpusHead");
    let mut items = vec![SourceAudio::OpusHead {
        channels: u16::from(head.channels),
        pre_skip: head.pre_skip,
    }];
    let tags = packets.read_packet().expect("ogg").expect("OpusTags");
    assert!(tags.data.starts_with(b"OpusTags"));
    while let Ok(Some(p)) = packets.read_packet() {
        if !p.data.is_empty() {
            items.push(SourceAudio::OpusPacket(p.data.into()));
        }
    }
    items
}

/// One Ogg page from its lacing values and body.
fn raw_page(flags: u8, serial: u32, seq: u32, laces: &[u8], body: &[u8]) -> Vec<u8> {
    let mut p = b"OggS\0".to_vec();
    p.push(flags);
    p.extend_from_slice(&0u64.to_le_bytes());
    p.extend_from_slice(&serial.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&[0; 4]);
    p.push(laces.len() as u8);
    p.extend_from_slice(laces);
    p.extend_from_slice(body);
    let crc = crc32(&p);
    p[22..26].copy_from_slice(&crc.to_le_bytes());
    p
}

/// Packets laid out over pages of at most `max_segs` lacing values, going on across pages.
fn paged(serial: u32, first_seq: u32, packets: &[Vec<u8>], max_segs: usize) -> Vec<Vec<u8>> {
    let mut segs: Vec<&[u8]> = Vec::new();
    for p in packets {
        let mut rest = &p[..];
        loop {
            let n = rest.len().min(255);
            segs.push(&rest[..n]);
            rest = &rest[n..];
            if n < 255 {
                break;
            }
        }
    }
    let mut pages = Vec::new();
    let mut continued = false;
    for (i, chunk) in segs.chunks(max_segs).enumerate() {
        let laces: Vec<u8> = chunk.iter().map(|s| s.len() as u8).collect();
        let body: Vec<u8> = chunk.concat();
        let flags = if continued { FLAG_CONTINUED } else { 0 };
        pages.push(raw_page(flags, serial, first_seq + i as u32, &laces, &body));
        continued = laces.last() == Some(&255);
    }
    pages
}

/// Sets the EOS flag of a page built by [`raw_page`] (and fixes its CRC).
fn mark_eos(page: &mut [u8]) {
    page[5] |= FLAG_EOS;
    page[22..26].fill(0);
    let crc = crc32(page);
    page[22..26].copy_from_slice(&crc.to_le_bytes());
}

/// Bytes from a simple generator (deterministic).
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (s >> 16) as u8
        })
        .collect()
}

fn head_packet(channels: u8, pre_skip: u16) -> Vec<u8> {
    OpusHead {
        channels,
        pre_skip,
        input_rate: 48_000,
        gain: 0,
    }
    .to_bytes()
}

#[test]
fn live_encoder_stream_in_small_reads_passes_every_packet_through() {
    for channels in [1u16, 2] {
        let data = live_opus(channels, 2.0, true);
        let want = expected_items(&data);
        let got = read_ok(SourceKind::Ogg, data);
        assert!(
            matches!(got[0], SourceAudio::OpusHead { channels: c, pre_skip: 1.. } if c == channels)
        );
        assert!(want.len() > 90, "{} packets for 2 s", want.len() - 1);
        assert_eq!(got, want);
    }
}

#[test]
fn ffmpeg_opus_fixtures_pass_through() {
    for (name, channels) in [("stereo_48k.opus", 2u16), ("mono_48k.opus", 1)] {
        let data = fixture_bytes(name).to_vec();
        let want = expected_items(&data);
        let got = read_ok(SourceKind::Ogg, data);
        assert_eq!(
            got[0],
            SourceAudio::OpusHead {
                channels,
                pre_skip: 312
            },
            "{name}"
        );
        assert_eq!(got, want, "{name}");
    }
}

/// Pushes `data` into a passthrough in pieces of `step` bytes, after `ogg_start` has called it
/// Opus on the shortest prefix it could.
fn pushed(data: &[u8], step: usize) -> Vec<SourceAudio> {
    let mut seen = 0;
    while ogg_start(&data[..seen], seen == data.len()).expect("start") == OggStart::More {
        seen = (seen + step).min(data.len());
    }
    assert_eq!(
        ogg_start(&data[..seen], false).expect("start"),
        OggStart::Opus
    );
    let mut pass = OpusPassthrough::new();
    let mut out = VecDeque::new();
    for piece in data.chunks(step) {
        pass.push(piece, &mut out).expect("push");
    }
    out.into()
}

#[test]
fn pushed_bytes_give_the_items_a_reader_gives() {
    let data = fixture_bytes("stereo_48k.opus").to_vec();
    let want = expected_items(&data);
    for step in [1, 7, 4096, data.len()] {
        assert_eq!(pushed(&data, step), want, "pieces of {step} bytes");
    }
}

#[test]
fn the_start_tells_opus_from_other_ogg_and_from_what_is_not_ogg() {
    let opus = fixture_bytes("stereo_48k.opus");
    let vorbis = fixture_bytes("stereo_44k.ogg");
    assert_eq!(ogg_start(&opus[..20], false).ok(), Some(OggStart::More));
    assert_eq!(ogg_start(&vorbis[..20], false).ok(), Some(OggStart::More));
    assert_eq!(ogg_start(&vorbis, false).ok(), Some(OggStart::Other));
    assert!(matches!(ogg_start(b"", true), Err(MediaError::Empty)));
    assert!(matches!(
        ogg_start(&opus[..20], true),
        Err(MediaError::Truncated(_))
    ));
    assert!(matches!(
        ogg_start(b"RIFF....WAVEfmt garbage garbage garbage", false),
        Err(MediaError::Malformed(_))
    ));
    // A lone first page that is not Opus, and nothing after it: another codec.
    let len = 27
        + usize::from(vorbis[26])
        + vorbis[27..27 + usize::from(vorbis[26])]
            .iter()
            .map(|&l| usize::from(l))
            .sum::<usize>();
    assert_eq!(ogg_start(&vorbis[..len], true).ok(), Some(OggStart::Other));
}

#[test]
fn packets_across_pages_are_reassembled_and_other_streams_ignored() {
    let sizes = [
        1usize, 254, 255, 256, 510, 511, 3000, 7000, 60_000, 100, 0, 42,
    ];
    let packets: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| noise(n, i as u32 + 1))
        .collect();
    // OpusTags of 100 kB (cover art does that), spanning pages: skipped without being kept.
    let mut tags = b"OpusTags".to_vec();
    tags.extend(noise(100_000, 99));
    let mut body_packets = vec![tags];
    body_packets.extend(packets.iter().cloned());
    let mut ours = paged(7, 1, &body_packets, 5);
    if let Some(last) = ours.last_mut() {
        mark_eos(last);
    }
    // A second logical stream (a BOS in the same group, then pages between ours).
    let mut data = raw_page(FLAG_BOS, 7, 0, &[19], &head_packet(2, 3840));
    data.extend(raw_page(FLAG_BOS, 8, 0, &[8], b"fishead\0"));
    for (i, page) in ours.iter().enumerate() {
        data.extend_from_slice(page);
        if i % 3 == 0 {
            data.extend(raw_page(0, 8, i as u32 + 1, &[200], &noise(200, 7)));
        }
    }
    let got = read_ok(SourceKind::Ogg, data);
    let mut want = vec![SourceAudio::OpusHead {
        channels: 2,
        pre_skip: 3840,
    }];
    want.extend(
        packets
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(|p| SourceAudio::OpusPacket(p.into())),
    );
    assert_eq!(got, want);
}

#[test]
fn chained_streams_give_a_head_per_link() {
    // Live encoder (mono) + ffmpeg (stereo), each with its EOS page.
    let first = live_opus(1, 1.0, true);
    let second = fixture_bytes("stereo_48k.opus").to_vec();
    let mut want = expected_items(&first);
    want.extend(expected_items(&second));
    let got = read_ok(SourceKind::Ogg, [first, second].concat());
    let heads: Vec<&SourceAudio> = got
        .iter()
        .filter(|i| matches!(i, SourceAudio::OpusHead { .. }))
        .collect();
    assert_eq!(heads.len(), 2);
    assert_eq!(
        heads[1],
        &SourceAudio::OpusHead {
            channels: 2,
            pre_skip: 312
        }
    );
    assert_eq!(got, want);

    // An encoder restarted without an EOS page, same serial: the new BOS page starts a link.
    let first = live_opus(2, 0.5, false);
    let second = live_opus(1, 0.5, true);
    let mut want = expected_items(&first);
    want.extend(expected_items(&second));
    assert_eq!(read_ok(SourceKind::Ogg, [first, second].concat()), want);
}

#[test]
fn opus_chained_to_another_codec_is_refused_after_its_packets() {
    let opus = fixture_bytes("mono_48k.opus").to_vec();
    let packets = expected_items(&opus).len();
    let vorbis = fixture_bytes("stereo_44k.ogg").to_vec();
    let (items, err) = read_all(SourceKind::Ogg, trickle([opus, vorbis].concat()));
    assert_eq!(items.len(), packets);
    assert!(matches!(err, Some(MediaError::Unsupported(_))), "{err:?}");
}

#[test]
fn oversized_packet_is_a_limit_error() {
    let mut data = raw_page(FLAG_BOS, 1, 0, &[19], &head_packet(1, 0));
    let mut tags = b"OpusTags".to_vec();
    tags.extend([0u8; 8]);
    for page in paged(1, 1, &[tags, vec![1u8; 70_000]], 200) {
        data.extend(page);
    }
    let (items, err) = read_all(SourceKind::Ogg, trickle(data));
    assert_eq!(items.len(), 1);
    assert!(matches!(err, Some(MediaError::Limit(_))), "{err:?}");
}

#[test]
fn junk_between_pages_is_skipped_up_to_a_page_of_it() {
    let data = live_opus(2, 1.0, true);
    let want = expected_items(&data);
    let cut = data.len() / 2;
    let at = cut
        + data[cut..]
            .windows(4)
            .position(|w| w == b"OggS")
            .expect("a page");
    let with_junk = |n: usize| [&data[..at], &vec![b'x'; n][..], &data[at..]].concat();
    assert_eq!(read_ok(SourceKind::Ogg, with_junk(1000)), want);
    let (items, err) = read_all(SourceKind::Ogg, trickle(with_junk(70_000)));
    assert!(items.len() < want.len());
    assert!(
        matches!(&err, Some(MediaError::Malformed(m)) if m.contains("sync")),
        "{err:?}"
    );
}

#[test]
fn bad_opus_headers_are_typed_errors() {
    let (_, err) = read_all(
        SourceKind::Ogg,
        trickle(fixture_bytes("bad_opushead.opus").to_vec()),
    );
    assert!(matches!(err, Some(MediaError::Malformed(_))), "{err:?}");
    // Three channels (family 1, surround) cannot feed a stereo live encoder.
    let mut head = head_packet(3, 312);
    head[18] = 1;
    head.extend([2, 1, 0, 2, 1]);
    let data = raw_page(FLAG_BOS, 1, 0, &[head.len() as u8], &head);
    let (_, err) = read_all(SourceKind::Ogg, trickle(data));
    assert!(matches!(err, Some(MediaError::Unsupported(_))), "{err:?}");
    // No OpusTags after the head.
    let mut data = raw_page(FLAG_BOS, 1, 0, &[19], &head_packet(2, 312));
    data.extend(raw_page(0, 1, 1, &[4], b"nope"));
    let (items, err) = read_all(SourceKind::Ogg, trickle(data));
    assert_eq!(items.len(), 1);
    assert!(matches!(err, Some(MediaError::Malformed(_))), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Decoded inputs.

/// What a decoded source gave: (rate, channels, frames, PCM bytes); checks blocks ≤ 100 ms.
fn decoded(kind: SourceKind, data: Vec<u8>) -> (u32, u16, usize, Vec<u8>) {
    let items = read_ok(kind, data);
    assert!(!items.is_empty());
    let mut layout = None;
    let mut pcm = Vec::new();
    for item in items {
        let SourceAudio::Pcm {
            sample_rate,
            channels,
            data,
        } = item
        else {
            panic!("a decoded source gave {item:?}");
        };
        assert_eq!(
            *layout.get_or_insert((sample_rate, channels)),
            (sample_rate, channels)
        );
        let frame = 2 * usize::from(channels);
        assert_eq!(data.len() % frame, 0);
        assert!(
            data.len() / frame <= sample_rate as usize / 10,
            "block over 100 ms"
        );
        pcm.extend_from_slice(&data);
    }
    let (rate, channels) = layout.unwrap_or_default();
    let frames = pcm.len() / (2 * usize::from(channels));
    (rate, channels, frames, pcm)
}

fn assert_duration(name: &str, frames: usize, rate: u32, seconds: f64) {
    let got = frames as f64 / f64::from(rate);
    assert!(
        (got - seconds).abs() < 0.06,
        "{name}: {got:.3} s, want {seconds} s"
    );
}

/// An Ogg FLAC stream made by ffmpeg from a fixture (the committed fixtures have none).
fn ffmpeg_ogg_flac(name: &str) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-bitexact", "-i"])
        .arg(fixture(name))
        .args(["-c:a", "flac", "-f", "ogg", "-"])
        .output()
        .expect("ffmpeg is installed (./dev test installs it)");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn ogg_vorbis_decodes_to_pcm() {
    for (name, channels) in [("stereo_44k.ogg", 2u16), ("mono_44k.ogg", 1)] {
        let (rate, ch, frames, pcm) = decoded(SourceKind::Ogg, fixture_bytes(name).to_vec());
        assert_eq!((rate, ch), (44_100, channels), "{name}");
        assert_duration(name, frames, rate, 3.0);
        // A -6 dBFS tone: peaks near 16384.
        let peak = pcm
            .chunks_exact(2)
            .map(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs())
            .max();
        assert!(
            peak.is_some_and(|p| (14_000..19_000).contains(&p)),
            "{name}: peak {peak:?}"
        );
    }
}

#[test]
fn mp3_decodes_to_pcm() {
    for (name, rate, channels) in [
        ("stereo_44k.mp3", 44_100, 2u16),
        ("mono_48k.mp3", 48_000, 1),
    ] {
        let (r, ch, frames, _) = decoded(SourceKind::Mp3, fixture_bytes(name).to_vec());
        assert_eq!((r, ch), (rate, channels), "{name}");
        assert_duration(name, frames, r, 3.0);
    }
}

#[test]
fn mp3_after_id3v2_tags_decodes() {
    let mp3 = fixture_bytes("mono_48k.mp3").to_vec();
    assert_eq!(&mp3[..3], b"ID3", "the fixture starts with a tag");
    let mut tag = b"ID3\x04\x00\x00".to_vec();
    tag.extend([0, 0, 0x10, 0]); // 2048 bytes, syncsafe
    tag.extend(vec![0xffu8; 2048]); // sync-like bytes inside the tag must not be taken for frames
    let (r, ch, frames, _) = decoded(SourceKind::Mp3, [tag, mp3].concat());
    assert_eq!((r, ch), (48_000, 1));
    assert_duration("tagged", frames, r, 3.0);
}

#[test]
fn ogg_flac_decodes_to_the_same_samples_as_flac() {
    let ogg = ffmpeg_ogg_flac("stereo_44k.flac");
    let (rate, ch, frames, pcm) = decoded(SourceKind::Ogg, ogg);
    assert_eq!((rate, ch), (44_100, 2));
    assert_duration("ogg flac", frames, rate, 2.0);
    let (reference, _, _) = decode_all(fixture_bytes("stereo_44k.flac")).expect("flac");
    let mut want = Vec::new();
    f32_to_s16le(&reference, &mut want);
    assert!(pcm == want, "16-bit FLAC samples come through unchanged");
}

#[test]
fn ogg_flac_surround_is_downmixed_to_stereo() {
    let (rate, ch, frames, _) = decoded(SourceKind::Ogg, ffmpeg_ogg_flac("surround_48k.wav"));
    assert_eq!((rate, ch), (48_000, 2));
    assert_duration("5.1", frames, rate, 0.5);
}

// ---------------------------------------------------------------------------------------------
// Broken input.

#[test]
fn garbage_and_empty_input_are_typed_errors() {
    let garbage = fixture_bytes("corrupt.bin").to_vec();
    let (_, err) = read_all(SourceKind::Ogg, trickle(garbage.clone()));
    assert!(
        matches!(&err, Some(MediaError::Malformed(m)) if m.contains("not an Ogg stream")),
        "{err:?}"
    );
    let (items, err) = read_all(SourceKind::Mp3, trickle(garbage));
    assert!(items.is_empty());
    assert!(matches!(err, Some(MediaError::Unsupported(_))), "{err:?}");
    let (_, err) = read_all(
        SourceKind::Ogg,
        trickle([b"OggS".as_slice(), &noise(5000, 3)].concat()),
    );
    assert!(matches!(err, Some(MediaError::Malformed(_))), "{err:?}");
    for kind in [SourceKind::Ogg, SourceKind::Mp3] {
        let (_, err) = read_all(kind, trickle(Vec::new()));
        assert!(matches!(err, Some(MediaError::Empty)), "{kind:?}: {err:?}");
    }
    let mut tag_only = b"ID3\x03\x00\x00\x00\x00\x01\x00".to_vec();
    tag_only.extend([0u8; 128]);
    let (_, err) = read_all(SourceKind::Mp3, trickle(tag_only));
    assert!(matches!(err, Some(MediaError::Truncated(_))), "{err:?}");
    // An MP3 start, then garbage: ends (error or not) without hanging.
    let _ = read_all(
        SourceKind::Mp3,
        trickle(fixture_bytes("corrupt.mp3").to_vec()),
    );
}

#[test]
fn truncated_input_ends_cleanly() {
    let data = live_opus(2, 1.0, true);
    let all = expected_items(&data).len();
    for len in (0..data.len()).step_by(53) {
        let (items, err) = read_all(SourceKind::Ogg, trickle(data[..len].to_vec()));
        assert!(items.len() <= all);
        if let Some(e) = err {
            assert!(
                matches!(e, MediaError::Empty | MediaError::Truncated(_)),
                "cut at {len}: {e:?}"
            );
        }
    }
    let (items, err) = read_all(
        SourceKind::Ogg,
        trickle(fixture_bytes("truncated.opus").to_vec()),
    );
    assert!(
        err.is_none() && items.len() > 50,
        "{} items, {err:?}",
        items.len()
    );
    for (kind, name) in [
        (SourceKind::Ogg, "stereo_44k.ogg"),
        (SourceKind::Mp3, "stereo_44k.mp3"),
        (SourceKind::Ogg, "stereo_44k.flac"),
    ] {
        let data = if name.ends_with(".flac") {
            let ogg = ffmpeg_ogg_flac("stereo_44k.flac");
            ogg[..ogg.len() * 3 / 4].to_vec()
        } else {
            let d = fixture_bytes(name);
            d[..d.len() * 3 / 4].to_vec()
        };
        let (items, err) = read_all(kind, trickle(data));
        assert!(
            !items.is_empty(),
            "{name}: nothing before the cut ({err:?})"
        );
    }
}

#[test]
fn mutated_inputs_never_panic_or_hang() {
    let inputs = [
        (SourceKind::Ogg, live_opus(2, 0.5, true)),
        (SourceKind::Ogg, fixture_bytes("mono_44k.ogg").to_vec()),
        (
            SourceKind::Mp3,
            fixture_bytes("mono_48k.mp3")[..12_000].to_vec(),
        ),
        (
            SourceKind::Ogg,
            ffmpeg_ogg_flac("mono_48k.flac")[..12_000].to_vec(),
        ),
    ];
    let mut seed = 11u64;
    for (kind, original) in &inputs {
        for round in 0..60 {
            let mut data = original.clone();
            for _ in 0..1 + round % 8 {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let at = (seed >> 33) as usize % data.len();
                data[at] = (seed >> 13) as u8;
            }
            if round % 5 == 0 {
                data.truncate((seed >> 40) as usize % data.len());
            }
            let _ = read_all(*kind, trickle(data));
        }
    }
}

#[test]
fn read_errors_propagate() {
    let is_reset = |e: &Option<MediaError>| match e {
        Some(MediaError::Io(io)) => io.kind() == ErrorKind::ConnectionReset,
        _ => false,
    };
    let opus = live_opus(2, 1.0, true);
    let (items, err) = read_all(SourceKind::Ogg, Failing(Cursor::new(opus[..6000].to_vec())));
    assert!(!items.is_empty() && is_reset(&err), "{err:?}");
    let mp3 = fixture_bytes("stereo_44k.mp3");
    let (items, err) = read_all(
        SourceKind::Mp3,
        Failing(Cursor::new(mp3[..20_000].to_vec())),
    );
    assert!(!items.is_empty() && is_reset(&err), "{err:?}");
    let ogg = fixture_bytes("stereo_44k.ogg");
    let (_, err) = read_all(SourceKind::Ogg, Failing(Cursor::new(ogg[..7000].to_vec())));
    assert!(is_reset(&err), "{err:?}");
    // While symphonia probes for the first frame (its probe would call it "no format found").
    let (_, err) = read_all(SourceKind::Mp3, Failing(Cursor::new(vec![0u8; 3000])));
    assert!(is_reset(&err), "{err:?}");
    let (_, err) = read_all(SourceKind::Ogg, Failing(Cursor::new(Vec::new())));
    assert!(is_reset(&err), "{err:?}");
}

#[test]
fn content_types_map_to_kinds() {
    for (ct, kind) in [
        ("audio/ogg", Some(SourceKind::Ogg)),
        ("application/ogg", Some(SourceKind::Ogg)),
        ("Audio/Opus", Some(SourceKind::Ogg)),
        ("audio/vorbis", Some(SourceKind::Ogg)),
        ("audio/flac", Some(SourceKind::Ogg)),
        ("audio/x-flac", Some(SourceKind::Ogg)),
        ("audio/ogg; codecs=opus", Some(SourceKind::Ogg)),
        ("audio/mpeg", Some(SourceKind::Mp3)),
        ("AUDIO/MP3", Some(SourceKind::Mp3)),
        ("audio/x-mpeg ; charset=binary", Some(SourceKind::Mp3)),
        (" audio/mpeg", Some(SourceKind::Mp3)),
        ("audio/aac", None),
        ("audio/wav", None),
        ("text/plain", None),
        ("", None),
        ("audio/ogg2", None),
    ] {
        assert_eq!(SourceKind::from_content_type(ct), kind, "{ct:?}");
    }
}

#[test]
fn reader_can_move_to_a_blocking_thread() {
    fn is_send<T: Send>() {}
    is_send::<SourceReader>();
}

#[test]
fn chained_ogg_vorbis_continues_with_the_new_link_layout() {
    let data = [
        fixture_bytes("stereo_44k.ogg").to_vec(),
        fixture_bytes("mono_44k.ogg").to_vec(),
    ]
    .concat();
    let mut frames = [0usize; 2];
    let mut seen = Vec::new();
    for item in read_ok(SourceKind::Ogg, data) {
        let SourceAudio::Pcm {
            sample_rate,
            channels,
            data,
        } = item
        else {
            panic!("a decoded source gave {item:?}");
        };
        assert_eq!(sample_rate, 44_100);
        if seen.last() != Some(&channels) {
            seen.push(channels);
        }
        frames[usize::from(channels) - 1] += data.len() / (2 * usize::from(channels));
    }
    assert_eq!(seen, [2, 1], "stereo link, then mono link");
    assert_duration("stereo link", frames[1], 44_100, 3.0);
    assert_duration("mono link", frames[0], 44_100, 3.0);
}

/// Runs a source's items through a `LiveEncoder` made from its first item; the recording's length.
fn record(kind: SourceKind, data: Vec<u8>) -> f64 {
    let items = read_ok(kind, data);
    let input = match &items[0] {
        SourceAudio::OpusHead { channels, pre_skip } => LiveInput::Opus {
            channels: *channels,
            pre_skip: *pre_skip,
        },
        SourceAudio::Pcm {
            sample_rate,
            channels,
            ..
        } => LiveInput::PcmS16le {
            sample_rate: *sample_rate,
            channels: *channels,
        },
        other => panic!("first item {other:?}"),
    };
    let mut live = LiveEncoder::new(input, &LiveOptions::default()).expect("live encoder");
    let mut file = live.headers().to_vec();
    for item in &items {
        let chunks = match item {
            SourceAudio::OpusHead { .. } => continue,
            SourceAudio::OpusPacket(p) => live.push_opus_packet(p),
            SourceAudio::Pcm { data, .. } => live.push_pcm(data),
        };
        for c in chunks.expect("push") {
            file.extend_from_slice(&c.data);
        }
    }
    for c in live.finish().expect("finish") {
        file.extend_from_slice(&c.data);
    }
    let (samples, channels, rate) = decode_all(file.into()).expect("the recording decodes");
    samples.len() as f64 / channels as f64 / f64::from(rate)
}

#[test]
fn items_feed_a_live_encoder() {
    for (kind, name) in [
        (SourceKind::Ogg, "stereo_48k.opus"),
        (SourceKind::Ogg, "stereo_44k.ogg"),
        (SourceKind::Mp3, "mono_48k.mp3"),
    ] {
        let seconds = record(kind, fixture_bytes(name).to_vec());
        assert!((seconds - 3.0).abs() < 0.1, "{name}: {seconds:.3} s");
    }
}
