//! TrackEvent load: an in-process server (SQLite in a temp dir, or `--database-url postgres://…`),
//! many concurrent tonic clients over a few HTTP/2 connections, at a fixed rate (`--rate`) or as
//! fast as they go (`--rate 0`). Reports accepted events/s, the write throughput (until every
//! accepted event is in the database), refusals and the latency distribution.
//!
//! Usage: `events_load [--seconds 10] [--rate 20000] [--concurrency 64] [--connections 4]
//!         [--database-url URL]`

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tonic::{
    Code, Request,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};
use veza_control_plane::{Config, domain::NewAccount};
use veza_proto::{
    analytics::{
        GetMetricsRequest, TrackEventRequest, analytics_service_client::AnalyticsServiceClient,
    },
    auth::{AuthenticateRequest, auth_service_client::AuthServiceClient},
};

struct Args {
    seconds: u64,
    rate: u64,
    concurrency: usize,
    connections: usize,
    database_url: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        seconds: 10,
        rate: 20_000,
        concurrency: 64,
        connections: 4,
        database_url: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--seconds" => a.seconds = value()?.parse()?,
            "--rate" => a.rate = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse()?,
            "--connections" => a.connections = value()?.parse()?,
            "--database-url" => a.database_url = Some(value()?),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn authed<T>(token: &str, msg: T) -> anyhow::Result<Request<T>> {
    Ok(with_auth(bearer(token)?, msg))
}

/// The `authorization` value for `token`, built once and cloned per call (a refcount).
fn bearer(token: &str) -> anyhow::Result<MetadataValue<Ascii>> {
    Ok(format!("Bearer {token}").parse()?)
}

fn with_auth<T>(auth: MetadataValue<Ascii>, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert("authorization", auth);
    req
}

async fn written(client: &mut AnalyticsServiceClient<Channel>, token: &str) -> anyhow::Result<f64> {
    let names = vec!["veza_analytics_events_written_total".to_string()];
    let m = client
        .get_metrics(authed(token, GetMetricsRequest { names })?)
        .await?
        .into_inner();
    Ok(m.metrics.first().map_or(0.0, |m| m.value))
}

/// CPU seconds (user + system) this process has used, from /proc (0 where unavailable).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let dir = tempfile::tempdir()?;
    let mut config = Config::for_tests(dir.path().to_path_buf());
    // Every client connects from 127.0.0.1: no per-address or total connection cap.
    config.max_connections_per_ip = 0;
    config.max_connections = 0;
    // One token sends everything: keep the per-credential limiter on the path, with a budget the
    // load cannot reach, so its cost is in the figures.
    config.rate_limit_rps = 10_000_000;
    config.rate_limit_burst = 10_000_000;
    if let Some(url) = &a.database_url {
        config.database_url = url.clone();
    }
    let server = veza_control_plane::start(config).await?;
    let backend = format!("{:?}", server.db.backend());
    let email = format!("load-{}@example.com", std::process::id());
    let account = NewAccount {
        email: email.clone(),
        password: "load password".into(),
        admin: true,
        ..Default::default()
    };
    veza_control_plane::domain::create_account(&server.db, account).await?;
    let url = format!("http://{}", server.grpc_addr);
    let mut channels = Vec::new();
    for _ in 0..a.connections.max(1) {
        channels.push(
            tonic::transport::Endpoint::from_shared(url.clone())?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    let login = AuthServiceClient::new(channels[0].clone())
        .authenticate(AuthenticateRequest {
            email,
            password: "load password".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let token: Arc<str> = login.access_token.into();
    let auth = bearer(&token)?;

    let ok = Arc::new(AtomicU64::new(0));
    let exhausted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.seconds);
    let period =
        (a.rate > 0).then(|| Duration::from_secs_f64(a.concurrency as f64 / a.rate as f64));
    let mut tasks = Vec::new();
    let concurrency = a.concurrency.max(1) as f64;
    for t in 0..a.concurrency {
        let mut client = AnalyticsServiceClient::new(channels[t % channels.len()].clone());
        let (auth, ok, exhausted, failed) =
            (auth.clone(), ok.clone(), exhausted.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
            // Spread the tasks' schedules over one period.
            let mut next =
                started + period.map_or(Duration::ZERO, |p| p.mul_f64(t as f64 / concurrency));
            let mut i: u64 = 0;
            loop {
                if let Some(p) = period {
                    tokio::time::sleep_until(next.into()).await;
                    next += p;
                }
                if Instant::now() >= deadline {
                    break;
                }
                i += 1;
                let user = ((t as u64 * 7919 + i) % 10_000 + 1) as i64;
                let properties = HashMap::from([(
                    "country".to_string(),
                    ["FR", "DE", "US", "JP"][(i % 4) as usize].to_string(),
                )]);
                let msg = TrackEventRequest {
                    event_type: "play_started".into(),
                    user_id: user,
                    properties,
                    timestamp: None,
                    source: "load".into(),
                };
                let req = with_auth(auth.clone(), msg);
                let sent = Instant::now();
                let r = client.track_event(req).await;
                latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                match r {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(s) if s.code() == Code::ResourceExhausted => {
                        exhausted.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?);
    }
    let sending = started.elapsed();
    let accepted = ok.load(Ordering::Relaxed);
    let mut client = AnalyticsServiceClient::new(channels[0].clone());
    while written(&mut client, &token).await? < accepted as f64 {
        anyhow::ensure!(
            started.elapsed() < sending + Duration::from_secs(120),
            "events were not all written"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_written = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "backend {backend}: target {} ev/s, {} clients over {} connections, {:.1} s",
        a.rate,
        a.concurrency,
        a.connections,
        sending.as_secs_f64()
    );
    println!(
        "accepted {accepted} ({:.0} ev/s), RESOURCE_EXHAUSTED {}, other errors {}",
        accepted as f64 / sending.as_secs_f64(),
        exhausted.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    println!(
        "all accepted events written after {:.2} s: {:.0} ev/s end to end",
        all_written.as_secs_f64(),
        accepted as f64 / all_written.as_secs_f64()
    );
    println!(
        "CPU (server + clients, one process): {cpu:.1} s = {:.0} µs per accepted event; {:.2} cores busy",
        cpu * 1e6 / accepted.max(1) as f64,
        cpu / all_written.as_secs_f64()
    );
    println!(
        "TrackEvent latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    server.shutdown().await?;
    Ok(())
}
