//! The notifications repository: per-user notifications, numbered 1, 2, 3… per user (`seq`) so a
//! stream can tell a gap from a duplicate.
//!
//! Inserts for one user are serialised by an upsert on that user's `notification_heads` row, taken
//! in ascending user order inside the inserting transaction: for any user, ids and `seq` grow in
//! commit order, so whoever has seen notification `n` of a user has seen every earlier one.

use sqlx::{Row, any::AnyRow};

use crate::{Db, error::Result, now_ms};

/// A stored notification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NotificationRecord {
    pub id: i64,
    pub user_id: i64,
    /// 1, 2, 3… per user, in commit order.
    pub seq: i64,
    pub kind: String,
    pub title: String,
    pub body: String,
    /// The `data` map as a JSON object.
    pub data_json: String,
    pub read: bool,
    pub created_at: i64,
    pub read_at: i64,
}

/// The fields of a notification to create.
#[derive(Debug, Clone)]
pub struct NewNotification<'a> {
    pub kind: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    pub data_json: &'a str,
}

/// A user's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotificationCounts {
    pub total: i64,
    pub unread: i64,
}

const COLUMNS: &str = "id, user_id, seq, kind, title, body, data, is_read, created_at, read_at";

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Db {
    /// Which of `ids` name no user.
    pub async fn missing_users(&self, ids: &[i64]) -> Result<Vec<i64>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let sql = format!(
            "SELECT id FROM users WHERE id IN ({})",
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(*id);
        }
        let found: std::collections::HashSet<i64> = q
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<std::result::Result<_, _>>()?;
        Ok(ids
            .iter()
            .copied()
            .filter(|id| !found.contains(id))
            .collect())
    }

    /// Stores one notification per user in one transaction; the records come back in the order of
    /// `user_ids` (which must not repeat).
    pub async fn insert_notifications(
        &self,
        user_ids: &[i64],
        n: &NewNotification<'_>,
    ) -> Result<Vec<NotificationRecord>> {
        let mut order: Vec<i64> = user_ids.to_vec();
        order.sort_unstable();
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let mut by_user = std::collections::HashMap::with_capacity(order.len());
        let insert = format!(
            "INSERT INTO notifications (user_id, seq, kind, title, body, data, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
        );
        for user_id in order {
            let head = sqlx::query(
                "INSERT INTO notification_heads (user_id, last_seq) VALUES ($1, 1) \
                 ON CONFLICT (user_id) DO UPDATE SET last_seq = notification_heads.last_seq + 1 RETURNING last_seq",
            )
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
            let seq: i64 = head.try_get(0)?;
            let row = sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                .bind(user_id)
                .bind(seq)
                .bind(n.kind)
                .bind(n.title)
                .bind(n.body)
                .bind(n.data_json)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            by_user.insert(user_id, notification_from_row(&row)?);
        }
        tx.commit().await?;
        Ok(user_ids.iter().filter_map(|u| by_user.remove(u)).collect())
    }

    /// One page of a user's notifications, newest first.
    pub async fn notifications_page(
        &self,
        user_id: i64,
        unread_only: bool,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<NotificationRecord>> {
        let filter = if unread_only { "AND is_read = 0" } else { "" };
        let sql = format!(
            "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 {filter} ORDER BY id DESC LIMIT $2 OFFSET $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(notification_from_row).collect()
    }

    /// How many notifications a user has, and how many of them are unread.
    pub async fn notification_counts(&self, user_id: i64) -> Result<NotificationCounts> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS total, COALESCE(SUM(CASE WHEN is_read = 0 THEN 1 ELSE 0 END), 0) AS unread \
             FROM notifications WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(NotificationCounts {
            total: row.try_get("total")?,
            unread: row.try_get("unread")?,
        })
    }

    /// A user's notifications with an id above `after_id`, oldest first, at most `limit`.
    pub async fn notifications_after(
        &self,
        user_id: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<NotificationRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(after_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(notification_from_row).collect()
    }

    /// Marks those of `ids` that belong to `user_id` and are unread as read; returns how many.
    pub async fn mark_notifications_read(&self, user_id: i64, ids: &[i64]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "UPDATE notifications SET is_read = 1, read_at = $1 WHERE user_id = $2 AND is_read = 0 AND id IN ({})",
            placeholders(3, ids.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms())
            .bind(user_id);
        for id in ids {
            q = q.bind(*id);
        }
        Ok(q.execute(&self.pool).await?.rows_affected())
    }

    /// Marks every unread notification of `user_id` as read; returns how many.
    pub async fn mark_all_notifications_read(&self, user_id: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE notifications SET is_read = 1, read_at = $1 WHERE user_id = $2 AND is_read = 0",
        )
        .bind(now_ms())
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

fn notification_from_row(row: &AnyRow) -> Result<NotificationRecord> {
    let read: i64 = row.try_get("is_read")?;
    Ok(NotificationRecord {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        data_json: row.try_get("data")?,
        read: read != 0,
        created_at: row.try_get("created_at")?,
        read_at: row.try_get("read_at")?,
    })
}
