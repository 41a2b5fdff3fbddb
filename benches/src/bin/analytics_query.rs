//! GetAnalytics over one million stored events, one day in hourly buckets, over gRPC against an
//! in-process server; the events are seeded directly through storage. Prints the median, p90 and
//! max of repeated calls, ungrouped and grouped by a property. (The criterion version is
//! `cargo bench -p veza-benches --bench events`; this one needs no dev-dependencies.)
//!
//! Usage: `analytics_query [--events 1000000] [--runs 20] [--database-url postgres://…]`

use std::time::{Duration, Instant};

use tonic::{Request, metadata::MetadataValue};
use veza_control_plane::{Config, domain::NewAccount};
use veza_proto::{
    analytics::{GetAnalyticsRequest, analytics_service_client::AnalyticsServiceClient},
    auth::{AuthenticateRequest, auth_service_client::AuthServiceClient},
};
use veza_storage::EventRecord;

const DAY_MS: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z.
const DAY_START: i64 = 1_767_225_600_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut events, mut runs, mut database_url) = (1_000_000i64, 20usize, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--events" => events = value.parse()?,
            "--runs" => runs = value.parse()?,
            "--database-url" => database_url = Some(value),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let dir = tempfile::tempdir()?;
    let mut config = Config::for_tests(dir.path().to_path_buf());
    // Every client connects from 127.0.0.1: no per-address or total connection cap.
    config.max_connections_per_ip = 0;
    config.max_connections = 0;
    config.analytics_retention_days = 0;
    if let Some(url) = database_url {
        config.database_url = url;
    }
    let server = veza_control_plane::start(config).await?;
    let account = NewAccount {
        email: "bench@example.com".into(),
        password: "bench password".into(),
        admin: true,
        ..Default::default()
    };
    veza_control_plane::domain::create_account(&server.db, account).await?;
    let seeding = Instant::now();
    let countries = ["FR", "DE", "US", "JP", "BR"];
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..events {
        batch.push(EventRecord {
            id: i + 1,
            event_type: "play_started".into(),
            user_id: (i * 7919) % 10_000 + 1,
            ts: DAY_START + i * DAY_MS / events,
            source: "bench".into(),
            properties: vec![("country".into(), countries[(i % 5) as usize].into())],
        });
        if batch.len() == 10_000 {
            server.db.insert_events(&batch).await?;
            batch.clear();
        }
    }
    server.db.insert_events(&batch).await?;
    println!(
        "seeded {events} events on {:?} in {:.1} s",
        server.db.backend(),
        seeding.elapsed().as_secs_f64()
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr))?
        .connect()
        .await?;
    let login = AuthServiceClient::new(channel.clone())
        .authenticate(AuthenticateRequest {
            email: "bench@example.com".into(),
            password: "bench password".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut client = AnalyticsServiceClient::new(channel);
    for group_by in ["", "country"] {
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let ts = |ms: i64| {
                Some(prost_types::Timestamp {
                    seconds: ms / 1000,
                    nanos: 0,
                })
            };
            let mut req = Request::new(GetAnalyticsRequest {
                event_type: "play_started".into(),
                from: ts(DAY_START),
                to: ts(DAY_START + DAY_MS),
                interval_seconds: 3600,
                group_by: group_by.into(),
            });
            let v: MetadataValue<_> = format!("Bearer {}", login.access_token).parse()?;
            req.metadata_mut().insert("authorization", v);
            let started = Instant::now();
            let r = client.get_analytics(req).await?.into_inner();
            times.push(started.elapsed());
            anyhow::ensure!(
                r.total_count == events,
                "counted {} of {events}",
                r.total_count
            );
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "GetAnalytics {events} events, 24 hourly buckets{}: median {:.1} ms, p90 {:.1} ms, max {:.1} ms ({runs} runs)",
            if group_by.is_empty() {
                String::new()
            } else {
                format!(", grouped by {group_by}")
            },
            ms(times[runs / 2]),
            ms(times[runs * 9 / 10]),
            ms(times[runs - 1])
        );
    }
    server.shutdown().await?;
    Ok(())
}
