//! The external services tests may need, and what to do when they are absent: skip with a
//! printed reason, or fail when `VEZA_TEST_REQUIRE_SERVICES=1` (as in CI).

use sqlx::{Connection, Executor, PgConnection};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Whether absent services fail the tests instead of skipping them.
pub fn require_services() -> bool {
    std::env::var("VEZA_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

fn absent(what: &str, why: &str) {
    if require_services() {
        panic!("{what} is required (VEZA_TEST_REQUIRE_SERVICES=1) but unavailable: {why}");
    }
    eprintln!("SKIPPED: {what} unavailable ({why}); set it up to run this test");
}

fn postgres_admin_url() -> String {
    std::env::var("VEZA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The NATS server for multi-instance tests, or `None` (after printing why) when absent.
pub async fn nats_url() -> Option<String> {
    let url =
        std::env::var("VEZA_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let addr = url.trim_start_matches("nats://").to_string();
    match tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    {
        Ok(Ok(_)) => Some(url),
        Ok(Err(e)) => {
            absent("NATS", &format!("{addr}: {e}"));
            None
        }
        Err(_) => {
            absent("NATS", &format!("{addr}: timed out"));
            None
        }
    }
}

/// A throw-away PostgreSQL database.
pub struct PgDatabase {
    pub url: String,
    name: String,
    admin_url: String,
}

impl PgDatabase {
    /// Creates a fresh database, or `None` when PostgreSQL is absent.
    pub async fn create() -> Option<PgDatabase> {
        let admin_url = postgres_admin_url();
        let mut conn = match PgConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) => {
                absent("PostgreSQL", &format!("{admin_url}: {e}"));
                return None;
            }
        };
        let name = format!("veza_t_{}_{}", std::process::id(), unique());
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create database");
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b);
        Some(PgDatabase {
            url: format!("{base}/{name}"),
            name,
            admin_url,
        })
    }

    /// Drops the database (best effort).
    pub async fn drop_database(self) {
        if let Ok(mut conn) = PgConnection::connect(&self.admin_url).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let _ = conn.execute(sqlx::AssertSqlSafe(sql)).await;
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    nanos * 1000 + N.fetch_add(1, Ordering::Relaxed)
}
