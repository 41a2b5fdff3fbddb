//! The rooms repository: chat rooms and their members.

use sqlx::{Row, any::AnyRow};

use crate::{Db, error::Result, now_ms};

/// A stored room with its member count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub is_private: bool,
    pub owner_id: i64,
    pub created_at: i64,
    pub last_message_id: i64,
    pub member_count: i64,
}

/// The fields of a room to create.
#[derive(Debug, Clone)]
pub struct NewRoom<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub is_private: bool,
    pub owner_id: i64,
    /// Users invited besides the owner (they become members by joining).
    pub member_ids: &'a [i64],
}

const COLUMNS: &str = "r.id, r.name, r.description, r.is_private, r.owner_id, r.created_at, r.last_message_id, \
     (SELECT COUNT(*) FROM room_members m WHERE m.room_id = r.id) AS member_count";

impl Db {
    /// Creates a room with its owner as its one member and `member_ids` invited, in one
    /// transaction.
    pub async fn create_room(&self, r: &NewRoom<'_>) -> Result<RoomRecord> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO rooms (name, description, is_private, owner_id, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(r.name)
        .bind(r.description)
        .bind(r.is_private as i64)
        .bind(r.owner_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get(0)?;
        sqlx::query("INSERT INTO room_members (room_id, user_id, joined_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(r.owner_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        for user in r.member_ids.iter().filter(|m| **m != r.owner_id) {
            sqlx::query("INSERT INTO room_invitations (room_id, user_id, invited_by, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
                .bind(id)
                .bind(user)
                .bind(r.owner_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.room(id)
            .await?
            .ok_or_else(|| crate::StorageError::Config("room vanished".into()))
    }

    /// Ensures room `id` exists with this name (for seeding); returns whether it was created.
    pub async fn ensure_room(&self, id: i64, name: &str, owner_id: i64) -> Result<bool> {
        if self.room(id).await?.is_some() {
            return Ok(false);
        }
        let done = sqlx::query(
            "INSERT INTO rooms (id, name, description, is_private, owner_id, created_at) VALUES ($1, $2, '', 0, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(name)
        .bind(owner_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        if self.backend() == crate::Backend::Postgres {
            sqlx::query("SELECT setval('rooms_id_seq', GREATEST((SELECT MAX(id) FROM rooms), 1))")
                .execute(&self.pool)
                .await?;
        }
        Ok(done.rows_affected() == 1)
    }

    /// One room.
    pub async fn room(&self, id: i64) -> Result<Option<RoomRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM rooms r WHERE r.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(room_from_row).transpose()
    }

    /// Whether `user_id` belongs to `room_id`.
    pub async fn is_member(&self, room_id: i64, user_id: i64) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM room_members WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Whether `user_id` holds an invitation to `room_id`.
    pub async fn is_invited(&self, room_id: i64, user_id: i64) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM room_invitations WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Adds a member (spending an invitation they held); `false` when already one.
    pub async fn add_member(&self, room_id: i64, user_id: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("INSERT INTO room_members (room_id, user_id, joined_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(room_id)
            .bind(user_id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM room_invitations WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a member; `false` when not one.
    pub async fn remove_member(&self, room_id: i64, user_id: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The rooms `user_id` belongs to, with their latest message id.
    pub async fn rooms_of_user(&self, user_id: i64) -> Result<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT r.id, r.last_message_id FROM rooms r JOIN room_members m ON m.room_id = r.id WHERE m.user_id = $1 ORDER BY r.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Ids of the members of `room_id` among the users named `usernames`.
    pub async fn members_named(&self, room_id: i64, usernames: &[String]) -> Result<Vec<i64>> {
        let mut ids = Vec::new();
        for name in usernames {
            let row = sqlx::query(
                "SELECT u.id FROM users u JOIN room_members m ON m.user_id = u.id WHERE m.room_id = $1 AND u.username = $2",
            )
            .bind(room_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(r) = row {
                ids.push(r.try_get(0)?);
            }
        }
        Ok(ids)
    }

    /// Which of `ids` name existing users.
    pub async fn existing_users(&self, ids: &[i64]) -> Result<Vec<i64>> {
        let mut found = Vec::new();
        for id in ids {
            if sqlx::query("SELECT 1 FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .is_some()
            {
                found.push(*id);
            }
        }
        Ok(found)
    }
}

fn room_from_row(row: &AnyRow) -> Result<RoomRecord> {
    let private: i64 = row.try_get("is_private")?;
    Ok(RoomRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        is_private: private != 0,
        owner_id: row.try_get("owner_id")?,
        created_at: row.try_get("created_at")?,
        last_message_id: row.try_get("last_message_id")?,
        member_count: row.try_get("member_count")?,
    })
}
