//! Live encoder: incremental PCM / Opus input, bounded latency, mid-stream joins, clean end.

mod common;

use bytes::Bytes;
use common::{decode_all, music, tone};
use veza_media_core::ogg::{FLAG_EOS, parse_pages};
use veza_media_core::{AudioChunk, LiveEncoder, LiveInput, LiveOptions};

fn s16le(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|s| ((s * 32767.0) as i16).to_le_bytes())
        .collect()
}

fn concat(chunks: &[AudioChunk]) -> Bytes {
    Bytes::from(
        chunks
            .iter()
            .flat_map(|c| c.data.iter().copied())
            .collect::<Vec<u8>>(),
    )
}

#[test]
fn pcm_feed_gives_pages_with_bounded_latency() {
    for rate in [48_000u32, 44_100] {
        let mut live = LiveEncoder::new(
            LiveInput::PcmS16le {
                sample_rate: rate,
                channels: 2,
            },
            &LiveOptions::default(),
        )
        .expect("live");
        let pcm = s16le(&music(rate, 3.0));
        // 10 ms pushes split at odd byte offsets.
        let step = (rate as usize / 100) * 4 + 1;
        let mut chunks = Vec::new();
        let mut pushed = 0usize;
        for part in pcm.chunks(step) {
            chunks.extend(live.push_pcm(part).expect("push"));
            pushed += part.len();
            let in_ms = (pushed / 4) as u64 * 1000 / u64::from(rate);
            let out_ms = chunks
                .last()
                .map_or(0, |c: &AudioChunk| c.timestamp_ms + 100);
            assert!(
                in_ms < 200 || out_ms + 200 >= in_ms,
                "{rate}: {in_ms} ms in, {out_ms} ms out"
            );
        }
        assert!(chunks.iter().all(|c| c.data.len() < 64 * 1024));
        chunks.extend(live.finish().expect("finish"));
        let pages = parse_pages(&concat(&chunks)).expect("whole pages");
        assert_eq!(pages.last().map(|p| p.flags & FLAG_EOS), Some(FLAG_EOS));
        assert!(
            chunks
                .windows(2)
                .all(|w| w[0].index < w[1].index && w[0].timestamp_ms <= w[1].timestamp_ms)
        );
    }
}

#[test]
fn recording_of_a_live_stream_has_the_input_length() {
    let mut live = LiveEncoder::new(
        LiveInput::PcmS16le {
            sample_rate: 48_000,
            channels: 1,
        },
        &LiveOptions::default(),
    )
    .expect("live");
    let mut file = live.headers().to_vec();
    let source = tone(48_000, &[440.0], 2.0, 0.5);
    for part in s16le(&source).chunks(1234) {
        file.extend(concat(&live.push_pcm(part).expect("push")));
    }
    file.extend(concat(&live.finish().expect("finish")));
    let (decoded, ch, _) = decode_all(Bytes::from(file)).expect("recording decodes");
    assert_eq!((ch, decoded.len()), (1, source.len()));
}

#[test]
fn a_listener_joining_mid_stream_gets_headers_then_the_live_edge() {
    let mut live = LiveEncoder::new(
        LiveInput::PcmS16le {
            sample_rate: 48_000,
            channels: 2,
        },
        &LiveOptions::default(),
    )
    .expect("live");
    let pcm = s16le(&music(48_000, 4.0));
    let (first, second) = pcm.split_at(pcm.len() / 2);
    live.push_pcm(first).expect("push");
    let mut joined = live.join();
    assert_eq!(&joined[0].data[28..36], b"OpusHead");
    assert!(
        joined.len() == 2 && joined[1].timestamp_ms >= 1700,
        "starts at the live edge"
    );
    for part in second.chunks(4800) {
        joined.extend(live.push_pcm(part).expect("push"));
    }
    joined.extend(live.finish().expect("finish"));
    let (decoded, ch, _) = decode_all(concat(&joined)).expect("joined stream decodes");
    assert_eq!(ch, 2);
    let seconds = decoded.len() as f64 / 2.0 / 48_000.0;
    assert!(seconds > 1.9 && seconds < 2.4, "{seconds} s after joining");
}

#[test]
fn opus_packets_are_muxed_without_reencoding() {
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::Audio).expect("enc");
    let pre_skip = enc.get_lookahead().expect("lookahead") as u16;
    let mut live = LiveEncoder::new(
        LiveInput::Opus {
            channels: 2,
            pre_skip,
        },
        &LiveOptions::default(),
    )
    .expect("live");
    let source = music(48_000, 1.0);
    let mut chunks = live.join();
    let mut packets = Vec::new();
    for frame in source.chunks(960 * 2) {
        let packet = enc.encode_vec_float(frame, 4000).expect("encode");
        chunks.extend(live.push_opus_packet(&packet).expect("push"));
        packets.push(packet);
    }
    chunks.extend(live.finish().expect("finish"));
    let file = concat(&chunks);
    let pages = parse_pages(&file).expect("pages");
    let payload: usize = packets.iter().map(Vec::len).sum();
    assert!(file.len() > payload && file.len() < payload + pages.len() * 40 + 200);
    let (decoded, _, _) = decode_all(file).expect("decodes");
    assert_eq!(decoded.len() / 2, 48_000 - usize::from(pre_skip));
    assert!(live_rejects_garbage());
}

fn live_rejects_garbage() -> bool {
    let mut live = LiveEncoder::new(
        LiveInput::Opus {
            channels: 1,
            pre_skip: 312,
        },
        &LiveOptions::default(),
    )
    .expect("live");
    live.push_opus_packet(&[]).is_err() && live.push_pcm(&[0, 0]).is_err()
}

#[test]
fn bad_live_settings_are_rejected() {
    let pcm = LiveInput::PcmS16le {
        sample_rate: 48_000,
        channels: 2,
    };
    assert!(
        LiveEncoder::new(
            pcm,
            &LiveOptions {
                page_ms: 1001,
                ..LiveOptions::default()
            }
        )
        .is_err()
    );
    assert!(
        LiveEncoder::new(
            pcm,
            &LiveOptions {
                page_ms: 0,
                ..LiveOptions::default()
            }
        )
        .is_err()
    );
    assert!(
        LiveEncoder::new(
            LiveInput::PcmS16le {
                sample_rate: 0,
                channels: 2
            },
            &LiveOptions::default()
        )
        .is_err()
    );
    assert!(
        LiveEncoder::new(
            LiveInput::Opus {
                channels: 3,
                pre_skip: 0
            },
            &LiveOptions::default()
        )
        .is_err()
    );
}

/// The end trim of the EOS page never puts its granule behind the page before it, whatever
/// the input's length and rate (an MP3 source at 44.1 kHz ended with 287450 after 288000).
#[test]
fn granules_never_go_back_at_the_end() {
    for rate in [44_100u32, 48_000] {
        for ms in [2_990u32, 3_000, 3_010, 3_050, 3_095, 6_000, 6_013] {
            let opts = LiveOptions::default();
            let input = LiveInput::PcmS16le {
                sample_rate: rate,
                channels: 2,
            };
            let mut live = LiveEncoder::new(input, &opts).expect("live");
            let pcm = s16le(&music(rate, ms as f32 / 1000.0));
            let mut chunks = Vec::new();
            // 100 ms pushes, as the Icecast source path hands decoded MP3 over.
            for part in pcm.chunks((rate as usize / 10) * 4) {
                chunks.extend(live.push_pcm(part).expect("push"));
            }
            chunks.extend(live.finish().expect("finish"));
            let pages = parse_pages(&concat(&chunks)).expect("pages");
            let granules: Vec<u64> = pages.iter().map(|p| p.granule).collect();
            assert!(
                granules.windows(2).all(|w| w[0] <= w[1]),
                "{rate} Hz, {ms} ms: {granules:?}"
            );
            assert!(pages.last().is_some_and(|p| p.flags & FLAG_EOS != 0));
        }
    }
}
