//! The users repository: accounts, password hashes, roles and failed-login counters.

use sqlx::{Row, any::AnyRow};

use crate::{Db, error::Result, now_ms};

/// A stored account.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: i64,
    pub email: String,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub created_at: i64,
    pub failed_logins: i64,
    pub last_failed_at: i64,
}

/// The fields of an account to create.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub email: &'a str,
    pub username: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub password_hash: &'a str,
    pub roles: &'a [String],
}

const COLUMNS: &str = "id, email, username, first_name, last_name, password_hash, roles, created_at, failed_logins, last_failed_at";

impl Db {
    /// Creates an account; `Conflict("email")` or `Conflict("username")` when taken.
    pub async fn create_user(&self, user: &NewUser<'_>) -> Result<UserRecord> {
        let sql = format!(
            "INSERT INTO users (email, username, first_name, last_name, password_hash, roles, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user.email)
            .bind(user.username)
            .bind(user.first_name)
            .bind(user.last_name)
            .bind(user.password_hash)
            .bind(user.roles.join(","))
            .bind(now_ms())
            .fetch_one(&self.pool)
            .await?;
        user_from_row(&row)
    }

    /// The account with this id.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// The account with this (already normalised) email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE email = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// The account with this username.
    pub async fn user_by_username(&self, name: &str) -> Result<Option<UserRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE username = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }
}

fn user_from_row(row: &AnyRow) -> Result<UserRecord> {
    let roles: String = row.try_get("roles")?;
    Ok(UserRecord {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        username: row.try_get("username")?,
        first_name: row.try_get("first_name")?,
        last_name: row.try_get("last_name")?,
        password_hash: row.try_get("password_hash")?,
        roles: roles
            .split(',')
            .filter(|r| !r.is_empty())
            .map(String::from)
            .collect(),
        created_at: row.try_get("created_at")?,
        failed_logins: row.try_get("failed_logins")?,
        last_failed_at: row.try_get("last_failed_at")?,
    })
}
