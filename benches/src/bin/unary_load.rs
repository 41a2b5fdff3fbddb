//! Unary load tool: `GetUserInfo` as fast as it goes over gRPC and over Connect JSON (HTTP/1.1
//! keep-alive connections, and HTTP/2), in one run, against an in-process server or a running
//! `veza serve --demo`.
//!
//! `unary_load [--seconds N] [--concurrency C] [--connections K] [--rounds R]
//!             [--grpc ADDR --http ADDR] [MODE…]` with MODE among `grpc`, `connect-h1`,
//! `connect-h2` (default: all three, alternating, R rounds).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::transport::Channel;
use veza_benches::{authed, login};
use veza_control_plane::Config;
use veza_proto::auth::{
    AuthenticateRequest, GetUserInfoRequest, auth_service_client::AuthServiceClient,
};

const PATH: &str = "/veza.auth.AuthService/GetUserInfo";

struct Opts {
    seconds: u64,
    concurrency: usize,
    connections: usize,
    rounds: usize,
    modes: Vec<String>,
    grpc: Option<String>,
    http: Option<String>,
}

fn opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        seconds: 10,
        concurrency: 64,
        connections: 4,
        rounds: 1,
        modes: Vec::new(),
        grpc: None,
        http: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--seconds" => o.seconds = val()?.parse()?,
            "--concurrency" => o.concurrency = val()?.parse()?,
            "--connections" => o.connections = val()?.parse()?,
            "--rounds" => o.rounds = val()?.parse()?,
            "--grpc" => o.grpc = Some(val()?),
            "--http" => o.http = Some(val()?),
            m @ ("grpc" | "connect-h1" | "connect-h2") => o.modes.push(m.into()),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    if o.modes.is_empty() {
        o.modes = ["grpc", "connect-h1", "connect-h2"]
            .map(String::from)
            .to_vec();
    }
    Ok(o)
}

fn main() -> anyhow::Result<()> {
    let o = opts()?;
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let (server, grpc, http, token) = match (&o.grpc, &o.http) {
        (Some(g), Some(h)) => {
            let token = client_rt.block_on(demo_login(g))?;
            (None, g.clone(), h.clone(), token)
        }
        _ => {
            let mut config = Config::for_tests(dir.path().to_path_buf());
            config.max_connections_per_ip = 0;
            config.max_connections = 0;
            // The limiter stays on the path with a budget the load cannot reach.
            config.rate_limit_rps = 10_000_000;
            config.rate_limit_burst = 10_000_000;
            let server = server_rt.block_on(veza_control_plane::start(config))?;
            let (g, h) = (server.grpc_addr.to_string(), server.http_addr.to_string());
            let token = client_rt.block_on(login(&server.db, &format!("http://{g}")))?;
            (Some(server), g, h, token)
        }
    };
    println!(
        "GetUserInfo, {} s per mode, concurrency {}, {} HTTP/2 connections",
        o.seconds, o.concurrency, o.connections
    );
    for round in 1..=o.rounds {
        for mode in &o.modes {
            let addr = if mode == "connect-h1" { &http } else { &grpc };
            let r = client_rt.block_on(run(mode, addr, &token, &o))?;
            println!(
                "round {round} {mode:<10} {:>8.0} calls/s  p50 {:>7.0} µs  p99 {:>7.0} µs  errors {}",
                r.rate, r.p50, r.p99, r.errors
            );
        }
    }
    if let Some(s) = server {
        server_rt.block_on(s.shutdown())?;
    }
    Ok(())
}

async fn demo_login(grpc: &str) -> anyhow::Result<String> {
    let mut auth = AuthServiceClient::connect(format!("http://{grpc}")).await?;
    let req = AuthenticateRequest {
        email: "user@veza.app".into(),
        password: "password123".into(),
        ..Default::default()
    };
    Ok(auth.authenticate(req).await?.into_inner().access_token)
}

struct Figures {
    rate: f64,
    p50: f64,
    p99: f64,
    errors: u64,
}

/// One caller's loop: a call, its latency recorded, until `stop`.
#[derive(Clone)]
enum Caller {
    Grpc(AuthServiceClient<Channel>),
    H1(Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Caller {
    async fn call(&mut self, token: &str, host: &str) -> bool {
        match self {
            Caller::Grpc(c) => c
                .get_user_info(authed(token, GetUserInfoRequest::default()))
                .await
                .is_ok(),
            Caller::H1(c) => {
                let mut c = c.lock().await;
                if c.ready().await.is_err() {
                    return false;
                }
                finish(c.send_request(connect_request(token, host))).await
            }
            Caller::H2(c) => finish(c.send_request(connect_request(token, host))).await,
        }
    }
}

fn connect_request(token: &str, host: &str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post(PATH)
        .header("host", host)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap_or_default()
}

async fn finish(
    resp: impl Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>>,
) -> bool {
    let Ok(resp) = resp.await else { return false };
    let ok = resp.status().is_success();
    resp.into_body().collect().await.is_ok() && ok
}

async fn callers(mode: &str, addr: &str, o: &Opts) -> anyhow::Result<Vec<Caller>> {
    let mut out = Vec::new();
    match mode {
        "grpc" => {
            for _ in 0..o.connections {
                let ch = Channel::from_shared(format!("http://{addr}"))?
                    .connect()
                    .await?;
                out.push(Caller::Grpc(AuthServiceClient::new(ch)));
            }
        }
        "connect-h2" => {
            for _ in 0..o.connections {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let (send, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                        .await?;
                tokio::spawn(conn);
                out.push(Caller::H2(send));
            }
        }
        _ => {
            // HTTP/1.1 has one call in flight per connection: one connection per caller.
            for _ in 0..o.concurrency {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                out.push(Caller::H1(Arc::new(tokio::sync::Mutex::new(send))));
            }
        }
    }
    Ok(out)
}

async fn run(mode: &str, addr: &str, token: &str, o: &Opts) -> anyhow::Result<Figures> {
    let pool = callers(mode, addr, o).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..o.concurrency {
        let mut caller = pool[i % pool.len()].clone();
        let (stop, errors, token, host) = (
            stop.clone(),
            errors.clone(),
            token.to_string(),
            addr.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if caller.call(&token, &host).await {
                    lat.push(t.elapsed().as_micros() as u32);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
    };
    Ok(Figures {
        rate: all.len() as f64 / secs,
        p50: pct(0.5),
        p99: pct(0.99),
        errors: errors.load(Ordering::Relaxed),
    })
}
