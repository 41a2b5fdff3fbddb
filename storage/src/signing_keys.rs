//! The signing keys repository: the JWT key every instance of a deployment shares.

use sqlx::Row;

use crate::{Db, error::Result, now_ms};

/// A stored signing key.
#[derive(Debug, Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub alg: String,
    pub secret_hex: String,
}

impl Db {
    /// Stores `key` unless a key of that algorithm exists, and returns the one that wins.
    pub async fn get_or_insert_signing_key(
        &self,
        key: &SigningKeyRecord,
    ) -> Result<SigningKeyRecord> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, secret_hex, created_at) \
             SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE alg = $2) \
             ON CONFLICT (kid) DO NOTHING",
        )
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.secret_hex)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT kid, alg, secret_hex FROM signing_keys WHERE alg = $1 ORDER BY created_at, kid LIMIT 1")
            .bind(&key.alg)
            .fetch_one(&self.pool)
            .await?;
        Ok(SigningKeyRecord {
            kid: row.try_get(0)?,
            alg: row.try_get(1)?,
            secret_hex: row.try_get(2)?,
        })
    }
}
