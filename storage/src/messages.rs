//! The messages repository: per-room ordered chat messages, written in batches.

use sqlx::{Row, any::AnyRow};

use crate::{Db, error::Result, now_ms};

/// A stored chat message. Ids are per room and grow in commit order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageRecord {
    pub room_id: i64,
    pub id: i64,
    pub user_id: i64,
    pub content: String,
    pub message_type: String,
    pub metadata: Vec<u8>,
    pub reply_to_id: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub room_id: i64,
    pub user_id: i64,
    pub content: String,
    pub message_type: String,
    pub metadata: Vec<u8>,
    pub reply_to_id: i64,
}

/// Why one message of a batch was not stored (the others still are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    NoSuchRoom,
    ReplyNotInRoom,
}

const COLUMNS: &str =
    "room_id, id, user_id, content, message_type, metadata, reply_to_id, created_at, updated_at";

impl Db {
    /// Stores a batch in one transaction; each message gets the next id of its room.
    pub async fn insert_messages(
        &self,
        batch: &[NewMessage],
    ) -> Result<Vec<std::result::Result<MessageRecord, Rejected>>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let mut out = Vec::with_capacity(batch.len());
        for m in batch {
            if m.reply_to_id != 0 {
                let found = sqlx::query("SELECT 1 FROM messages WHERE room_id = $1 AND id = $2")
                    .bind(m.room_id)
                    .bind(m.reply_to_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if found.is_none() {
                    out.push(Err(Rejected::ReplyNotInRoom));
                    continue;
                }
            }
            let next = sqlx::query("UPDATE rooms SET last_message_id = last_message_id + 1 WHERE id = $1 RETURNING last_message_id")
                .bind(m.room_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(next) = next else {
                out.push(Err(Rejected::NoSuchRoom));
                continue;
            };
            let id: i64 = next.try_get(0)?;
            sqlx::query(
                "INSERT INTO messages (room_id, id, user_id, content, message_type, metadata, reply_to_id, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            )
            .bind(m.room_id)
            .bind(id)
            .bind(m.user_id)
            .bind(&m.content)
            .bind(&m.message_type)
            .bind(hex::encode(&m.metadata))
            .bind(m.reply_to_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            out.push(Ok(MessageRecord {
                room_id: m.room_id,
                id,
                user_id: m.user_id,
                content: m.content.clone(),
                message_type: m.message_type.clone(),
                metadata: m.metadata.clone(),
                reply_to_id: m.reply_to_id,
                created_at: now,
                updated_at: now,
            }));
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Up to `limit` messages with `after < id < before` (0 = unbounded), newest first, and
    /// whether more lie beyond the page (older ones, or newer ones when paging with `after`).
    pub async fn messages_page(
        &self,
        room_id: i64,
        before: i64,
        after: i64,
        limit: i64,
    ) -> Result<(Vec<MessageRecord>, bool)> {
        let before = if before > 0 { before } else { i64::MAX };
        let order = if after > 0 && before == i64::MAX {
            "ASC"
        } else {
            "DESC"
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE room_id = $1 AND id > $2 AND id < $3 ORDER BY id {order} LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room_id)
            .bind(after)
            .bind(before)
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await?;
        let has_more = rows.len() as i64 > limit;
        let mut page: Vec<MessageRecord> = rows
            .iter()
            .take(limit as usize)
            .map(message_from_row)
            .collect::<Result<_>>()?;
        if order == "ASC" {
            page.reverse();
        }
        Ok((page, has_more))
    }

    /// Up to `limit` messages after `after`, oldest first (for catching up a stream).
    pub async fn messages_after(
        &self,
        room_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<MessageRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE room_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(message_from_row).collect()
    }
}

fn message_from_row(row: &AnyRow) -> Result<MessageRecord> {
    let metadata: String = row.try_get("metadata")?;
    Ok(MessageRecord {
        room_id: row.try_get("room_id")?,
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        content: row.try_get("content")?,
        message_type: row.try_get("message_type")?,
        metadata: hex::decode(metadata).unwrap_or_default(),
        reply_to_id: row.try_get("reply_to_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
