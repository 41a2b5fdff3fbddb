//! Chat load tool: sustained `SendMessage` throughput on the embedded store, and fan-out latency
//! of one message to many `StreamMessages` subscribers of one room. Loopback only, bounded in
//! count and time.
//!
//! `chat_load send [SECONDS] [CONCURRENCY]` · `chat_load fanout [SUBSCRIBERS] [MESSAGES] [--nats URL]`
//!
//! The fan-out opens every subscription, sends one untimed warm-up message and waits until every
//! subscriber has it, then sends MESSAGES timed messages 20 ms apart.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use tonic::transport::Channel;
use veza_benches::{authed, login};
use veza_control_plane::Config;
use veza_proto::chat::{
    CreateRoomRequest, SendMessageRequest, StreamMessagesRequest,
    chat_service_client::ChatServiceClient,
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nats = args
        .iter()
        .position(|a| a == "--nats")
        .and_then(|i| args.get(i + 1).cloned());
    let num = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let mut config = Config::for_tests(dir.path().to_path_buf());
    // Every client connects from 127.0.0.1: no per-address or total connection cap.
    config.max_connections_per_ip = 0;
    config.max_connections = 0;
    // One token sends everything: keep the per-credential limiter on the path, with a budget the
    // load cannot reach, so its cost is in the figures.
    config.rate_limit_rps = 10_000_000;
    config.rate_limit_burst = 10_000_000;
    config.nats_url = nats;
    let server = server_rt.block_on(veza_control_plane::start(config))?;
    let url = format!("http://{}", server.grpc_addr);
    let db = server.db.clone();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = client_rt.block_on(async {
        let token = login(&db, &url).await?;
        match args.first().map(String::as_str) {
            Some("send") => send(&url, &token, Duration::from_secs(num(1, 10)), num(2, 64) as usize).await,
            Some("fanout") => fanout(&url, &token, num(1, 1000) as usize, num(2, 200) as usize).await,
            _ => anyhow::bail!("usage: chat_load send [SECONDS] [CONCURRENCY] | chat_load fanout [SUBSCRIBERS] [MESSAGES] [--nats URL]"),
        }
    });
    server_rt.block_on(server.shutdown())?;
    result
}

async fn new_room(channel: &Channel, token: &str) -> anyhow::Result<i64> {
    let req = CreateRoomRequest {
        name: "load".into(),
        ..Default::default()
    };
    let room = ChatServiceClient::new(channel.clone())
        .create_room(authed(token, req))
        .await?
        .into_inner()
        .room;
    Ok(room.map_or(0, |r| r.room_id))
}

async fn channels(url: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(
            tonic::transport::Endpoint::from_shared(url.to_string())?
                .connect()
                .await?,
        );
    }
    Ok(out)
}

async fn send(
    url: &str,
    token: &str,
    duration: Duration,
    concurrency: usize,
) -> anyhow::Result<()> {
    let chans = channels(url, 4).await?;
    let room_id = new_room(&chans[0], token).await?;
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let (mut c, token) = (
            ChatServiceClient::new(chans[i % chans.len()].clone()),
            token.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                let req = SendMessageRequest {
                    room_id,
                    content: "load test message of a typical length, about sixty bytes".into(),
                    ..Default::default()
                };
                if c.send_message(authed(&token, req)).await.is_ok() {
                    latencies.push(started.elapsed());
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    all.sort();
    let q = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "SendMessage: {} messages in {:?} with {concurrency} concurrent callers = {:.0} msg/s; latency p50 {:?} p99 {:?}",
        all.len(),
        duration,
        all.len() as f64 / duration.as_secs_f64(),
        q(0.5),
        q(0.99)
    );
    Ok(())
}

async fn fanout(url: &str, token: &str, subscribers: usize, messages: usize) -> anyhow::Result<()> {
    let chans = channels(url, 10).await?;
    let room_id = new_room(&chans[0], token).await?;
    let base = Arc::new(Instant::now());
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(subscribers);
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel(subscribers);
    for i in 0..subscribers {
        let (mut c, token, base, ready, opened) = (
            ChatServiceClient::new(chans[i % chans.len()].clone()),
            token.to_string(),
            base.clone(),
            ready_tx.clone(),
            opened_tx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let req = StreamMessagesRequest {
                room_id,
                last_message_id: 0,
            };
            let stream = c.stream_messages(authed(&token, req)).await?.into_inner();
            // One timer per subscriber for the whole run (not one per delivery: 1,000 timer
            // registrations per message would load the same cores as the server).
            let give_up = Duration::from_secs(30) + Duration::from_millis(20) * messages as u32;
            let mut stream = stream.take_until(Box::pin(tokio::time::sleep(give_up)));
            opened.send(()).await?;
            // A warm-up message first: it carries each stream's start (its first read of the
            // room's history), so the timed messages measure steady-state fan-out.
            if !matches!(stream.next().await, Some(Ok(_))) {
                anyhow::bail!("no warm-up message");
            }
            ready.send(()).await?;
            let mut delays = Vec::with_capacity(messages);
            while delays.len() < messages {
                let Some(Ok(m)) = stream.next().await else {
                    break;
                };
                let sent_us: u64 = m.content.parse().unwrap_or(0);
                delays.push(base.elapsed().as_micros() as u64 - sent_us);
            }
            anyhow::Ok(delays)
        }));
    }
    // Only the subscribers hold senders now: a failed one cannot leave the waits below hanging.
    drop((opened_tx, ready_tx));
    for _ in 0..subscribers {
        opened_rx.recv().await;
    }
    let mut sender = ChatServiceClient::new(chans[0].clone());
    let warm_up = SendMessageRequest {
        room_id,
        content: "warm-up".into(),
        ..Default::default()
    };
    sender.send_message(authed(token, warm_up)).await?;
    for _ in 0..subscribers {
        ready_rx.recv().await;
    }
    for _ in 0..messages {
        let req = SendMessageRequest {
            room_id,
            content: base.elapsed().as_micros().to_string(),
            ..Default::default()
        };
        sender.send_message(authed(token, req)).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    let q = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default() as f64
            / 1000.0
    };
    println!(
        "fan-out to {subscribers} subscribers, {messages} messages: {} deliveries (expected {}); delivery latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.len(),
        subscribers * messages,
        q(0.5),
        q(0.99),
        q(1.0)
    );
    Ok(())
}
