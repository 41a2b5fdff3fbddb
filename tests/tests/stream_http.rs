//! Media URLs on the HTTP port: whole files, exact Range responses, waveform JSON and `.dat`,
//! and 403 for expired or tampered signatures.

mod stream_common;

use stream_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use veza_proto::stream::StreamAudioRequest;
use veza_tests::{Backend, TestServer, on_both_backends};

/// (status, headers lower-cased, body) of a GET over HTTP/1.1.
async fn get(url: &str, extra: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let rest = url.trim_start_matches("http://");
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn media_urls(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, token) = s.user("web").await;
    let id = upload(&s, &token, "web", &fixture("stereo_44k.mp3")).await;
    let i = settle(&s, &token, id).await;
    assert_eq!(i.status, "ready");
    let whole = concat(
        &play(
            &s,
            &token,
            StreamAudioRequest {
                track_id: id,
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );

    let (status, h, body) = get(&i.audio_url, "").await;
    assert_eq!(status, 200);
    assert_eq!(body, whole);
    assert_eq!(
        header(&h, "content-length"),
        Some(whole.len().to_string().as_str())
    );
    assert_eq!(header(&h, "accept-ranges"), Some("bytes"));
    assert_eq!(header(&h, "content-type"), Some("audio/ogg"));

    let (status, h, body) = get(&i.audio_url, "Range: bytes=100-1099\r\n").await;
    assert_eq!(status, 206);
    assert_eq!(body, &whole[100..1100]);
    assert_eq!(header(&h, "content-length"), Some("1000"));
    assert_eq!(
        header(&h, "content-range"),
        Some(format!("bytes 100-1099/{}", whole.len()).as_str())
    );
    let (status, _, body) = get(&i.audio_url, "Range: bytes=-10\r\n").await;
    assert_eq!((status, body.as_slice()), (206, &whole[whole.len() - 10..]));
    let (status, h, _) = get(&i.audio_url, &format!("Range: bytes={}-\r\n", whole.len())).await;
    assert_eq!(status, 416);
    assert_eq!(
        header(&h, "content-range"),
        Some(format!("bytes */{}", whole.len()).as_str())
    );

    let (status, h, body) = get(&i.waveform_url, "").await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["version"], 2);
    let dat_url = i.waveform_url.replace("waveform.json", "waveform.dat");
    let (status, _, body) = get(&dat_url, "").await;
    assert_eq!(status, 200);
    assert_eq!(&body[..4], &2i32.to_le_bytes());
    // A specific rendition by name.
    let low = i
        .audio_url
        .replace("audio.opus", &format!("{}k.opus", i.rendition_bitrates[0]));
    assert_eq!(get(&low, "").await.0, 200);

    // Tampered signature, another id with this signature, expired, missing.
    let sig_at = i.audio_url.find("sig=").unwrap() + 4;
    let mut tampered = i.audio_url.clone().into_bytes();
    tampered[sig_at] = if tampered[sig_at] == b'0' { b'1' } else { b'0' };
    assert_eq!(get(&String::from_utf8(tampered).unwrap(), "").await.0, 403);
    let other = i
        .audio_url
        .replace(&format!("/media/{id}/"), &format!("/media/{}/", id + 1));
    assert_eq!(get(&other, "").await.0, 403);
    let exp_at = i.audio_url.find("exp=").unwrap();
    let expired = format!(
        "{}exp=1&{}",
        &i.audio_url[..exp_at],
        &i.audio_url[sig_at - 4..]
    );
    assert_eq!(get(&expired, "").await.0, 403);
    let bare = i.audio_url.split('?').next().unwrap().to_string();
    assert_eq!(get(&bare, "").await.0, 403);
    s.stop().await;
}

async fn expired_urls_are_refused(b: Backend) {
    let Some(s) =
        TestServer::start_with(b, |c| c.media_url_ttl = std::time::Duration::from_secs(1)).await
    else {
        return;
    };
    let (_, token) = s.user("short").await;
    let id = upload(&s, &token, "short", &fixture("mono_48k.flac")).await;
    let i = settle(&s, &token, id).await;
    assert_eq!(get(&i.waveform_url, "").await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(get(&i.waveform_url, "").await.0, 403);
    s.stop().await;
}

on_both_backends!(media_urls, expired_urls_are_refused);
