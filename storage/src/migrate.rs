//! Schema migrations for both engines, applied in order at start-up.

use sqlx::{Executor, Row};

use crate::{
    db::{Backend, Db},
    error::Result,
};

impl Db {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and applies the migrations.
    pub async fn connect(url: &str) -> Result<Db> {
        let db = Db::open(url).await?;
        run(&db).await?;
        Ok(db)
    }
}

/// (version, SQLite script, PostgreSQL script)
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        include_str!("../migrations/sqlite/0001_auth.sql"),
        include_str!("../migrations/postgres/0001_auth.sql"),
    ),
    (
        2,
        include_str!("../migrations/sqlite/0002_chat.sql"),
        include_str!("../migrations/postgres/0002_chat.sql"),
    ),
    (
        3,
        include_str!("../migrations/sqlite/0003_notifications_analytics.sql"),
        include_str!("../migrations/postgres/0003_notifications_analytics.sql"),
    ),
    (
        4,
        include_str!("../migrations/sqlite/0004_media.sql"),
        include_str!("../migrations/postgres/0004_media.sql"),
    ),
    (
        5,
        include_str!("../migrations/sqlite/0005_analytics_rollup.sql"),
        include_str!("../migrations/postgres/0005_analytics_rollup.sql"),
    ),
    (
        6,
        include_str!("../migrations/sqlite/0006_media_claims.sql"),
        include_str!("../migrations/postgres/0006_media_claims.sql"),
    ),
    (
        7,
        include_str!("../migrations/sqlite/0007_live.sql"),
        include_str!("../migrations/postgres/0007_live.sql"),
    ),
    (
        8,
        include_str!("../migrations/sqlite/0008_media_attempts.sql"),
        include_str!("../migrations/postgres/0008_media_attempts.sql"),
    ),
    (
        9,
        include_str!("../migrations/sqlite/0009_room_invitations.sql"),
        include_str!("../migrations/postgres/0009_room_invitations.sql"),
    ),
    (
        10,
        include_str!("../migrations/sqlite/0010_media_metadata.sql"),
        include_str!("../migrations/postgres/0010_media_metadata.sql"),
    ),
    (
        11,
        include_str!("../migrations/sqlite/0011_live_source.sql"),
        include_str!("../migrations/postgres/0011_live_source.sql"),
    ),
];

/// Applies every migration the database has not seen yet, each in its own transaction.
async fn run(db: &Db) -> Result<()> {
    let mut conn = db.pool.acquire().await?;
    if db.backend() == Backend::Postgres {
        // Serialise concurrent start-ups of several instances.
        conn.execute("SELECT pg_advisory_lock(7340001)").await?;
    }
    let result = apply(db, &mut conn).await;
    if db.backend() == Backend::Postgres {
        conn.execute("SELECT pg_advisory_unlock(7340001)").await?;
    }
    result
}

async fn apply(db: &Db, conn: &mut sqlx::AnyConnection) -> Result<()> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS veza_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await?;
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM veza_migrations")
        .fetch_one(&mut *conn)
        .await?;
    let current: i64 = row.try_get("v")?;
    for (version, sqlite, postgres) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let script = match db.backend() {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
        };
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        tx.execute(*script).await?;
        sqlx::query("INSERT INTO veza_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(crate::now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, "applied migration");
    }
    Ok(())
}
