//! Live over plain HTTP, Icecast style (SPEC §12): sources pushing with ffmpeg's `icecast://`,
//! `curl -T` and raw `PUT`/`SOURCE` requests, and `GET /live/{id}` listeners beside gRPC,
//! gRPC-Web and TLS ones. Every case runs twice: with live audio written straight onto the
//! listeners' sockets (`live_direct = true`, `…_direct`) and through hyper's ordinary response
//! bodies (`false`, `…_hyper`); `veza_live_served_total` says which path served a listener.

use std::{
    collections::BTreeSet, ops::Range, path::Path, process::Stdio, sync::OnceLock, time::Duration,
};

use base64::Engine as _;
use futures::StreamExt;
use prost::Message as _;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
    task::JoinHandle,
    time::Instant,
};
use tonic::{
    Status,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};
use veza_control_plane::Config;
use veza_proto::{
    auth::{AuthenticateRequest, RegisterRequest, auth_service_client::AuthServiceClient},
    stream::{stream_service_client::StreamServiceClient, *},
};
use veza_tests::{Backend, TestServer, bearer};

type Client = StreamServiceClient<Channel>;

const RATE: u32 = 48_000;
/// The tone every source in this file plays.
const TONE_HZ: f64 = 440.0;

/// `case(true)` as `direct` and `case(false)` as `hyper`.
macro_rules! on_both_paths {
    ($($case:ident => $direct:ident, $hyper:ident;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $direct() {
                $case(true).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $hyper() {
                $case(false).await
            }
        )*
    };
}

on_both_paths! {
    ffmpeg_opus_source => ffmpeg_opus_source_direct, ffmpeg_opus_source_hyper;
    ffmpeg_mp3_source => ffmpeg_mp3_source_direct, ffmpeg_mp3_source_hyper;
    source_auth_and_methods => source_auth_and_methods_direct, source_auth_and_methods_hyper;
    source_bad_input => source_bad_input_direct, source_bad_input_hyper;
    source_reconnects_within_grace => source_reconnects_within_grace_direct,
        source_reconnects_within_grace_hyper;
    stalled_http_listener_skips_ahead => stalled_http_listener_skips_ahead_direct,
        stalled_http_listener_skips_ahead_hyper;
    private_live_needs_a_signed_url => private_live_needs_a_signed_url_direct,
        private_live_needs_a_signed_url_hyper;
    http_listener_refusals => http_listener_refusals_direct, http_listener_refusals_hyper;
    grpc_web_live_listener => grpc_web_live_listener_direct, grpc_web_live_listener_hyper;
    tls_live_listener => tls_live_listener_direct, tls_live_listener_hyper;
    http_listeners_leaving_are_counted_out => http_listeners_leaving_are_counted_out_direct,
        http_listeners_leaving_are_counted_out_hyper;
}

// ---------------------------------------------------------------------------------------------
// The cases.

/// ffmpeg publishes 6 s of a 440 Hz tone as Ogg Opus over `icecast://`; an HTTP listener
/// (curl) and a gRPC listener join mid-stream, both count in StreamAnalytics, and both hear
/// Opus at 48 kHz with the source's tone.
async fn ffmpeg_opus_source(direct: bool) {
    ffmpeg_source(direct, false).await
}

/// The same with an MP3 source at 44.1 kHz (`audio/mpeg`): listeners still get Opus.
async fn ffmpeg_mp3_source(direct: bool) {
    ffmpeg_source(direct, true).await
}

async fn ffmpeg_source(direct: bool, mp3: bool) {
    let s = server(direct, |c| c.live_grace = Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, dj) = s.user("dj").await;
    let (_, fan) = s.user("fan").await;
    let mut c = client(s.channel().await);
    let req = if mp3 {
        live_request("pcm_s16le", 44_100, false)
    } else {
        live_request("opus", 48_000, false)
    };
    let started = start(&mut c, &dj, req).await;
    let id = started.stream_id;
    let url = format!("{}/live/{id}", s.http_url);
    assert!(!started.stream_key.is_empty(), "StartStream returns a key");
    assert_eq!(started.ingest_url, url, "StartStream's ingest_url");
    assert_eq!(
        info(&mut c, &fan, id).await.audio_url,
        url,
        "a public live stream's audio_url"
    );
    let before = metrics(&s).await;

    let port = s.http_url.rsplit(':').next().expect("a port");
    let target = format!(
        "icecast://source:{}@127.0.0.1:{port}/live/{id}",
        url_encode(&started.stream_key)
    );
    let mut cmd = tokio::process::Command::new("ffmpeg");
    cmd.args(["-v", "error", "-nostdin", "-re", "-f", "lavfi", "-i"])
        .arg(format!("sine=frequency={TONE_HZ}:sample_rate=48000"))
        .args(["-t", "6", "-ac", "2"]);
    if mp3 {
        cmd.args([
            "-ar",
            "44100",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            "-f",
            "mp3",
        ])
        .args(["-content_type", "audio/mpeg"]);
    } else {
        cmd.args(["-c:a", "libopus", "-b:a", "64k", "-f", "ogg"])
            .args(["-content_type", "audio/ogg"]);
    }
    cmd.arg(&target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut ffmpeg = cmd
        .spawn()
        .expect("ffmpeg is installed (./dev test installs it)");
    // Listeners join once the source is on.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if let Some(status) = ffmpeg.try_wait().expect("ffmpeg's state") {
        let out = ffmpeg.wait_with_output().await.expect("ffmpeg's output");
        panic!(
            "ffmpeg ended early ({status}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let http_file = dir.path().join("http.opus");
    let http_path = http_file.to_str().expect("utf-8 path");
    let curl_task = curl(&[
        "-s",
        "-S",
        "--max-time",
        "60",
        "-o",
        http_path,
        "-w",
        "%{http_code} %{content_type}",
        &url,
    ]);
    let grpc = grpc_listener(&mut c, &fan, id).await;
    wait_for_listeners(&mut c, &dj, id, 2).await;
    assert_eq!(
        info(&mut c, &dj, id).await.listeners,
        2,
        "GetStreamInfo counts the HTTP and the gRPC listener"
    );
    let out = tokio::time::timeout(Duration::from_secs(30), ffmpeg.wait_with_output())
        .await
        .expect("ffmpeg ends in 30 s")
        .expect("ffmpeg ran");
    assert!(
        out.status.success(),
        "ffmpeg published: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop(&mut c, &dj, id).await;
    let (written, ok, err) = tokio::time::timeout(Duration::from_secs(15), curl_task)
        .await
        .expect("curl ends with the stream")
        .expect("curl task");
    assert!(
        ok,
        "curl exits cleanly when the stream ends: {err} ({written})"
    );
    let (code, content_type) = written.split_once(' ').unwrap_or((&written, ""));
    assert_eq!(code, "200", "GET /live/{id}");
    assert!(
        content_type.starts_with("audio/ogg"),
        "content type {content_type:?}"
    );
    let (chunks, err, ended) = grpc.await.expect("gRPC listener");
    assert!(ended && err.is_none(), "gRPC listener ends OK: {err:?}");
    let grpc_bytes = concat(&chunks);
    let grpc_file = dir.path().join("grpc.opus");
    std::fs::write(&grpc_file, &grpc_bytes).expect("written");
    let http_bytes = std::fs::read(&http_file).expect("curl's file");

    let hp = one_opus_stream(&http_bytes, "HTTP listener", Seq::AfterHeaders);
    let gp = one_opus_stream(&grpc_bytes, "gRPC listener", Seq::AfterHeaders);
    // The same pages on both transports.
    let mut common = 0;
    for p in &hp[2..] {
        if let Some(q) = gp[2..].iter().find(|q| q.seq == p.seq) {
            assert_eq!(
                &http_bytes[p.at..p.at + p.len],
                &grpc_bytes[q.at..q.at + q.len],
                "page {} differs between HTTP and gRPC",
                p.seq
            );
            common += 1;
        }
    }
    assert!(common >= 2, "{common} pages heard on both transports");
    let http_s = check_heard(&http_file, "HTTP listener", 2.0).await;
    let grpc_s = check_heard(&grpc_file, "gRPC listener", 2.0).await;
    eprintln!("heard {http_s:.2} s over HTTP, {grpc_s:.2} s over gRPC");

    let after = metrics(&s).await;
    // Direct writes count their messages like hyper's (the headers, burst and live pages).
    let msgs = |t: &str| {
        sample_sum(
            t,
            "grpc_server_msg_sent_total",
            &[("grpc_method", "StreamAudio")],
        )
    };
    let sent = msgs(&after) - msgs(&before);
    assert!(
        sent >= chunks.len() as f64,
        "StreamAudio sent {} messages, grpc_server_msg_sent_total says {sent}",
        chunks.len()
    );
    let (want, other) = (path_name(direct), path_name(!direct));
    for transport in ["http", "grpc"] {
        assert_eq!(
            served(&after, transport, want) - served(&before, transport, want),
            1.0,
            "one {transport} listener served by path={want}: {:?}",
            served_lines(&after)
        );
        assert_eq!(
            served(&after, transport, other) - served(&before, transport, other),
            0.0,
            "no {transport} listener served by path={other}: {:?}",
            served_lines(&after)
        );
    }
    s.stop().await;
}

/// A wrong key, no key and another stream's key are 401; a second source while one is connected
/// is 403; the legacy `SOURCE` method publishes, and a `curl -T` within the grace continues the
/// same stream for a listener that joined before either.
async fn source_auth_and_methods(direct: bool) {
    let s = server(direct, |c| c.live_grace = Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, dj) = s.user("dj").await;
    let mut c = client(s.channel().await);
    let a = start(&mut c, &dj, live_request("opus", 48_000, false)).await;
    let b = start(&mut c, &dj, live_request("opus", 48_000, false)).await;
    assert_ne!(a.stream_key, b.stream_key, "each stream has its own key");
    let url = a.ingest_url.clone();
    assert_eq!(url, format!("{}/live/{}", s.http_url, a.stream_id));
    let tone = tone_ogg();
    let file = dir.path().join("tone.ogg");
    std::fs::write(&file, tone).expect("written");
    let file = file.to_str().expect("utf-8 path").to_string();
    let curl_put = |password: &str| {
        curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "30",
            "-T",
            &file,
            "-H",
            "Content-Type: audio/ogg",
            "-u",
            &format!("source:{password}"),
            &url,
        ])
    };

    // Refused sources.
    let (code, _, err) = curl_put(&b.stream_key).await.expect("curl");
    assert_eq!(code, "401", "another stream's key: {err}");
    let r = source_request(&url, "PUT", None, Framing::Length(0), false, &[]).await;
    assert_eq!(r.status, 401, "no credentials: {}", r.text);
    let wrong = basic("source", "not the key");
    let r = open_source(&url, "PUT", Some(&wrong), Framing::Length(tone.len()), true)
        .await
        .err()
        .expect("refused before the body");
    assert_eq!(r.status, 401, "a wrong key: {}", r.text);
    let r = open_source(&url, "SOURCE", Some(&wrong), Framing::UntilEof, false)
        .await
        .expect("opened")
        .finish()
        .await;
    assert_eq!(r.status, 401, "a wrong key with SOURCE: {}", r.text);

    // A listener that joins before any source.
    let listening = tokio::spawn(listen_http(url.clone(), Duration::from_secs(60)));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The legacy SOURCE method, body until EOF, paced like a real source.
    let key = basic("source", &a.stream_key);
    let mut src = open_source(&url, "SOURCE", Some(&key), Framing::UntilEof, false)
        .await
        .expect("SOURCE opens");
    let pages = parse_ogg(tone, false).expect("ffmpeg's Ogg");
    let half = pages.len() / 2;
    src.send_paced(tone, &pages[..half])
        .await
        .expect("first half sent");
    // A second source on the same mount while the first is connected.
    let r = open_source(&url, "PUT", Some(&key), Framing::Length(tone.len()), true)
        .await
        .err()
        .expect("a second source is refused before its body");
    assert_eq!(r.status, 403, "a second source: {}", r.text);
    let (code, _, err) = curl_put(&a.stream_key).await.expect("curl");
    assert_eq!(code, "403", "a second source with curl -T: {err}");
    src.send_paced(tone, &pages[half..])
        .await
        .expect("second half sent");
    let r = src.finish().await;
    assert_eq!(r.status, 200, "SOURCE ends with 200: {}", r.text);
    assert!(!r.statuses.iter().any(|&c| c >= 400), "{}", r.text);

    // Within the grace, a plain `curl -T` (full speed) continues the stream.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(info(&mut c, &dj, a.stream_id).await.status, "live");
    let (code, ok, err) = curl_put(&a.stream_key).await.expect("curl");
    assert_eq!(code, "200", "curl -T with the key: {err}");
    assert!(ok, "curl -T: {err}");
    stop(&mut c, &dj, a.stream_id).await;

    let l = listening.await.expect("listener");
    assert_eq!(l.head.status, 200);
    assert_eq!(l.head.header("content-type"), Some("audio/ogg"));
    assert!(
        l.closed,
        "the listener's connection closes when the stream ends"
    );
    let (body, complete) = l.body();
    assert!(complete, "the response body ends properly");
    one_opus_stream(&body, "listener of SOURCE then PUT", Seq::Any);
    let f = dir.path().join("heard.opus");
    std::fs::write(&f, &body).expect("written");
    let secs = check_heard(&f, "listener of SOURCE then PUT", 2.5).await;
    eprintln!("heard {secs:.2} s of 2 × 3 s");
    s.stop().await;
}

/// Bad sources get a clear status and the stream goes on: an unknown content type is 415,
/// bytes that are no audio (as Ogg, as MP3) and malformed chunks 400, a head over 16 KiB 400,
/// an id that is no number 404; then a good source publishes.
async fn source_bad_input(direct: bool) {
    let s = server(direct, |c| c.live_grace = Duration::from_secs(5)).await;
    let (_, dj) = s.user("dj").await;
    let mut c = client(s.channel().await);
    let st = start(&mut c, &dj, live_request("opus", 48_000, false)).await;
    let url = st.ingest_url.clone();
    let key = basic("source", &st.stream_key);
    let (addr, path) = split_url(&url);
    let raw = |req: Vec<u8>| {
        let addr = addr.clone();
        async move {
            let mut sock = TcpStream::connect(&addr).await.expect("connects");
            sock.write_all(&req).await.expect("sent");
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(20), sock.read_to_end(&mut out))
                .await
                .expect("answered and closed in 20 s")
                .expect("read");
            Reply::of(&out)
        }
    };
    let put = |ct: &str, body: &[u8]| {
        let mut r = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {key}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let r = raw(put("text/plain", b"hello")).await;
    assert_eq!(r.status, 415, "{}", r.text);
    let junk = b"this is not audio at all; ".repeat(800);
    let r = raw(put("audio/ogg", &junk)).await;
    assert_eq!(r.status, 400, "junk as Ogg: {}", r.text);
    let r = raw(put("audio/mpeg", &junk)).await;
    assert_eq!(r.status, 400, "junk as MP3: {}", r.text);
    let chunked = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {key}\r\nContent-Type: audio/ogg\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    );
    let r = raw(chunked.into_bytes()).await;
    assert_eq!(r.status, 400, "malformed chunks: {}", r.text);
    let big = format!(
        "PUT {path} HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let r = raw(big.into_bytes()).await;
    assert_eq!(r.status, 400, "a head over 16 KiB: {}", r.text);
    let r = raw(b"GET /live/abc HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
    assert_eq!(r.status, 404, "no such id: {}", r.text);
    assert_eq!(
        info(&mut c, &dj, st.stream_id).await.status,
        "live",
        "the stream goes on"
    );
    let tone = tone_ogg();
    let r = source_request(
        &url,
        "PUT",
        Some(&key),
        Framing::Length(tone.len()),
        false,
        tone,
    )
    .await;
    assert_eq!(
        r.status, 200,
        "a good source after the bad ones: {}",
        r.text
    );
    s.stop().await;
}

/// A source pushes a 3 s Ogg Opus file, disconnects, and pushes it again within the grace (first
/// with Content-Length, then chunked after `Expect: 100-continue`); a listener that joined
/// before the first push hears one continuous Ogg stream of both.
async fn source_reconnects_within_grace(direct: bool) {
    let s = server(direct, |c| c.live_grace = Duration::from_secs(3)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, dj) = s.user("dj").await;
    let mut c = client(s.channel().await);
    let st = start(&mut c, &dj, live_request("opus", 48_000, false)).await;
    let (id, url) = (st.stream_id, st.ingest_url.clone());
    let key = basic("source", &st.stream_key);
    let tone = tone_ogg();
    let pages = parse_ogg(tone, false).expect("ffmpeg's Ogg");
    let listening = tokio::spawn(listen_http(
        format!("{}/live/{id}", s.http_url),
        Duration::from_secs(60),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut src = open_source(&url, "PUT", Some(&key), Framing::Length(tone.len()), false)
        .await
        .expect("opens");
    src.send_paced(tone, &pages).await.expect("first push");
    let r = src.finish().await;
    assert_eq!(r.status, 200, "first push: {}", r.text);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        info(&mut c, &dj, id).await.status,
        "live",
        "still live within the grace"
    );
    let mut src = open_source(&url, "PUT", Some(&key), Framing::Chunked, true)
        .await
        .unwrap_or_else(|r| panic!("100 Continue expected: {}", r.text));
    src.send_paced(tone, &pages).await.expect("second push");
    let r = src.finish().await;
    assert_eq!(r.status, 200, "second push: {}", r.text);
    assert_eq!(r.statuses.first(), Some(&200), "no second 100: {}", r.text);
    stop(&mut c, &dj, id).await;

    let l = listening.await.expect("listener");
    assert_eq!(l.head.status, 200);
    assert_eq!(l.head.header("content-type"), Some("audio/ogg"));
    assert!(
        l.closed,
        "the listener's connection closes when the stream ends"
    );
    let (body, complete) = l.body();
    assert!(complete, "the response body ends properly");
    let heard = one_opus_stream(&body, "listener across a reconnect", Seq::Whole);
    eprintln!(
        "{} pages, granules {} → {}",
        heard.len(),
        heard[2].granule,
        heard.last().map_or(0, |p| p.granule)
    );
    let f = dir.path().join("heard.opus");
    std::fs::write(&f, &body).expect("written");
    let p = ffprobe(&f).await;
    assert!(
        (5.4..=7.5).contains(&p.duration),
        "ffprobe: both pushes in one stream: {p:?}"
    );
    let secs = check_heard(&f, "listener across a reconnect", 5.5).await;
    assert!(secs <= 6.6, "both pushes once each: {secs:.2} s");
    s.stop().await;
}

/// An HTTP listener that stops reading while a source pushes 240 s of audio at full speed is
/// skipped ahead: when it reads again the bytes are still whole Ogg pages, it lands near the
/// live edge, far less than everything was kept for it, and `veza_live_skips_total` rose.
async fn stalled_http_listener_skips_ahead(direct: bool) {
    let noise = noise_ogg();
    let s = server(direct, |c| {
        c.live_max_lag_ms = 1000;
        c.live_grace = Duration::from_secs(5);
    })
    .await;
    let (_, dj) = s.user("dj").await;
    let mut c = client(s.channel().await);
    let st = start(&mut c, &dj, live_request("opus", 48_000, false)).await;
    let id = st.stream_id;
    let skips_before = sample_sum(&metrics(&s).await, "veza_live_skips_total", &[]);
    // The stalled listener: a small receive buffer, and nothing read after the head.
    let mut stalled = http_get(&format!("{}/live/{id}", s.http_url), Some(4096)).await;
    assert_eq!(stalled.head.status, 200);

    let t0 = Instant::now();
    let mut src = open_source(
        &st.ingest_url,
        "PUT",
        Some(&basic("source", &st.stream_key)),
        Framing::UntilEof,
        false,
    )
    .await
    .expect("opens");
    tokio::time::timeout(Duration::from_secs(60), src.send(noise))
        .await
        .expect("the server takes 15 MB of source in 60 s")
        .expect("sent");
    let r = src.finish().await;
    assert_eq!(r.status, 200, "the push: {}", r.text);
    eprintln!("pushed {} bytes in {:?}", noise.len(), t0.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // It reads again: whatever was in flight, then the live edge.
    stalled.read_until_idle(Duration::from_secs(1)).await;
    let mut skips = 0.0;
    for _ in 0..30 {
        skips = sample_sum(&metrics(&s).await, "veza_live_skips_total", &[]) - skips_before;
        if skips >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(skips >= 1.0, "a skip counted in /metrics ({skips})");
    stop(&mut c, &dj, id).await;
    assert!(
        stalled.read_to_close(Duration::from_secs(10)).await,
        "the stalled listener's connection closes when the stream ends"
    );
    let (body, complete) = stalled.body();
    assert!(complete, "the response body ends properly");
    let pages = one_opus_stream(&body, "stalled listener", Seq::Any);
    // From the second header page on: a skip may come before the first audio page went out
    // (the listener joined before the source, so audio starts right after the headers).
    let gaps: Vec<(u32, u32)> = pages[1..]
        .windows(2)
        .filter(|w| w[1].seq != w[0].seq + 1)
        .map(|w| (w[0].seq, w[1].seq))
        .collect();
    assert!(!gaps.is_empty(), "pages were skipped, not all queued");
    assert!(
        body.len() < noise.len() / 2,
        "the server kept {} of {} bytes for the stalled listener",
        body.len(),
        noise.len()
    );
    let pushed_end = parse_ogg(noise, false)
        .expect("the noise")
        .last()
        .map_or(0, |p| p.granule);
    let heard_end = pages
        .iter()
        .map(|p| p.granule)
        .filter(|&g| g != u64::MAX)
        .max()
        .unwrap_or(0);
    eprintln!(
        "stalled listener: {} bytes, {} pages, gaps {gaps:?}, ends at {:.1} s of {:.1} s",
        body.len(),
        pages.len(),
        heard_end as f64 / 48_000.0,
        pushed_end as f64 / 48_000.0
    );
    assert!(
        heard_end + 5 * 48_000 >= pushed_end,
        "skipped to the live edge: heard up to {heard_end}, pushed {pushed_end}"
    );
    s.stop().await;
}

/// HTTP listeners count in while connected, on the path the switch picks; one that closes (and,
/// on the direct path, one that sends bytes and then closes) leaves the count while the stream
/// goes on; the last one's connection closes when the stream ends.
async fn http_listeners_leaving_are_counted_out(direct: bool) {
    let s = server(direct, |_| {}).await;
    let (_, dj) = s.user("dj").await;
    let mut c = client(s.channel().await);
    let id = start(&mut c, &dj, live_request("opus", 48_000, false))
        .await
        .stream_id;
    let url = format!("{}/live/{id}", s.http_url);
    let quiet = http_get(&url, None).await;
    let mut chatty = http_get(&url, None).await;
    let stays = http_get(&url, None).await;
    for r in [&quiet, &chatty, &stays] {
        assert_eq!(r.head.status, 200, "GET /live/{id}");
    }
    wait_for_listeners(&mut c, &dj, id, 3).await;
    let text = metrics(&s).await;
    let path = path_name(direct);
    assert_eq!(
        served(&text, "http", path),
        3.0,
        "served on the {path} path: {:?}",
        served_lines(&text)
    );
    drop(quiet);
    wait_for_listeners(&mut c, &dj, id, 2).await;
    if direct {
        // A player sends nothing after its request; bytes that come anyway are read and
        // dropped. (hyper stops reading behind them, as behind a pipelined request, and
        // notices the close only on its next write: no source sends audio here.)
        chatty
            .sock
            .write_all(&[b'x'; 5000])
            .await
            .expect("bytes after the request");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(info(&mut c, &dj, id).await.listeners, 2, "still listening");
    }
    drop(chatty);
    wait_for_listeners(&mut c, &dj, id, 1).await;
    stop(&mut c, &dj, id).await;
    let mut stays = stays;
    assert!(
        stays.read_to_close(Duration::from_secs(10)).await,
        "the last listener's connection closes when the stream ends"
    );
    s.stop().await;
}

/// A private live stream refuses an unsigned, a tampered and an expired URL (403), and serves
/// its signed `audio_url`.
async fn private_live_needs_a_signed_url(direct: bool) {
    let s = server(direct, |_| {}).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, dj) = s.user("dj").await;
    let mut c = client(s.channel().await);
    let id = start(&mut c, &dj, live_request("pcm_s16le", 48_000, true))
        .await
        .stream_id;
    let p = producer(s.channel().await, &dj);
    send_tone(&p.tx, id, 0, 600, false).await;
    let sending = {
        let tx = p.tx.clone();
        tokio::spawn(async move { send_tone(&tx, id, 600, 3000, true).await })
    };
    let before = metrics(&s).await;
    let signed = info(&mut c, &dj, id).await.audio_url;
    let bare = format!("{}/live/{id}", s.http_url);
    assert!(
        signed.starts_with(&format!("{bare}?"))
            && signed.contains("exp=")
            && signed.contains("sig="),
        "a private live stream's audio_url is signed: {signed}"
    );
    let status = |url: String| async move {
        let mut r = http_get(&url, None).await;
        r.read_to_close(Duration::from_secs(5)).await;
        r.head.status
    };
    assert_eq!(status(bare.clone()).await, 403, "unsigned");
    let sig_at = signed.find("sig=").expect("sig") + 4;
    let mut tampered = signed.clone().into_bytes();
    tampered[sig_at] = if tampered[sig_at] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    assert_eq!(status(tampered).await, 403, "a tampered signature");
    let exp_at = signed.find("exp=").expect("exp");
    let expired = format!("{}exp=1&{}", &signed[..exp_at], &signed[sig_at - 4..]);
    assert_eq!(status(expired).await, 403, "an expired signature");

    let mut l = http_get(&signed, None).await;
    assert_eq!(l.head.status, 200, "the signed audio_url");
    assert_eq!(l.head.header("content-type"), Some("audio/ogg"));
    sending.await.expect("sent");
    stop(&mut c, &dj, id).await;
    assert!(
        l.read_to_close(Duration::from_secs(10)).await,
        "ends with the stream"
    );
    let (body, complete) = l.body();
    assert!(complete, "the response body ends properly");
    assert!(body.starts_with(b"OggS"), "Ogg from the first byte");
    one_opus_stream(&body, "signed listener", Seq::AfterHeaders);
    let f = dir.path().join("heard.opus");
    std::fs::write(&f, &body).expect("written");
    check_heard(&f, "signed listener", 2.0).await;
    let after = metrics(&s).await;
    let want = path_name(direct);
    assert_eq!(
        served(&after, "http", want) - served(&before, "http", want),
        1.0,
        "only the signed listener was served, by path={want}: {:?}",
        served_lines(&after)
    );
    drop(p.tx);
    let _ = p.call.await;
    s.stop().await;
}

/// `GET /live/{id}` of an unknown id, of a track and of an ended stream is 404; past the
/// listener cap it is 503.
async fn http_listener_refusals(direct: bool) {
    let s = server(direct, |c| c.live_max_listeners_per_stream = 1).await;
    let (_, dj) = s.user("dj").await;
    let mut c = client(s.channel().await);
    let status = |url: String| async move {
        let mut r = http_get(&url, None).await;
        r.read_to_close(Duration::from_secs(5)).await;
        r.head.status
    };
    assert_eq!(
        status(format!("{}/live/987654", s.http_url)).await,
        404,
        "unknown id"
    );
    let track = c
        .upload_audio(bearer(
            &dj,
            UploadAudioRequest {
                title: "not live".into(),
                file_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect("UploadAudio")
        .into_inner()
        .track_id;
    assert_eq!(
        status(format!("{}/live/{track}", s.http_url)).await,
        404,
        "a track is not a live stream"
    );
    let id = start(&mut c, &dj, live_request("pcm_s16le", 48_000, false))
        .await
        .stream_id;
    let url = format!("{}/live/{id}", s.http_url);
    let p = producer(s.channel().await, &dj);
    send_tone(&p.tx, id, 0, 500, false).await;
    let mut first = http_get(&url, None).await;
    assert_eq!(first.head.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status(url.clone()).await, 503, "past the per-stream cap");
    send_tone(&p.tx, id, 500, 1000, true).await;
    stop(&mut c, &dj, id).await;
    assert!(first.read_to_close(Duration::from_secs(10)).await);
    let (body, _) = first.body();
    one_opus_stream(&body, "the listener under the cap", Seq::AfterHeaders);
    assert_eq!(status(url).await, 404, "an ended stream");
    drop(p.tx);
    let _ = p.call.await;
    s.stop().await;
}

/// A gRPC-Web live listener (HTTP/1.1 on the gRPC port) hears the stream, served through hyper.
async fn grpc_web_live_listener(direct: bool) {
    let s = server(direct, |_| {}).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, dj) = s.user("dj").await;
    let (_, fan) = s.user("fan").await;
    let mut c = client(s.channel().await);
    let id = start(&mut c, &dj, live_request("pcm_s16le", 48_000, false))
        .await
        .stream_id;
    let p = producer(s.channel().await, &dj);
    send_tone(&p.tx, id, 0, 500, false).await;
    let before = metrics(&s).await;
    let addr = s.grpc_url.trim_start_matches("http://").to_string();
    let web = tokio::spawn(grpc_web_stream_audio(addr, fan.clone(), id));
    send_tone(&p.tx, id, 500, 3000, true).await;
    stop(&mut c, &dj, id).await;
    let (head, raw) = tokio::time::timeout(Duration::from_secs(15), web)
        .await
        .expect("the gRPC-Web call ends with the stream")
        .expect("gRPC-Web listener");
    assert_eq!(head.status, 200, "{head:?}");
    assert!(
        head.header("content-type")
            .is_some_and(|t| t.starts_with("application/grpc-web")),
        "{head:?}"
    );
    let payload = if head.chunked() {
        let (p, complete) = dechunk(&raw);
        assert!(complete, "the chunked body ends properly");
        p
    } else {
        raw
    };
    let (chunks, trailer) = grpc_web_frames(&payload);
    assert!(
        trailer.contains("grpc-status:0") || trailer.contains("grpc-status: 0"),
        "trailer {trailer:?}"
    );
    assert_eq!(
        chunks.first().map(|c| c.chunk_index),
        Some(0),
        "headers first"
    );
    let bytes = concat(&chunks);
    one_opus_stream(&bytes, "gRPC-Web listener", Seq::AfterHeaders);
    let f = dir.path().join("web.opus");
    std::fs::write(&f, &bytes).expect("written");
    check_heard(&f, "gRPC-Web listener", 2.0).await;
    let after = metrics(&s).await;
    assert_eq!(
        served(&after, "grpc", "hyper") - served(&before, "grpc", "hyper"),
        1.0,
        "the gRPC-Web listener is served through hyper: {:?}",
        served_lines(&after)
    );
    assert_eq!(
        served(&after, "grpc", "direct") - served(&before, "grpc", "direct"),
        0.0,
        "{:?}",
        served_lines(&after)
    );
    drop(p.tx);
    let _ = p.call.await;
    s.stop().await;
}

/// A live listener over TLS hears the stream; the metric says which path served it (hyper when
/// direct writes are off).
async fn tls_live_listener(direct: bool) {
    let certs = tempfile::tempdir().expect("temp dir");
    let (cert, key, made) = veza_tests::self_signed(certs.path());
    match made {
        Ok(o) if o.status.success() => {}
        other => {
            assert!(
                !veza_tests::require_services(),
                "openssl is needed to make a test certificate: {other:?}"
            );
            eprintln!("SKIPPED: openssl unavailable to make a test certificate");
            return;
        }
    }
    let s = server(direct, |c| c.tls = Some((cert.clone(), key.clone()))).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = s.grpc_url.rsplit(':').next().expect("a port").to_string();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(&cert).expect("the certificate"),
        ))
        .domain_name("localhost");
    let endpoint = Endpoint::from_shared(format!("https://localhost:{port}"))
        .expect("url")
        .tls_config(tls)
        .expect("TLS config");
    let channel = endpoint.connect().await.expect("connects over TLS");
    let dj = tls_user(&channel, "dj").await;
    let fan = tls_user(&channel, "fan").await;
    let mut c = client(channel.clone());
    let id = start(&mut c, &dj, live_request("pcm_s16le", 48_000, false))
        .await
        .stream_id;
    let p = producer(endpoint.connect().await.expect("connects"), &dj);
    send_tone(&p.tx, id, 0, 500, false).await;
    let before = metrics(&s).await;
    let mut lc = client(endpoint.connect().await.expect("connects"));
    let listening = grpc_listener(&mut lc, &fan, id).await;
    send_tone(&p.tx, id, 500, 3000, true).await;
    stop(&mut c, &dj, id).await;
    let (chunks, err, ended) = listening.await.expect("listener");
    assert!(ended && err.is_none(), "TLS listener ends OK: {err:?}");
    let bytes = concat(&chunks);
    one_opus_stream(&bytes, "TLS listener", Seq::AfterHeaders);
    let f = dir.path().join("tls.opus");
    std::fs::write(&f, &bytes).expect("written");
    check_heard(&f, "TLS listener", 2.0).await;
    let after = metrics(&s).await;
    let by = |path| served(&after, "grpc", path) - served(&before, "grpc", path);
    let (d, h) = (by("direct"), by("hyper"));
    eprintln!("live over TLS (live_direct = {direct}): served by direct {d}, hyper {h}");
    assert_eq!(
        d + h,
        1.0,
        "the TLS listener counts once under transport=\"grpc\": {:?}",
        served_lines(&after)
    );
    if !direct {
        assert_eq!(h, 1.0, "direct writes are off: hyper served it");
    }
    drop(p.tx);
    let _ = p.call.await;
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Server, gRPC and producers.

async fn server(direct: bool, adjust: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(Backend::Sqlite, |c| {
        c.live_direct = direct;
        c.live_chunk_ms = 100;
        adjust(c);
    })
    .await
    .expect("a server on SQLite")
}

fn path_name(direct: bool) -> &'static str {
    if direct { "direct" } else { "hyper" }
}

fn client(ch: Channel) -> Client {
    StreamServiceClient::new(ch).max_decoding_message_size(8 << 20)
}

fn live_request(codec: &str, rate: i32, private: bool) -> StartStreamRequest {
    StartStreamRequest {
        title: "icecast".into(),
        sample_rate: rate,
        channels: 2,
        codec: codec.into(),
        is_private: private,
        ..Default::default()
    }
}

async fn start(c: &mut Client, token: &str, req: StartStreamRequest) -> StartStreamResponse {
    let r = c
        .start_stream(bearer(token, req))
        .await
        .expect("StartStream")
        .into_inner();
    assert!(r.success && r.stream_id > 0, "{r:?}");
    r
}

async fn stop(c: &mut Client, token: &str, id: i64) {
    c.stop_stream(bearer(token, StopStreamRequest { stream_id: id }))
        .await
        .expect("StopStream");
}

async fn info(c: &mut Client, token: &str, id: i64) -> GetStreamInfoResponse {
    c.get_stream_info(bearer(token, GetStreamInfoRequest { stream_id: id }))
        .await
        .expect("GetStreamInfo")
        .into_inner()
}

/// Registers `name` over `ch` and logs in: the access token.
async fn tls_user(ch: &Channel, name: &str) -> String {
    let mut a = AuthServiceClient::new(ch.clone());
    let email = format!("{name}@example.com");
    let password = "correct horse battery".to_string();
    a.register(RegisterRequest {
        email: email.clone(),
        password: password.clone(),
        ..Default::default()
    })
    .await
    .expect("register");
    a.authenticate(AuthenticateRequest {
        email,
        password,
        ..Default::default()
    })
    .await
    .expect("login")
    .into_inner()
    .access_token
}

/// Waits (up to 6 s) for StreamAnalytics of `id` to count `want` listeners.
async fn wait_for_listeners(c: &mut Client, token: &str, id: i64, want: i32) {
    let mut feed = c
        .stream_analytics(bearer(
            token,
            StreamAnalyticsRequest {
                stream_id: id,
                interval_ms: 250,
            },
        ))
        .await
        .expect("StreamAnalytics")
        .into_inner();
    let mut seen = Vec::new();
    let got = tokio::time::timeout(Duration::from_secs(6), async {
        while let Some(d) = feed.next().await {
            let d = d.expect("an analytics sample");
            seen.push(d.listeners);
            if d.listeners == want {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(got, Ok(true)),
        "StreamAnalytics never counted {want} listeners: {seen:?}"
    );
}

/// A `StreamAudio` listener of `id`, read until it ends (or 60 s): its chunks, its error,
/// whether it ended.
async fn grpc_listener(
    c: &mut Client,
    token: &str,
    id: i64,
) -> JoinHandle<(Vec<AudioChunk>, Option<Status>, bool)> {
    let mut stream = c
        .stream_audio(bearer(
            token,
            StreamAudioRequest {
                track_id: id,
                ..Default::default()
            },
        ))
        .await
        .expect("StreamAudio")
        .into_inner();
    tokio::spawn(async move {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => return (out, None, false),
                Ok(None) => return (out, None, true),
                Ok(Some(Ok(c))) => out.push(c),
                Ok(Some(Err(e))) => return (out, Some(e), true),
            }
        }
    })
}

fn concat(chunks: &[AudioChunk]) -> Vec<u8> {
    chunks
        .iter()
        .flat_map(|c| c.audio_data.iter().copied())
        .collect()
}

/// An open `UploadAudioChunks` call.
struct Producer {
    tx: mpsc::Sender<AudioChunk>,
    call: JoinHandle<Result<UploadAudioResponse, Status>>,
}

fn producer(ch: Channel, token: &str) -> Producer {
    let (tx, rx) = mpsc::channel(16);
    let token = token.to_string();
    let call = tokio::spawn(async move {
        client(ch)
            .upload_audio_chunks(bearer(
                &token,
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .await
            .map(|r| r.into_inner())
    });
    Producer { tx, call }
}

/// Stereo pcm_s16le of the tone from `from_ms` for `ms`.
fn pcm_tone(from_ms: u64, ms: u64) -> Vec<u8> {
    let first = from_ms * u64::from(RATE) / 1000;
    let n = ms * u64::from(RATE) / 1000;
    (first..first + n)
        .flat_map(|i| {
            let t = i as f64 / f64::from(RATE);
            let v = ((t * TONE_HZ * std::f64::consts::TAU).sin() * 12_000.0) as i16;
            let b = v.to_le_bytes();
            [b[0], b[1], b[0], b[1]]
        })
        .collect()
}

/// Sends `[from_ms, from_ms + ms)` of the tone in 100 ms chunks, paced to real time when `paced`.
async fn send_tone(tx: &mpsc::Sender<AudioChunk>, id: i64, from_ms: u64, ms: u64, paced: bool) {
    let t0 = Instant::now();
    for k in 0..ms / 100 {
        if paced {
            tokio::time::sleep_until(t0 + Duration::from_millis(k * 100)).await;
        }
        let at = from_ms + k * 100;
        let chunk = AudioChunk {
            stream_id: id,
            chunk_index: (at / 100) as i32,
            audio_data: pcm_tone(at, 100).into(),
            sample_rate: RATE as i32,
            channels: 2,
            codec: "pcm_s16le".into(),
            timestamp: None,
        };
        tx.send(chunk).await.expect("producer open");
    }
}

/// `StreamAudio` of `id` as gRPC-Web over HTTP/1.1 on `addr`, read until the server closes:
/// the response head and the body as received.
async fn grpc_web_stream_audio(addr: String, token: String, id: i64) -> (Head, Vec<u8>) {
    let msg = StreamAudioRequest {
        track_id: id,
        ..Default::default()
    }
    .encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let mut sock = TcpStream::connect(&addr).await.expect("connects");
    let head = format!(
        "POST /veza.stream.StreamService/StreamAudio HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.expect("head sent");
    sock.write_all(&body).await.expect("body sent");
    let (head, rest) = read_head(&mut sock).await.expect("a response head");
    let mut r = Response {
        sock,
        head,
        raw: rest,
        closed: false,
    };
    r.read_to_close(Duration::from_secs(60)).await;
    (r.head, r.raw)
}

/// The messages and the trailer text of a gRPC-Web body.
fn grpc_web_frames(mut payload: &[u8]) -> (Vec<AudioChunk>, String) {
    let mut chunks = Vec::new();
    let mut trailer = String::new();
    while payload.len() >= 5 {
        let flags = payload[0];
        let len = u32::from_be_bytes(payload[1..5].try_into().expect("4 bytes")) as usize;
        assert!(payload.len() >= 5 + len, "a whole gRPC-Web frame");
        let data = &payload[5..5 + len];
        if flags & 0x80 != 0 {
            trailer.push_str(&String::from_utf8_lossy(data));
        } else {
            chunks.push(AudioChunk::decode(data).expect("an AudioChunk"));
        }
        payload = &payload[5 + len..];
    }
    assert!(payload.is_empty(), "no stray bytes after the frames");
    (chunks, trailer)
}

// ---------------------------------------------------------------------------------------------
// Media: test files, ffprobe and decoding.

/// ffmpeg's output of the lavfi source `input` with `args`.
fn ffmpeg_make(input: &str, args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.ogg");
    let o = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", input])
        .args(args)
        .arg(&out)
        .output()
        .expect("ffmpeg is installed (./dev test installs it)");
    assert!(
        o.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(&out).expect("ffmpeg's output")
}

/// 3 s of the tone, stereo Ogg Opus at 64 kbps in 100 ms pages.
fn tone_ogg() -> &'static [u8] {
    static TONE: OnceLock<Vec<u8>> = OnceLock::new();
    TONE.get_or_init(|| {
        ffmpeg_make(
            &format!("sine=frequency={TONE_HZ}:sample_rate=48000"),
            &[
                "-t",
                "3",
                "-ac",
                "2",
                "-c:a",
                "libopus",
                "-b:a",
                "64k",
                "-page_duration",
                "100000",
                "-f",
                "ogg",
            ],
        )
    })
}

/// 240 s of stereo noise at a constant 510 kbps in 100 ms pages (about 15 MB): 10 s encoded,
/// repeated.
fn noise_ogg() -> &'static [u8] {
    static NOISE: OnceLock<Vec<u8>> = OnceLock::new();
    NOISE.get_or_init(|| {
        let ten = ffmpeg_make(
            "anoisesrc=r=48000:a=0.5:d=10",
            &[
                "-ac",
                "2",
                "-c:a",
                "libopus",
                "-b:a",
                "510k",
                "-vbr",
                "off",
                "-compression_level",
                "0",
                "-page_duration",
                "100000",
                "-f",
                "ogg",
            ],
        );
        repeat_ogg(&ten, 24)
    })
}

/// `src`'s audio pages `times` over, as one Ogg stream (granules, sequence numbers and CRCs
/// rewritten, EOS on the last page only).
fn repeat_ogg(src: &[u8], times: u64) -> Vec<u8> {
    let pages = parse_ogg(src, false).expect("ffmpeg's Ogg");
    let (head, audio) = pages.split_at(2);
    let span = audio.last().expect("audio pages").granule;
    let mut out = Vec::new();
    for p in head {
        out.extend_from_slice(&src[p.at..p.at + p.len]);
    }
    let mut seq = 2u32;
    for k in 0..times {
        for (i, p) in audio.iter().enumerate() {
            let mut page = src[p.at..p.at + p.len].to_vec();
            let last = k + 1 == times && i + 1 == audio.len();
            page[5] = if last { p.flags | EOS } else { p.flags & !EOS };
            if p.granule != u64::MAX {
                page[6..14].copy_from_slice(&(p.granule + k * span).to_le_bytes());
            }
            page[18..22].copy_from_slice(&seq.to_le_bytes());
            let crc = ogg_crc(&page);
            page[22..26].copy_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&page);
            seq += 1;
        }
    }
    out
}

/// What ffprobe says of a file's first audio stream.
#[derive(Debug)]
struct Probe {
    codec: String,
    sample_rate: u32,
    channels: u64,
    duration: f64,
}

async fn ffprobe(file: &Path) -> Probe {
    let o = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-show_entries"])
        .args([
            "stream=codec_name,sample_rate,channels:format=duration",
            "-of",
            "json",
        ])
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("ffprobe is installed (./dev test installs it)");
    assert!(
        o.status.success(),
        "ffprobe {}: {}",
        file.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("ffprobe's JSON");
    let st = &v["streams"][0];
    Probe {
        codec: st["codec_name"].as_str().unwrap_or_default().to_string(),
        sample_rate: st["sample_rate"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0),
        channels: st["channels"].as_u64().unwrap_or(0),
        duration: v["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0.0),
    }
}

/// `file` decoded by ffmpeg to mono 48 kHz samples.
async fn decode(file: &Path) -> Vec<i16> {
    let o = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(file)
        .args(["-f", "s16le", "-ac", "1", "-ar", "48000", "-"])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("ffmpeg is installed (./dev test installs it)");
    assert!(
        o.status.success(),
        "ffmpeg decodes {}: {}",
        file.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The dominant frequency over the middle second of `pcm` (48 kHz), by zero crossings.
fn tone_hz(pcm: &[i16]) -> f64 {
    let (from, to) = if pcm.len() > 2 * 48_000 {
        (pcm.len() / 2 - 24_000, pcm.len() / 2 + 24_000)
    } else {
        (pcm.len() / 10, pcm.len())
    };
    let w = &pcm[from..to];
    let crossings = w.windows(2).filter(|p| (p[0] < 0) != (p[1] < 0)).count();
    crossings as f64 / 2.0 / (w.len() as f64 / 48_000.0)
}

/// ffprobe says Opus at 48 kHz lasting more than `min_s`, and ffmpeg decodes more than `min_s`
/// of the 440 Hz tone: the decoded seconds.
async fn check_heard(file: &Path, what: &str, min_s: f64) -> f64 {
    let p = ffprobe(file).await;
    assert_eq!(p.codec, "opus", "{what}: {p:?}");
    assert_eq!(p.sample_rate, 48_000, "{what}: {p:?}");
    assert_eq!(p.channels, 2, "{what}: the source's channels: {p:?}");
    assert!(p.duration > min_s, "{what}: {p:?}");
    let pcm = decode(file).await;
    let secs = pcm.len() as f64 / 48_000.0;
    assert!(secs > min_s, "{what}: {secs:.2} s decoded");
    let hz = tone_hz(&pcm);
    assert!(
        (hz - TONE_HZ).abs() < TONE_HZ * 0.03,
        "{what}: the tone is {hz:.1} Hz, the source's {TONE_HZ} Hz"
    );
    secs
}

// ---------------------------------------------------------------------------------------------
// Ogg pages.

const BOS: u8 = 0x02;
const EOS: u8 = 0x04;

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04c1_1db7
            } else {
                r << 1
            };
            k += 1;
        }
        t[i] = r;
        i += 1;
    }
    t
}

static CRC: [u32; 256] = crc_table();

/// The Ogg CRC of a whole page (its CRC field read as zero).
fn ogg_crc(page: &[u8]) -> u32 {
    let mut crc = 0u32;
    for (i, &b) in page.iter().enumerate() {
        let b = if (22..26).contains(&i) { 0 } else { b };
        crc = (crc << 8) ^ CRC[usize::from((crc >> 24) as u8 ^ b)];
    }
    crc
}

/// One Ogg page: where it is, its header fields and its body.
#[derive(Debug, Clone)]
struct Page {
    at: usize,
    len: usize,
    flags: u8,
    granule: u64,
    serial: u32,
    seq: u32,
    body: Range<usize>,
}

/// The pages of `bytes`, each starting where the previous one ended, from the first byte, with
/// valid CRCs. With `partial_tail`, a truncated last page is left out instead of an error.
fn parse_ogg(bytes: &[u8], partial_tail: bool) -> Result<Vec<Page>, String> {
    let mut pages = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let n = pages.len();
        if rest.len() >= 4 && &rest[..4] != b"OggS" {
            return Err(format!("no capture pattern at byte {at} (page {n})"));
        }
        let truncated = rest.len() < 27 || rest.len() < 27 + usize::from(rest[26]) || {
            let segs = usize::from(rest[26]);
            let body: usize = rest[27..27 + segs].iter().map(|&s| usize::from(s)).sum();
            rest.len() < 27 + segs + body
        };
        if truncated {
            if partial_tail {
                break;
            }
            return Err(format!(
                "page {n} at byte {at} truncated ({} bytes left)",
                rest.len()
            ));
        }
        if rest[4] != 0 {
            return Err(format!("page {n}: version {}", rest[4]));
        }
        let segs = usize::from(rest[26]);
        let body: usize = rest[27..27 + segs].iter().map(|&s| usize::from(s)).sum();
        let len = 27 + segs + body;
        let page = &rest[..len];
        let stored = u32::from_le_bytes(page[22..26].try_into().expect("4 bytes"));
        if ogg_crc(page) != stored {
            return Err(format!("page {n} at byte {at}: bad CRC"));
        }
        pages.push(Page {
            at,
            len,
            flags: page[5],
            granule: u64::from_le_bytes(page[6..14].try_into().expect("8 bytes")),
            serial: u32::from_le_bytes(page[14..18].try_into().expect("4 bytes")),
            seq: u32::from_le_bytes(page[18..22].try_into().expect("4 bytes")),
            body: at + 27 + segs..at + len,
        });
        at += len;
    }
    Ok(pages)
}

/// Which page sequence numbers must follow each other without a gap.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seq {
    /// All of them: the listener heard everything from the start.
    Whole,
    /// The audio pages after the two header pages (the listener joined mid-stream).
    AfterHeaders,
    /// None (pages may have been skipped).
    Any,
}

/// Asserts that `bytes` are one logical Ogg Opus stream from the first byte: whole pages with
/// valid CRCs, OpusHead on the only BOS page (the first), OpusTags next, one serial number, EOS
/// at most on the last page, non-decreasing granule positions, and sequence numbers as `seq`
/// says. Returns the pages.
fn one_opus_stream(bytes: &[u8], what: &str, seq: Seq) -> Vec<Page> {
    let pages = parse_ogg(bytes, false)
        .unwrap_or_else(|e| panic!("{what}: not whole Ogg pages from the first byte: {e}"));
    assert!(pages.len() >= 3, "{what}: {} pages", pages.len());
    assert!(
        bytes[pages[0].body.clone()].starts_with(b"OpusHead"),
        "{what}: OpusHead first"
    );
    assert!(
        bytes[pages[1].body.clone()].starts_with(b"OpusTags"),
        "{what}: OpusTags second"
    );
    let bos: Vec<usize> = (0..pages.len())
        .filter(|&i| pages[i].flags & BOS != 0)
        .collect();
    assert_eq!(bos, vec![0], "{what}: one BOS page, the first");
    let serials: BTreeSet<u32> = pages.iter().map(|p| p.serial).collect();
    assert_eq!(serials.len(), 1, "{what}: one serial number: {serials:?}");
    let eos: Vec<usize> = (0..pages.len())
        .filter(|&i| pages[i].flags & EOS != 0)
        .collect();
    assert!(
        eos.is_empty() || eos == vec![pages.len() - 1],
        "{what}: EOS only on the last page: {eos:?} of {}",
        pages.len()
    );
    let timed: Vec<(u32, u64)> = pages[2..]
        .iter()
        .filter(|p| p.granule != u64::MAX)
        .map(|p| (p.seq, p.granule))
        .collect();
    assert!(
        timed.windows(2).all(|w| w[1].1 >= w[0].1),
        "{what}: granule positions never go back: (seq, granule) {timed:?}"
    );
    let from = match seq {
        Seq::Whole => 0,
        Seq::AfterHeaders => 2,
        Seq::Any => pages.len(),
    };
    let seqs: Vec<u32> = pages.iter().map(|p| p.seq).collect();
    assert!(
        pages[from.min(pages.len())..]
            .windows(2)
            .all(|w| w[1].seq == w[0].seq + 1),
        "{what}: page sequence numbers without a gap: {seqs:?}"
    );
    pages
}

// ---------------------------------------------------------------------------------------------
// HTTP over raw TCP: listeners, sources, /metrics.

/// A response head: the status and the headers (names lower-cased).
#[derive(Debug, Default, Clone)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(raw: &[u8]) -> Head {
    let text = String::from_utf8_lossy(raw);
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Head { status, headers }
}

/// Reads a response head through its blank line: the head and the bytes read past it.
async fn read_head(sock: &mut TcpStream) -> Result<(Head, Vec<u8>), String> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            return Ok((parse_head(&buf[..end]), buf[end + 4..].to_vec()));
        }
        match sock.read(&mut tmp).await {
            Ok(0) => {
                return Err(format!(
                    "closed before a response head: {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) => return Err(format!("reading a response head: {e}")),
        }
    }
}

/// `(addr, path and query)` of an `http://` URL.
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    match rest.find('/') {
        Some(at) => (rest[..at].to_string(), rest[at..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    }
}

/// An HTTP response being read: its head and the body bytes as received (chunked or not).
struct Response {
    sock: TcpStream,
    head: Head,
    raw: Vec<u8>,
    closed: bool,
}

impl Response {
    /// Reads until the server closes the connection or `limit` passes: whether it closed.
    async fn read_to_close(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 64 << 10];
        while !self.closed {
            match tokio::time::timeout_at(deadline, self.sock.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
                Ok(Ok(n)) => self.raw.extend_from_slice(&buf[..n]),
            }
        }
        true
    }

    /// Reads until nothing arrives for `idle`, or the server closes.
    async fn read_until_idle(&mut self, idle: Duration) {
        let mut buf = vec![0u8; 64 << 10];
        while !self.closed {
            match tokio::time::timeout(idle, self.sock.read(&mut buf)).await {
                Err(_) => return,
                Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
                Ok(Ok(n)) => self.raw.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// The body so far (de-chunked) and whether it ended properly (the last chunk, or the
    /// connection closing when not chunked).
    fn body(&self) -> (Vec<u8>, bool) {
        if self.head.chunked() {
            dechunk(&self.raw)
        } else {
            (self.raw.clone(), self.closed)
        }
    }
}

/// The data of a chunked body and whether its last chunk arrived.
fn dechunk(raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut rest = raw;
    loop {
        let Some(eol) = find(rest, b"\r\n") else {
            return (out, false);
        };
        let line = String::from_utf8_lossy(&rest[..eol]);
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .unwrap_or_else(|_| panic!("a chunk size line, not {line:?}"));
        if size == 0 {
            return (out, true);
        }
        let data = &rest[eol + 2..];
        if data.len() < size + 2 {
            return (out, false);
        }
        assert_eq!(&data[size..size + 2], b"\r\n", "CRLF after a chunk");
        out.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
}

/// Sends `GET url` over a new connection (with a receive buffer of `rcvbuf` bytes when given)
/// and reads the response head.
async fn http_get(url: &str, rcvbuf: Option<u32>) -> Response {
    let (addr, path) = split_url(url);
    let mut sock = match rcvbuf {
        None => TcpStream::connect(&addr).await.expect("connects"),
        Some(n) => {
            let s = tokio::net::TcpSocket::new_v4().expect("a socket");
            s.set_recv_buffer_size(n).expect("SO_RCVBUF");
            s.connect(addr.parse().expect("an address"))
                .await
                .expect("connects")
        }
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: veza-tests\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).await.expect("request sent");
    let (head, raw) = tokio::time::timeout(Duration::from_secs(30), read_head(&mut sock))
        .await
        .expect("a response head in 30 s")
        .expect("a response head");
    Response {
        sock,
        head,
        raw,
        closed: false,
    }
}

/// A listener of `url` read until the server closes (or `limit` passes).
async fn listen_http(url: String, limit: Duration) -> Response {
    let mut r = http_get(&url, None).await;
    r.read_to_close(limit).await;
    r
}

/// The `/metrics` text.
async fn metrics(s: &TestServer) -> String {
    let mut r = http_get(&format!("{}/metrics", s.http_url), None).await;
    assert_eq!(r.head.status, 200, "/metrics");
    assert!(
        r.read_to_close(Duration::from_secs(10)).await,
        "/metrics ends"
    );
    String::from_utf8(r.body().0).expect("utf-8 metrics")
}

/// The sum of the samples of `name` whose labels include `labels`.
fn sample_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(split) = line.find(['{', ' ']) else {
            continue;
        };
        let (series, rest) = line.split_at(split);
        if series != name {
            continue;
        }
        let (set, rest) = match rest.strip_prefix('{') {
            Some(r) => {
                let end = r.find('}').expect("closing brace");
                let set: Vec<(String, String)> = r[..end]
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                    .collect();
                (set, &r[end + 1..])
            }
            None => (Vec::new(), rest),
        };
        let value: f64 = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("a value in {line:?}"));
        if labels
            .iter()
            .all(|(k, v)| set.iter().any(|(sk, sv)| sk == k && sv == v))
        {
            sum += value;
        }
    }
    sum
}

/// Listeners served over `transport` by `path`.
fn served(text: &str, transport: &str, path: &str) -> f64 {
    sample_sum(
        text,
        "veza_live_served_total",
        &[("transport", transport), ("path", path)],
    )
}

fn served_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("veza_live_served_total"))
        .collect()
}

/// `Basic` credentials.
fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// How a source's body is delimited.
#[derive(Clone, Copy)]
enum Framing {
    Length(usize),
    Chunked,
    /// Until the source half-closes, as ffmpeg's `icecast://` sends.
    UntilEof,
}

/// The end of a source request: the last status, every status line, and all the server said.
#[derive(Debug)]
struct Reply {
    status: u16,
    statuses: Vec<u16>,
    text: String,
}

impl Reply {
    fn of(raw: &[u8]) -> Reply {
        let text = String::from_utf8_lossy(raw).to_string();
        let statuses: Vec<u16> = text
            .split("\r\n")
            .filter(|l| l.starts_with("HTTP/"))
            .filter_map(|l| l.split(' ').nth(1)?.parse().ok())
            .collect();
        Reply {
            status: statuses.last().copied().unwrap_or(0),
            statuses,
            text,
        }
    }
}

/// An Icecast source connection whose head is sent.
struct Source {
    sock: TcpStream,
    framing: Framing,
}

/// Opens an Icecast source request (`audio/ogg`) for `url` with `method` (`PUT` over HTTP/1.1,
/// `SOURCE` over HTTP/1.0) and the `Authorization` value `auth`. With `expect`, asks for
/// `100 Continue` and waits for it: a refusal is the `Err`.
async fn open_source(
    url: &str,
    method: &str,
    auth: Option<&str>,
    framing: Framing,
    expect: bool,
) -> Result<Source, Reply> {
    let (addr, path) = split_url(url);
    let mut sock = TcpStream::connect(&addr).await.expect("connects");
    let version = if method == "SOURCE" {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    let mut head = format!(
        "{method} {path} {version}\r\nHost: {addr}\r\nUser-Agent: veza-tests\r\nContent-Type: audio/ogg\r\nIce-Name: tests\r\n"
    );
    if let Some(a) = auth {
        head += &format!("Authorization: {a}\r\n");
    }
    match framing {
        Framing::Length(n) => head += &format!("Content-Length: {n}\r\n"),
        Framing::Chunked => head += "Transfer-Encoding: chunked\r\n",
        Framing::UntilEof => {}
    }
    if expect {
        head += "Expect: 100-continue\r\n";
    }
    head += "\r\n";
    sock.write_all(head.as_bytes()).await.expect("head sent");
    if expect {
        let (h, rest) = tokio::time::timeout(Duration::from_secs(10), read_head(&mut sock))
            .await
            .expect("an answer to Expect: 100-continue in 10 s")
            .expect("an answer to Expect: 100-continue");
        if h.status != 100 {
            let mut raw = format!("HTTP/1.1 {} (head)\r\n", h.status).into_bytes();
            raw.extend_from_slice(&rest);
            let mut buf = [0u8; 4096];
            while let Ok(Ok(n @ 1..)) =
                tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await
            {
                raw.extend_from_slice(&buf[..n]);
            }
            return Err(Reply::of(&raw));
        }
        assert!(
            rest.is_empty(),
            "nothing after 100 Continue before the body"
        );
    }
    Ok(Source { sock, framing })
}

impl Source {
    async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        if matches!(self.framing, Framing::Chunked) {
            self.sock
                .write_all(format!("{:x}\r\n", data.len()).as_bytes())
                .await?;
            self.sock.write_all(data).await?;
            self.sock.write_all(b"\r\n").await
        } else {
            self.sock.write_all(data).await
        }
    }

    /// Sends `pages` of `ogg` one by one, each when its granule position falls due in real time
    /// counted from the first audio page.
    async fn send_paced(&mut self, ogg: &[u8], pages: &[Page]) -> std::io::Result<()> {
        let start = Instant::now();
        let timed = |p: &Page| p.granule != u64::MAX && p.granule > 0;
        let first = pages.iter().find(|p| timed(p)).map(|p| p.granule);
        for p in pages {
            if let Some(g0) = first.filter(|_| timed(p)) {
                let due = (p.granule - g0) * 1_000_000 / u64::from(RATE);
                tokio::time::sleep_until(start + Duration::from_micros(due)).await;
            }
            self.send(&ogg[p.at..p.at + p.len]).await?;
        }
        Ok(())
    }

    /// Ends the body (the last chunk, or half-closing when it runs until EOF) and reads the
    /// server's answer until it closes.
    async fn finish(mut self) -> Reply {
        match self.framing {
            Framing::Chunked => {
                let _ = self.sock.write_all(b"0\r\n\r\n").await;
            }
            Framing::UntilEof => {
                let _ = self.sock.shutdown().await;
            }
            Framing::Length(_) => {}
        }
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, self.sock.read(&mut buf)).await {
                Err(_) => panic!(
                    "the server did not close the source's connection in 20 s: {:?}",
                    String::from_utf8_lossy(&raw)
                ),
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            }
        }
        Reply::of(&raw)
    }
}

/// A whole source request with `body`.
async fn source_request(
    url: &str,
    method: &str,
    auth: Option<&str>,
    framing: Framing,
    expect: bool,
    body: &[u8],
) -> Reply {
    match open_source(url, method, auth, framing, expect).await {
        Err(r) => r,
        Ok(mut src) => {
            let _ = src.send(body).await;
            src.finish().await
        }
    }
}

/// Runs curl with `args`: its stdout, whether it exited 0, its stderr.
fn curl(args: &[&str]) -> JoinHandle<(String, bool, String)> {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tokio::spawn(async move {
        let o = cmd.output().await.expect("curl is installed");
        (
            String::from_utf8_lossy(&o.stdout).to_string(),
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    })
}
