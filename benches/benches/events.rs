//! GetAnalytics over one million stored events: one day in hourly buckets, ungrouped and grouped
//! by a property, measured end to end over gRPC against an in-process server. The events are
//! seeded directly through storage. SQLite always; PostgreSQL too when `VEZA_BENCH_POSTGRES_URL`
//! names an empty database.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tonic::{Request, metadata::MetadataValue, transport::Channel};
use veza_control_plane::{Config, RunningServer, domain::NewAccount};
use veza_proto::{
    analytics::{GetAnalyticsRequest, analytics_service_client::AnalyticsServiceClient},
    auth::{AuthenticateRequest, auth_service_client::AuthServiceClient},
};
use veza_storage::EventRecord;

const EVENTS: i64 = 1_000_000;
const DAY_MS: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z.
const DAY_START: i64 = 1_767_225_600_000;

struct Fixture {
    _dir: tempfile::TempDir,
    server: RunningServer,
    client: AnalyticsServiceClient<Channel>,
    token: String,
}

async fn fixture(database_url: Option<String>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path().to_path_buf());
    config.analytics_retention_days = 0;
    if let Some(url) = database_url {
        config.database_url = url;
    }
    let server = veza_control_plane::start(config).await.unwrap();
    let account = NewAccount {
        email: "bench@example.com".into(),
        password: "bench password".into(),
        admin: true,
        ..Default::default()
    };
    veza_control_plane::domain::create_account(&server.db, account)
        .await
        .unwrap();
    let seeding = Instant::now();
    let countries = ["FR", "DE", "US", "JP", "BR"];
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..EVENTS {
        batch.push(EventRecord {
            id: i + 1,
            event_type: "play_started".into(),
            user_id: (i * 7919) % 10_000 + 1,
            ts: DAY_START + i * DAY_MS / EVENTS,
            source: "bench".into(),
            properties: vec![("country".into(), countries[(i % 5) as usize].into())],
        });
        if batch.len() == 10_000 {
            server.db.insert_events(&batch).await.unwrap();
            batch.clear();
        }
    }
    server.db.insert_events(&batch).await.unwrap();
    eprintln!(
        "seeded {EVENTS} events on {:?} in {:.1} s",
        server.db.backend(),
        seeding.elapsed().as_secs_f64()
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let login = AuthServiceClient::new(channel.clone())
        .authenticate(AuthenticateRequest {
            email: "bench@example.com".into(),
            password: "bench password".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    Fixture {
        _dir: dir,
        server,
        client: AnalyticsServiceClient::new(channel),
        token: login.access_token,
    }
}

fn request(token: &str, group_by: &str) -> Request<GetAnalyticsRequest> {
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
    let v: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    req.metadata_mut().insert("authorization", v);
    req
}

fn bench_backend(c: &mut Criterion, rt: &Runtime, name: &str, url: Option<String>) {
    let mut f = rt.block_on(fixture(url));
    let check = rt
        .block_on(f.client.get_analytics(request(&f.token, "")))
        .unwrap()
        .into_inner();
    assert_eq!((check.buckets.len(), check.total_count), (24, EVENTS));
    let mut group = c.benchmark_group(format!("get_analytics_1m_{name}"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (label, by) in [("hourly", ""), ("hourly_by_country", "country")] {
        group.bench_function(label, |b| {
            b.iter(|| {
                let r = rt
                    .block_on(f.client.get_analytics(request(&f.token, by)))
                    .unwrap()
                    .into_inner();
                assert_eq!(r.total_count, EVENTS);
            })
        });
    }
    group.finish();
    rt.block_on(f.server.shutdown()).unwrap();
}

fn get_analytics(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    bench_backend(c, &rt, "sqlite", None);
    if let Ok(url) = std::env::var("VEZA_BENCH_POSTGRES_URL") {
        bench_backend(c, &rt, "postgres", Some(url));
    }
}

criterion_group!(benches, get_analytics);
criterion_main!(benches);
