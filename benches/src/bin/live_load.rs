//! Live load tool (loopback only), one client for both servers so the figures compare:
//!
//! - `live_load veza URL PID LISTENERS CONNECTIONS SECONDS`: logs in as the demo user of
//!   `veza serve --demo`, starts a live stream, publishes a 48 kHz stereo tone as 128 kbps Opus
//!   packets at real-time pace (passed through, as Icecast passes pages through), and opens LISTENERS `StreamAudio` calls spread over CONNECTIONS HTTP/2
//!   connections.
//! - `live_load icecast URL PID LISTENERS SECONDS`: LISTENERS plain HTTP GETs of an Icecast mount
//!   (one TCP connection each), fed by someone else (e.g. `ffmpeg -re … icecast://…`). Veza's
//!   `GET /live/{id}` is measured the same way.
//! - `live_load start URL`: logs in as the demo user, starts an Opus 48 kHz stereo live stream
//!   and prints `ID KEY`, for an Icecast source (`icecast://source:KEY@…/live/ID`).
//!
//! Both print, over the steady part of the run (after every listener is connected): the server
//! process PID's CPU (% of one core) and RSS, each listener's received rate against real time
//! (p1/p50), gaps and skip-aheads, and (Veza) producer → listener latency p50/p99.

use std::{
    net::ToSocketAddrs,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use prost::Message;
use tokio::io::AsyncReadExt;
use veza_benches::authed;
use veza_proto::{
    auth::{AuthenticateRequest, auth_service_client::AuthServiceClient},
    stream::{
        AudioChunk, StartStreamRequest, StopStreamRequest, StreamAudioRequest,
        stream_service_client::StreamServiceClient,
    },
};

const MAX_LISTENERS: usize = 20_000;
const MAX_SECONDS: u64 = 600;
const WARMUP: Duration = Duration::from_secs(3);
/// Audio per chunk the producer sends: one 20 ms Opus packet, like an Ogg Opus source.
const PRODUCER_CHUNK_MS: u64 = 20;
/// Audio the producer sends at once, by default 100 ms; `LIVE_LOAD_BATCH_MS` sets it (whole
/// packets, up to 1 s) to match a source that writes one page per chunk duration, as ffmpeg
/// writes Icecast a page at a time. Each batch leaves when its last packet would have.
fn producer_batch() -> u64 {
    std::env::var("LIVE_LOAD_BATCH_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(5, |ms| (ms / PRODUCER_CHUNK_MS).clamp(1, 50))
}
/// Icecast accepts connections slowly (short listen queue): connect this many at a time.
const CONNECTING_AT_ONCE: usize = 32;

/// What one listener saw during the measured window.
#[derive(Default, Clone)]
struct Seen {
    media_ms: u64,
    bytes: u64,
    gaps: u64,
    latencies_ms: Vec<u32>,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        match args.first().map(String::as_str) {
            Some("veza") if args.len() == 6 => {
                let n = bounded(&args[3], MAX_LISTENERS)?;
                let conns = bounded(&args[4], n)?.max(1);
                let secs = bounded(&args[5], MAX_SECONDS as usize)? as u64;
                veza(&args[1], args[2].parse()?, n, conns, secs).await
            }
            Some("start") if args.len() == 2 => {
                let (id, key) = start(&args[1]).await?;
                println!("{id} {key}");
                Ok(())
            }
            Some("icecast") if args.len() == 5 => {
                let n = bounded(&args[3], MAX_LISTENERS)?;
                let secs = bounded(&args[4], MAX_SECONDS as usize)? as u64;
                icecast(&args[1], args[2].parse()?, n, secs).await
            }
            _ => anyhow::bail!(
                "usage: live_load veza URL PID LISTENERS CONNECTIONS SECONDS | live_load icecast URL PID LISTENERS SECONDS | live_load start URL"
            ),
        }
    })
}

fn bounded(arg: &str, max: usize) -> anyhow::Result<usize> {
    let v: usize = arg.parse()?;
    anyhow::ensure!((1..=max).contains(&v), "{arg} is outside 1–{max}");
    Ok(v)
}

/// Refuses anything but loopback.
fn loopback(url: &str) -> anyhow::Result<String> {
    let hostport = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let addr = hostport
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{url}: no address"))?;
    anyhow::ensure!(addr.ip().is_loopback(), "{url}: loopback only");
    Ok(hostport)
}

/// The demo user's access token.
async fn login(url: &str) -> anyhow::Result<String> {
    let mut auth = AuthServiceClient::connect(url.to_string()).await?;
    Ok(auth
        .authenticate(AuthenticateRequest {
            email: "user@veza.app".into(),
            password: "password123".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .access_token)
}

/// Starts an Opus 48 kHz stereo live stream; returns its id and Icecast source key.
async fn start_stream(
    control: &mut StreamServiceClient<tonic::transport::Channel>,
    token: &str,
) -> anyhow::Result<(i64, String)> {
    let r = control
        .start_stream(authed(
            token,
            StartStreamRequest {
                title: "live_load".into(),
                sample_rate: 48_000,
                channels: 2,
                codec: "opus".into(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    Ok((r.stream_id, r.stream_key))
}

/// `live_load start`: a stream for an Icecast source to push to.
async fn start(url: &str) -> anyhow::Result<(i64, String)> {
    loopback(url)?;
    let token = login(url).await?;
    let mut control = StreamServiceClient::connect(url.to_string()).await?;
    start_stream(&mut control, &token).await
}

async fn veza(url: &str, pid: u32, n: usize, conns: usize, secs: u64) -> anyhow::Result<()> {
    let hostport = loopback(url)?;
    let token = login(url).await?;
    let control_channel = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect()
        .await?;
    let mut control = StreamServiceClient::new(control_channel.clone());
    let (id, _) = start_stream(&mut control, &token).await?;
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = tokio::spawn(produce(
        control_channel.clone(),
        token.clone(),
        id,
        stop.clone(),
        t0,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The baseline is the server already carrying the stream, as Icecast's is the server with
    // its source connected: what listeners add is measured from here.
    let rss0 = rss_kb(pid)?;
    // Listeners speak HTTP/2 directly (`h2`), so the client stays light enough to keep up.
    let mut conns_h2 = Vec::with_capacity(conns);
    for _ in 0..conns {
        conns_h2.push(h2_connect(&hostport).await?);
    }
    let window: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let settled = Arc::new(AtomicUsize::new(0));
    let request = grpc_frame(&StreamAudioRequest {
        track_id: id,
        ..Default::default()
    });
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let h2 = conns_h2[i % conns].clone();
        let (token, window, settled) = (token.clone(), window.clone(), settled.clone());
        let (hostport, request) = (hostport.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let opened = h2_stream_audio(h2, &hostport, &token, request).await;
            settled.fetch_add(1, Ordering::SeqCst);
            let mut body = opened?;
            let mut tracker = Tracker::new(t0, window);
            let mut buf = bytes::BytesMut::new();
            while let Some(data) = body.data().await {
                let data = data?;
                let _ = body.flow_control().release_capacity(data.len());
                buf.extend_from_slice(&data);
                while let Some(msg) = next_message(&mut buf) {
                    tracker.on_chunk(&AudioChunk::decode(msg)?);
                }
            }
            anyhow::Ok(tracker.seen)
        }));
    }
    // Every listener connected (or failed): start the window after a warm-up.
    all_settled(&settled, n).await;
    let (wall, ticks, rss) = measure(pid, &window, secs).await?;
    control
        .stop_stream(authed(&token, StopStreamRequest { stream_id: id }))
        .await?;
    stop.store(true, Ordering::SeqCst);
    let _ = producer.await;
    let mut seen = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => seen.push(s),
            _ => failed += 1,
        }
    }
    report("veza", n, failed, &seen, wall, ticks, (rss0, rss));
    drop(conns_h2);
    Ok(())
}

/// What one listener has seen, counted only inside the measuring window.
struct Tracker {
    t0: Instant,
    window: Arc<Mutex<Option<Instant>>>,
    last_index: i32,
    seen: Seen,
}

impl Tracker {
    fn new(t0: Instant, window: Arc<Mutex<Option<Instant>>>) -> Self {
        Tracker {
            t0,
            window,
            last_index: 0,
            seen: Seen::default(),
        }
    }

    fn on_chunk(&mut self, m: &AudioChunk) {
        let open = self.window.lock().map(|w| *w).unwrap_or(None);
        let counting = open.is_some_and(|start| Instant::now() >= start);
        if m.chunk_index == 0 {
            return;
        }
        if counting {
            if self.last_index > 0 && m.chunk_index > self.last_index + 1 {
                self.seen.gaps += 1;
            }
            let ts = m
                .timestamp
                .map_or(0, |t| t.seconds as u64 * 1000 + t.nanos as u64 / 1_000_000);
            // The producer sent the chunk holding the page's last sample at
            // t0 + ts + page length - one chunk.
            let page_ms = page_duration_ms(&m.audio_data);
            self.seen.media_ms += page_ms;
            self.seen.bytes += m.audio_data.len() as u64;
            let sent =
                self.t0 + Duration::from_millis((ts + page_ms).saturating_sub(PRODUCER_CHUNK_MS));
            self.seen
                .latencies_ms
                .push(Instant::now().saturating_duration_since(sent).as_millis() as u32);
        }
        self.last_index = m.chunk_index;
    }
}

/// An HTTP/2 connection (prior knowledge, no TLS) driven by its own task.
async fn h2_connect(hostport: &str) -> anyhow::Result<h2::client::SendRequest<bytes::Bytes>> {
    let tcp = tokio::net::TcpStream::connect(hostport).await?;
    tcp.set_nodelay(true)?;
    // The windows hyper (and so tonic) clients open by default.
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(2 << 20)
        .initial_connection_window_size(5 << 20)
        .handshake(tcp)
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// Opens `StreamAudio` with one request frame; returns the response body.
async fn h2_stream_audio(
    h2: h2::client::SendRequest<bytes::Bytes>,
    hostport: &str,
    token: &str,
    request: bytes::Bytes,
) -> anyhow::Result<h2::RecvStream> {
    let mut h2 = h2.ready().await?;
    let req = http::Request::post(format!(
        "http://{hostport}/veza.stream.StreamService/StreamAudio"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("authorization", format!("Bearer {token}"))
    .body(())?;
    let (response, mut send) = h2.send_request(req, false)?;
    send.send_data(request, true)?;
    let response = response.await?;
    anyhow::ensure!(response.status() == 200, "HTTP {}", response.status());
    Ok(response.into_body())
}

/// `msg` as an uncompressed gRPC frame.
fn grpc_frame(msg: &impl prost::Message) -> bytes::Bytes {
    let body = msg.encode_to_vec();
    let mut b = Vec::with_capacity(5 + body.len());
    b.push(0);
    b.extend_from_slice(&(body.len() as u32).to_be_bytes());
    b.extend_from_slice(&body);
    b.into()
}

/// The next complete gRPC message in `buf`, if any.
fn next_message(buf: &mut bytes::BytesMut) -> Option<bytes::Bytes> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    let frame = buf.split_to(5 + len).freeze();
    Some(frame.slice(5..))
}

/// Publishes a 440 Hz stereo tone as 128 kbps Opus packets (one per 20 ms chunk, passed through
/// by the server, as Icecast passes ffmpeg's pages through) at real-time pace from `t0`, sent
/// `producer_batch()` packets at a time.
async fn produce(
    ch: tonic::transport::Channel,
    token: String,
    id: i64,
    stop: Arc<AtomicBool>,
    t0: Instant,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let sender = tokio::spawn(async move {
        let t0 = tokio::time::Instant::from_std(t0);
        let settings = veza_media_core::encode::EncoderSettings {
            bitrate_kbps: 128,
            complexity: veza_media_core::encode::DEFAULT_COMPLEXITY,
        };
        let Ok(mut enc) = veza_media_core::encode::OpusEncoder::new(2, settings) else {
            return;
        };
        let mut k = 0u64;
        let batch = producer_batch();
        let mut packets = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep_until(t0 + Duration::from_millis(k * PRODUCER_CHUNK_MS)).await;
            let pcm: Vec<f32> = (0..960u64)
                .flat_map(|i| {
                    let t = (k * 960 + i) as f64 / 48_000.0;
                    let v = ((t * 440.0 * std::f64::consts::TAU).sin() * 0.4) as f32;
                    [v, v]
                })
                .collect();
            let _ = enc.push(&pcm, &mut |p| {
                packets.push(bytes::Bytes::copy_from_slice(p));
                Ok(())
            });
            k += 1;
            if !k.is_multiple_of(batch) {
                continue;
            }
            for p in packets.drain(..) {
                let chunk = AudioChunk {
                    stream_id: id,
                    chunk_index: k as i32,
                    audio_data: p,
                    ..Default::default()
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut c = StreamServiceClient::new(ch);
    let _ = c
        .upload_audio_chunks(authed(
            &token,
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await;
    sender.abort();
}

/// Audio in an Ogg page, from its packets' TOC bytes (20 ms frames in practice).
fn page_duration_ms(page: &[u8]) -> u64 {
    if page.len() < 27 || &page[..4] != b"OggS" {
        return 0;
    }
    let segs = page[26] as usize;
    if page.len() < 27 + segs {
        return 0;
    }
    let packets = page[27..27 + segs]
        .iter()
        .filter(|&&lace| lace < 255)
        .count();
    packets as u64 * 20
}

async fn icecast(url: &str, pid: u32, n: usize, secs: u64) -> anyhow::Result<()> {
    let hostport = loopback(url)?;
    let path = format!(
        "/{}",
        url.trim_start_matches("http://")
            .split_once('/')
            .map_or("", |x| x.1)
    );
    let rss0 = rss_kb(pid)?;
    let window: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let connecting = Arc::new(tokio::sync::Semaphore::new(CONNECTING_AT_ONCE));
    let settled = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (hostport, path, window, stop) =
            (hostport.clone(), path.clone(), window.clone(), stop.clone());
        let (connecting, settled) = (connecting.clone(), settled.clone());
        tasks.push(tokio::spawn(async move {
            let opened = {
                let _permit = connecting.acquire().await?;
                connect_http(&hostport, &path).await
            };
            settled.fetch_add(1, Ordering::SeqCst);
            let mut s = opened?;
            let mut buf = vec![0u8; 16 << 10];
            let mut seen = Seen::default();
            while !stop.load(Ordering::Relaxed) {
                let k = s.read(&mut buf).await?;
                if k == 0 {
                    break;
                }
                let open = window.lock().map(|w| *w).unwrap_or(None);
                if open.is_some_and(|start| Instant::now() >= start) {
                    seen.bytes += k as u64;
                }
            }
            anyhow::Ok(seen)
        }));
    }
    all_settled(&settled, n).await;
    let (wall, ticks, rss) = measure(pid, &window, secs).await?;
    stop.store(true, Ordering::SeqCst);
    let mut seen = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(5), t).await {
            Ok(Ok(Ok(mut s))) => {
                // 128 kbps nominal: bytes → media ms.
                s.media_ms = s.bytes * 8 / 128;
                seen.push(s)
            }
            _ => failed += 1,
        }
    }
    report("icecast", n, failed, &seen, wall, ticks, (rss0, rss));
    Ok(())
}

/// After a warm-up, opens the listeners' counting window for `secs`; returns its length and the
/// server's CPU ticks and RSS (kB) over it.
async fn measure(
    pid: u32,
    window: &Mutex<Option<Instant>>,
    secs: u64,
) -> anyhow::Result<(Duration, u64, u64)> {
    tokio::time::sleep(WARMUP).await;
    let cpu0 = cpu_ticks(pid)?;
    let start = Instant::now();
    // For profilers started alongside: the window opens now.
    eprintln!("window open for {secs}s");
    if let Ok(mut w) = window.lock() {
        *w = Some(start);
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let ticks = cpu_ticks(pid)? - cpu0;
    Ok((start.elapsed(), ticks, rss_kb(pid)?))
}

/// Waits (at most two minutes) until every listener has connected or failed.
async fn all_settled(settled: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while settled.load(Ordering::SeqCst) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens `GET path` with a few retries (Icecast's accept queue is short).
async fn connect_http(hostport: &str, path: &str) -> anyhow::Result<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut last = None;
    for attempt in 0..5u64 {
        match tokio::net::TcpStream::connect(hostport).await {
            Ok(mut s) => {
                s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").as_bytes())
                    .await?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
    }
    Err(last.map_or_else(|| anyhow::anyhow!("connect failed"), Into::into))
}

fn report(
    name: &str,
    n: usize,
    failed: usize,
    seen: &[Seen],
    wall: Duration,
    ticks: u64,
    (rss0_kb, rss_kb): (u64, u64),
) {
    let wall_ms = wall.as_millis() as f64;
    let mut rates: Vec<f64> = seen.iter().map(|s| s.media_ms as f64 / wall_ms).collect();
    rates.sort_by(f64::total_cmp);
    let pct = |v: &[f64], p: f64| {
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let below = rates.iter().filter(|r| **r < 0.99).count();
    let gaps: u64 = seen.iter().map(|s| s.gaps).sum();
    let mut lat: Vec<u32> = seen
        .iter()
        .flat_map(|s| s.latencies_ms.iter().copied())
        .collect();
    lat.sort_unstable();
    let lp = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let hz = 100.0; // USER_HZ
    let cpu = ticks as f64 / hz / wall.as_secs_f64() * 100.0;
    let mb: f64 = seen.iter().map(|s| s.bytes).sum::<u64>() as f64 / 1e6;
    println!(
        "{name}: listeners {n} (failed {failed}), window {:.1}s, server CPU {cpu:.1}% of a core, RSS {:.1} MB (before the listeners {:.1} MB; {:.1} KB/listener added), \
         rate vs real time p1 {:.3} p50 {:.3} (<0.99: {below}), gaps/skips {gaps}, latency p50 {} ms p99 {} ms, received {mb:.1} MB",
        wall.as_secs_f64(),
        rss_kb as f64 / 1024.0,
        rss0_kb as f64 / 1024.0,
        rss_kb.saturating_sub(rss0_kb) as f64 / n.max(1) as f64,
        pct(&rates, 0.01),
        pct(&rates, 0.5),
        lp(0.5),
        lp(0.99),
    );
}

fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    Ok(f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
}

fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0))
}
