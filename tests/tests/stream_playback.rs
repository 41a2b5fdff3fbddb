//! Upload → ready → StreamAudio for every fixture format, on both backends: the Ogg stream is a
//! valid .opus of the source's length, pcm_s16le has the right sample count, start_ms seeks.

mod stream_common;

use stream_common::*;
use veza_proto::stream::StreamAudioRequest;
use veza_tests::{Backend, TestServer, on_both_backends};

const FORMATS: &[&str] = &[
    "stereo_44k.mp3",
    "mono_48k.mp3",
    "mono_48k.flac",
    "stereo_44k.flac",
    "stereo_44k_s16.wav",
    "mono_48k_f32.wav",
    "stereo_44k.ogg",
    "mono_44k.ogg",
    "stereo_48k.opus",
    "mono_48k.opus",
];

async fn every_format_plays(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (owner, token) = s.user("producer").await;
    let mut ids = Vec::new();
    for name in FORMATS {
        let data = fixture(name);
        ids.push((name, upload(&s, &token, name, &data).await, data));
    }
    for (name, id, data) in &ids {
        let i = settle(&s, &token, *id).await;
        assert_eq!(i.status, "ready", "{name}: {}", i.error_message);
        assert_eq!(
            (i.kind.as_str(), i.owner_id, i.title.as_str()),
            ("track", owner, **name)
        );
        assert_eq!(i.bytes_received, data.len() as i64);
        assert_eq!(i.file_size, data.len() as i64);
        assert!(!i.rendition_bitrates.is_empty(), "{name}");
        assert!(
            i.audio_url
                .contains(&format!("/media/{id}/audio.opus?exp="))
        );
        assert!(
            i.waveform_url
                .contains(&format!("/media/{id}/waveform.json?exp="))
        );
        assert!(i.created_at.is_some() && i.updated_at.is_some());
        let (frames, channels) = source_frames_48k(data);
        assert_eq!(i.channels, i32::from(channels), "{name}");

        // Ogg: a valid .opus of the source's length (± 20 ms).
        let chunks = play(
            &s,
            &token,
            StreamAudioRequest {
                track_id: *id,
                ..Default::default()
            },
        )
        .await
        .expect("StreamAudio");
        assert!(!chunks.is_empty());
        for (n, c) in chunks.iter().enumerate() {
            assert_eq!(c.chunk_index, n as i32);
            assert_eq!(
                (c.stream_id, c.sample_rate, c.codec.as_str()),
                (*id, 48_000, "opus")
            );
            assert_eq!(c.channels, i32::from(channels));
        }
        let file = concat(&chunks);
        assert!(file.starts_with(b"OggS"));
        let (decoded, ch) = decode_opus(&file);
        assert_eq!(ch, channels);
        let diff_ms = (decoded as i64 - frames as i64).abs() * 1000 / 48_000;
        assert!(
            diff_ms <= 20,
            "{name}: decoded {decoded} frames, source {frames}"
        );
        assert!(
            (i.duration_ms - (frames * 1000 / 48_000) as i64).abs() <= 20,
            "{name}"
        );

        // pcm_s16le: exactly the source's samples at 48 kHz.
        let pcm = play(
            &s,
            &token,
            StreamAudioRequest {
                track_id: *id,
                format: "pcm_s16le".into(),
                ..Default::default()
            },
        )
        .await
        .expect("pcm");
        assert!(pcm.iter().all(|c| c.codec == "pcm_s16le"));
        let bytes: usize = pcm.iter().map(|c| c.audio_data.len()).sum();
        let got = (bytes / 2 / usize::from(channels)) as i64;
        assert!(
            (got - frames as i64).abs() <= 1,
            "{name}: pcm {got} frames, source {frames}"
        );

        // start_ms = 500: Ogg starts at the page holding 500 ms, PCM exactly there.
        let from = play(
            &s,
            &token,
            StreamAudioRequest {
                track_id: *id,
                start_ms: 500,
                ..Default::default()
            },
        )
        .await
        .expect("seek");
        let t0 = from[0].timestamp.expect("timestamp");
        let t0_ms = t0.seconds * 1000 + i64::from(t0.nanos) / 1_000_000;
        assert!(
            (300..=500).contains(&t0_ms),
            "{name}: first chunk at {t0_ms} ms"
        );
        let (rest, _) = decode_opus(&concat(&from));
        let expect_rest = frames as i64 - t0_ms * 48;
        assert!(
            (rest as i64 - expect_rest).abs() <= 48 * 20,
            "{name}: {rest} frames after seeking, expected {expect_rest}"
        );
        let pcm_from = play(
            &s,
            &token,
            StreamAudioRequest {
                track_id: *id,
                format: "pcm_s16le".into(),
                start_ms: 500,
                ..Default::default()
            },
        )
        .await
        .expect("pcm seek");
        let bytes: usize = pcm_from.iter().map(|c| c.audio_data.len()).sum();
        let got = (bytes / 2 / usize::from(channels)) as i64;
        assert!(
            (got - (frames as i64 - 24_000)).abs() <= 1,
            "{name}: pcm from 500 ms {got}"
        );
    }
    s.stop().await;
}

async fn quality_picks_the_nearest_rendition(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, token) = s.user("q").await;
    let id = upload(&s, &token, "wav", &fixture("stereo_44k_s16.wav")).await;
    let i = settle(&s, &token, id).await;
    assert_eq!(i.rendition_bitrates, vec![32, 64, 128]);
    let size = |q: i32| {
        let s = &s;
        let token = &token;
        async move {
            let c = play(
                s,
                token,
                StreamAudioRequest {
                    track_id: id,
                    quality: q,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            concat(&c).len()
        }
    };
    let (low, mid, high, top) = (
        size(30).await,
        size(70).await,
        size(1000).await,
        size(0).await,
    );
    assert!(low < mid && mid < high, "{low} {mid} {high}");
    assert_eq!(high, top);
    s.stop().await;
}

on_both_backends!(every_format_plays, quality_picks_the_nearest_rendition);
