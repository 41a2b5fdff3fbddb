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
    /// Stores a batch in one transaction; each message gets the next id of its room, in batch
    /// order. Runs of messages without a reply are stored with one id reservation per room and
    /// multi-row `INSERT`s; a reply is checked against everything stored before it, this batch
    /// included.
    pub async fn insert_messages(
        &self,
        batch: &[NewMessage],
    ) -> Result<Vec<std::result::Result<MessageRecord, Rejected>>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let mut out = Vec::with_capacity(batch.len());
        let mut run_start = 0;
        for (i, m) in batch.iter().enumerate() {
            if m.reply_to_id == 0 {
                continue;
            }
            out.extend(store_run(&mut tx, &batch[run_start..i], now).await?);
            run_start = i + 1;
            let found = sqlx::query("SELECT 1 FROM messages WHERE room_id = $1 AND id = $2")
                .bind(m.room_id)
                .bind(m.reply_to_id)
                .fetch_optional(&mut *tx)
                .await?;
            if found.is_none() {
                out.push(Err(Rejected::ReplyNotInRoom));
                continue;
            }
            out.extend(store_run(&mut tx, std::slice::from_ref(m), now).await?);
        }
        out.extend(store_run(&mut tx, &batch[run_start..], now).await?);
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

/// Rows per multi-row `INSERT` of messages (8 parameters each; the rest goes in halving
/// chunks so few distinct statements are prepared).
const INSERT_ROWS: usize = 32;

/// Stores `run` (messages without a reply) in `tx`: reserves each room's ids with one `UPDATE`,
/// then inserts the rows in a few statements.
async fn store_run(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    run: &[NewMessage],
    now: i64,
) -> Result<Vec<std::result::Result<MessageRecord, Rejected>>> {
    // (room, messages in the run, next id to assign; None = no such room)
    let mut rooms: Vec<(i64, i64, Option<i64>)> = Vec::new();
    for m in run {
        match rooms.iter_mut().find(|r| r.0 == m.room_id) {
            Some(r) => r.1 += 1,
            None => rooms.push((m.room_id, 1, None)),
        }
    }
    for (room_id, n, next) in &mut rooms {
        let last = sqlx::query(
            "UPDATE rooms SET last_message_id = last_message_id + $2 WHERE id = $1 RETURNING last_message_id",
        )
        .bind(*room_id)
        .bind(*n)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(last) = last {
            let last: i64 = last.try_get(0)?;
            *next = Some(last - *n + 1);
        }
    }
    let mut out = Vec::with_capacity(run.len());
    for m in run {
        let slot = rooms.iter_mut().find(|r| r.0 == m.room_id);
        let Some(id) = slot.and_then(|r| r.2.as_mut()) else {
            out.push(Err(Rejected::NoSuchRoom));
            continue;
        };
        out.push(Ok(MessageRecord {
            room_id: m.room_id,
            id: *id,
            user_id: m.user_id,
            content: m.content.clone(),
            message_type: m.message_type.clone(),
            metadata: m.metadata.clone(),
            reply_to_id: m.reply_to_id,
            created_at: now,
            updated_at: now,
        }));
        *id += 1;
    }
    let stored: Vec<&MessageRecord> = out.iter().filter_map(|r| r.as_ref().ok()).collect();
    let mut at = 0;
    while at < stored.len() {
        let left = stored.len() - at;
        let n = if left >= INSERT_ROWS {
            INSERT_ROWS
        } else {
            1 << left.ilog2()
        };
        let sql = format!(
            "INSERT INTO messages (room_id, id, user_id, content, message_type, metadata, reply_to_id, created_at, updated_at) VALUES {}",
            message_values(n)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for m in &stored[at..at + n] {
            q = q
                .bind(m.room_id)
                .bind(m.id)
                .bind(m.user_id)
                .bind(m.content.as_str())
                .bind(m.message_type.as_str())
                .bind(hex::encode(&m.metadata))
                .bind(m.reply_to_id)
                .bind(now);
        }
        q.execute(&mut **tx).await?;
        at += n;
    }
    Ok(out)
}

/// `($1,…,$8,$8),($9,…)`: eight parameters per row, `created_at` doubling as `updated_at`.
fn message_values(rows: usize) -> String {
    let mut s = String::with_capacity(rows * 40);
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 1..=8 {
            s.push('$');
            s.push_str(&(r * 8 + c).to_string());
            s.push(',');
        }
        s.push('$');
        s.push_str(&(r * 8 + 8).to_string());
        s.push(')');
    }
    s
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

#[cfg(test)]
mod tests {
    #[test]
    fn values_repeat_created_at() {
        assert_eq!(
            super::message_values(2),
            "($1,$2,$3,$4,$5,$6,$7,$8,$8),($9,$10,$11,$12,$13,$14,$15,$16,$16)"
        );
    }
}
