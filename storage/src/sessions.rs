//! The sessions repository: login sessions, their rotating refresh tokens and revoked access tokens.

use sqlx::{Row, any::AnyRow};

use crate::{Db, error::Result, now_ms};

/// A login session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionRecord {
    pub id: i64,
    pub user_id: i64,
    pub device_id: String,
    pub ip_address: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub revoked: bool,
}

/// The fields of a session to open.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub user_id: i64,
    pub device_id: &'a str,
    pub ip_address: &'a str,
    pub expires_at: i64,
}

/// What happened when a refresh token was presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// Unknown or expired token.
    Invalid,
    /// The token had been used already: its session is now revoked.
    Reused(SessionRecord),
    /// Valid: the token is spent and the new one stored.
    Rotated(SessionRecord),
}

const COLUMNS: &str =
    "id, user_id, device_id, ip_address, created_at, last_seen_at, expires_at, revoked";

impl Db {
    /// Opens a session with its first refresh token (stored by hash).
    pub async fn create_session(
        &self,
        s: &NewSession<'_>,
        refresh_hash: &str,
    ) -> Result<SessionRecord> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "INSERT INTO sessions (user_id, device_id, ip_address, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $4, $5) RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(s.user_id)
            .bind(s.device_id)
            .bind(s.ip_address)
            .bind(now)
            .bind(s.expires_at)
            .fetch_one(&mut *tx)
            .await?;
        let session = session_from_row(&row)?;
        insert_refresh(&mut tx, refresh_hash, session.id, s.expires_at).await?;
        tx.commit().await?;
        Ok(session)
    }

    /// Spends a refresh token: rotates it to `new_hash`, or detects reuse and revokes the session.
    pub async fn use_refresh_token(
        &self,
        hash: &str,
        new_hash: &str,
        new_expiry: i64,
    ) -> Result<RefreshUse> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT session_id, expires_at, used FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(RefreshUse::Invalid);
        };
        let session_id: i64 = row.try_get(0)?;
        let expires_at: i64 = row.try_get(1)?;
        let used: i64 = row.try_get(2)?;
        if used != 0 {
            return revoke_for_reuse(tx, session_id).await;
        }
        let spent =
            sqlx::query("UPDATE refresh_tokens SET used = 1 WHERE token_hash = $1 AND used = 0")
                .bind(hash)
                .execute(&mut *tx)
                .await?;
        if spent.rows_affected() != 1 {
            // A concurrent use spent it between our read and this write (PostgreSQL's read
            // committed; SQLite's write lock serialises the two and lands in the branch above):
            // the same reuse, with the same outcome on both backends.
            return revoke_for_reuse(tx, session_id).await;
        }
        let session = fetch_session(&mut tx, session_id).await?;
        let Some(session) =
            session.filter(|s| !s.revoked && s.expires_at > now && expires_at > now)
        else {
            tx.commit().await?;
            return Ok(RefreshUse::Invalid);
        };
        insert_refresh(&mut tx, new_hash, session_id, new_expiry).await?;
        sqlx::query("UPDATE sessions SET last_seen_at = $1, expires_at = $2 WHERE id = $3")
            .bind(now)
            .bind(new_expiry)
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
        let session = fetch_session(&mut tx, session_id).await?.unwrap_or(session);
        tx.commit().await?;
        Ok(RefreshUse::Rotated(session))
    }

    /// The session a refresh token belongs to, whether spent or not.
    pub async fn session_of_refresh_token(&self, hash: &str) -> Result<Option<SessionRecord>> {
        let sql = format!(
            "SELECT {} FROM sessions s JOIN refresh_tokens r ON r.session_id = s.id WHERE r.token_hash = $1",
            COLUMNS
                .split(", ")
                .map(|c| format!("s.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// Marks a session revoked; returns it (None when unknown).
    pub async fn revoke_session(&self, id: i64) -> Result<Option<SessionRecord>> {
        let sql = format!("UPDATE sessions SET revoked = 1 WHERE id = $1 RETURNING {COLUMNS}");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// One session.
    pub async fn session(&self, id: i64) -> Result<Option<SessionRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM sessions WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// A user's sessions that have not expired, oldest first.
    pub async fn sessions_of_user(&self, user_id: i64) -> Result<Vec<SessionRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sessions WHERE user_id = $1 AND expires_at > $2 ORDER BY id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(now_ms())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Ids of revoked sessions that have not expired yet (for the revocation cache).
    pub async fn revoked_session_ids(&self) -> Result<Vec<i64>> {
        let rows = sqlx::query("SELECT id FROM sessions WHERE revoked = 1 AND expires_at > $1")
            .bind(now_ms())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Records a revoked access token id until it would have expired anyway.
    pub async fn revoke_jti(&self, jti: &str, expires_at: i64) -> Result<()> {
        sqlx::query("INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING")
            .bind(jti)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Revoked access token ids still within their lifetime; prunes the expired ones.
    pub async fn revoked_jtis(&self) -> Result<Vec<String>> {
        let now = now_ms();
        sqlx::query("DELETE FROM revoked_tokens WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query("SELECT jti FROM revoked_tokens")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}

async fn insert_refresh(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    hash: &str,
    session_id: i64,
    expires_at: i64,
) -> Result<()> {
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(hash)
        .bind(session_id)
        .bind(now_ms())
        .bind(expires_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn fetch_session(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: i64,
) -> Result<Option<SessionRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM sessions WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(session_from_row).transpose()
}

fn session_from_row(row: &AnyRow) -> Result<SessionRecord> {
    let revoked: i64 = row.try_get("revoked")?;
    Ok(SessionRecord {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        device_id: row.try_get("device_id")?,
        ip_address: row.try_get("ip_address")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked: revoked != 0,
    })
}

/// Revokes session `id` because one of its spent refresh tokens was presented again.
async fn revoke_for_reuse(
    mut tx: sqlx::Transaction<'static, sqlx::Any>,
    id: i64,
) -> Result<RefreshUse> {
    sqlx::query("UPDATE sessions SET revoked = 1 WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let s = fetch_session(&mut tx, id).await?;
    tx.commit().await?;
    Ok(s.map_or(RefreshUse::Invalid, RefreshUse::Reused))
}
