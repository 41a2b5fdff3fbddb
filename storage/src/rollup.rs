//! The per-hour analytics rollup: events and distinct users per (event type, hour), kept up to
//! date by [`Db::insert_events`] in the events' own transaction, so hourly `GetAnalytics` reads
//! one row per hour whatever the number of events.
//!
//! Distinct users stay exact across batches and instances: `event_hour_users` holds each
//! (type, hour, user) once, and a batch counts as new users only the rows its
//! `INSERT … ON CONFLICT DO NOTHING` really inserted.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::Row;

use crate::batch::{chunks, values};
use crate::{Db, error::Result, event_record::EventRecord};

/// One hour in ms: the rollup's granularity.
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// One hour of the rollup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HourRow {
    pub hour: i64,
    pub count: i64,
    pub users: i64,
}

/// Adds a batch of events to the rollup inside `tx`.
pub(crate) async fn add(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    events: &[EventRecord],
) -> Result<()> {
    // Sorted keys: concurrent writers lock rows in the same order.
    let mut hours: BTreeMap<(&str, i64), (i64, BTreeSet<i64>)> = BTreeMap::new();
    for e in events {
        let slot = hours
            .entry((e.event_type.as_str(), e.ts.div_euclid(HOUR_MS)))
            .or_default();
        slot.0 += 1;
        if e.user_id != 0 {
            slot.1.insert(e.user_id);
        }
    }
    for ((event_type, hour), (count, users)) in hours {
        let users: Vec<i64> = users.into_iter().collect();
        let mut new_users = 0;
        let mut at = 0;
        for n in chunks(users.len()) {
            let sql = format!(
                "INSERT INTO event_hour_users (event_type, hour, user_id) \
                 SELECT $1, $2, column1 FROM (VALUES {}) v WHERE true ON CONFLICT DO NOTHING",
                values(n, 1, 3)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(event_type)
                .bind(hour);
            for u in &users[at..at + n] {
                q = q.bind(*u);
            }
            new_users += q.execute(&mut **tx).await?.rows_affected() as i64;
            at += n;
        }
        sqlx::query(
            "INSERT INTO event_hours (event_type, hour, n, users) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (event_type, hour) DO UPDATE \
             SET n = event_hours.n + excluded.n, users = event_hours.users + excluded.users",
        )
        .bind(event_type)
        .bind(hour)
        .bind(count)
        .bind(new_users)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Db {
    /// The rollup rows of `event_type` for hours `first..end`, in hour order (hours without
    /// events have no row).
    pub(crate) async fn rollup_hours(
        &self,
        event_type: &str,
        first: i64,
        end: i64,
    ) -> Result<Vec<HourRow>> {
        let rows = sqlx::query(
            "SELECT hour, n, users FROM event_hours \
             WHERE event_type = $1 AND hour >= $2 AND hour < $3 ORDER BY hour",
        )
        .bind(event_type)
        .bind(first)
        .bind(end)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HourRow {
                    hour: r.try_get(0)?,
                    count: r.try_get(1)?,
                    users: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// Drops the rollup of the hours before `before_hour` (retention); returns the hour rows
    /// removed.
    pub async fn prune_rollup(&self, before_hour: i64) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM event_hour_users WHERE hour < $1")
            .bind(before_hour)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM event_hours WHERE hour < $1")
            .bind(before_hour)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}
