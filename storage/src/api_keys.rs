//! The API keys repository: hashed service keys with scopes.

use sqlx::{Row, any::AnyRow};

use crate::{Db, error::Result, now_ms};

/// A stored API key (never the key itself, only its hash and prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_by: i64,
    pub created_at: i64,
    pub last_used_at: i64,
    pub revoked: bool,
}

/// The fields of a key to create.
#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    pub name: &'a str,
    pub key_hash: &'a str,
    pub prefix: &'a str,
    pub scopes: &'a [String],
    pub created_by: i64,
}

const COLUMNS: &str = "id, name, prefix, scopes, created_by, created_at, last_used_at, revoked";

impl Db {
    /// Stores a new key.
    pub async fn create_api_key(&self, k: &NewApiKey<'_>) -> Result<ApiKeyRecord> {
        let sql = format!(
            "INSERT INTO api_keys (name, key_hash, prefix, scopes, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(k.name)
            .bind(k.key_hash)
            .bind(k.prefix)
            .bind(k.scopes.join(","))
            .bind(k.created_by)
            .bind(now_ms())
            .fetch_one(&self.pool)
            .await?;
        key_from_row(&row)
    }

    /// The key with this hash, revoked or not.
    pub async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// Every key, newest first.
    pub async fn list_api_keys(&self, include_revoked: bool) -> Result<Vec<ApiKeyRecord>> {
        let filter = if include_revoked {
            ""
        } else {
            "WHERE revoked = 0"
        };
        let sql = format!("SELECT {COLUMNS} FROM api_keys {filter} ORDER BY id DESC");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes a key; `false` when no such key exists.
    pub async fn revoke_api_key(&self, id: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE api_keys SET revoked = 1 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Notes that a key was used just now.
    pub async fn touch_api_key(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn key_from_row(row: &AnyRow) -> Result<ApiKeyRecord> {
    let scopes: String = row.try_get("scopes")?;
    let revoked: i64 = row.try_get("revoked")?;
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        scopes: scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked: revoked != 0,
    })
}
