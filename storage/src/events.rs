//! The analytics events repository: batched inserts, time buckets computed in SQL, and pruning.
//!
//! Event ids are assigned by the server (time-ordered, see the domain's id generator), so a batch
//! goes in as a few multi-row `INSERT`s in one transaction. Properties live one per row in
//! `event_properties(event_id, key, value)` so `group_by` is a join on the primary key.

use sqlx::Row;

use crate::batch::{chunks, values};
use crate::event_record::EventRecord;
use crate::rollup::{self, HOUR_MS};
use crate::{Db, error::Result, now_ms};

/// What [`Db::event_buckets`] counts.
#[derive(Debug, Clone)]
pub struct BucketQuery<'a> {
    pub event_type: &'a str,
    /// Inclusive, ms.
    pub from: i64,
    /// Exclusive, ms.
    pub to: i64,
    pub interval_ms: i64,
    /// A property name to group by.
    pub group_by: Option<&'a str>,
}

/// One (bucket, group) of [`Db::event_buckets`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketRow {
    /// `(ts - from) / interval_ms`.
    pub bucket: i64,
    /// The group's property value ("" when not grouped or when the event lacks the property).
    pub group: String,
    pub count: i64,
    /// Distinct non-zero user ids.
    pub unique_users: i64,
}

impl Db {
    /// Registers a starting analytics writer and returns its node number (unique per start).
    pub async fn register_analytics_node(&self) -> Result<i64> {
        let row = sqlx::query("INSERT INTO analytics_nodes (started_at) VALUES ($1) RETURNING id")
            .bind(now_ms())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Writes a batch of events and their properties in one transaction.
    pub async fn insert_events(&self, events: &[EventRecord]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        let mut at = 0;
        for n in chunks(events.len()) {
            let sql = format!(
                "INSERT INTO events (id, event_type, user_id, ts, hour, source) VALUES {}",
                values(n, 6, 1)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in &events[at..at + n] {
                q = q
                    .bind(e.id)
                    .bind(e.event_type.as_str())
                    .bind(e.user_id)
                    .bind(e.ts)
                    .bind(e.ts.div_euclid(HOUR_MS))
                    .bind(e.source.as_str());
            }
            q.execute(&mut *tx).await?;
            at += n;
        }
        let props: Vec<(i64, &str, &str)> = events
            .iter()
            .flat_map(|e| {
                e.properties
                    .iter()
                    .map(move |(k, v)| (e.id, k.as_str(), v.as_str()))
            })
            .collect();
        let mut at = 0;
        for n in chunks(props.len()) {
            let sql = format!(
                "INSERT INTO event_properties (event_id, key, value) VALUES {}",
                values(n, 3, 1)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, k, v) in &props[at..at + n] {
                q = q.bind(*id).bind(*k).bind(*v);
            }
            q.execute(&mut *tx).await?;
            at += n;
        }
        rollup::add(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes `events` like [`insert_events`](Self::insert_events), but a batch the database
    /// refuses for its rows (a NUL on PostgreSQL, a duplicate id) is split in halves until the
    /// bad events are alone: those are left out and returned, everything else is written.
    /// Other errors (the database is down) are returned as they are.
    pub async fn insert_events_isolating(&self, events: &[EventRecord]) -> Result<Vec<i64>> {
        let mut refused = Vec::new();
        let mut todo = Vec::new();
        todo.push(0..events.len());
        while let Some(range) = todo.pop() {
            let part = &events[range.clone()];
            match self.insert_events(part).await {
                Ok(()) => {}
                Err(e) if e.is_bad_row() && part.len() > 1 => {
                    let mid = range.start + part.len() / 2;
                    todo.push(mid..range.end);
                    todo.push(range.start..mid);
                }
                Err(e) if e.is_bad_row() => {
                    tracing::error!(error = %e, event_id = part[0].id, "the database refused an analytics event; dropping it");
                    refused.extend(part.iter().map(|e| e.id));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(refused)
    }

    /// Counts and distinct users per time bucket (and group), computed in SQL.
    ///
    /// Ungrouped hourly buckets starting on the hour read the per-hour rollup (one row per
    /// hour); a last partial hour (`to` not on the hour) is counted from the events, grouping by
    /// the `hour` column, which the index `(event_type, hour, user_id, ts)` delivers in order.
    /// Everything else buckets with `(ts - from) / interval` in two levels (per bucket, group and
    /// user, then per bucket and group); the index still narrows the scan to the hours of the
    /// range.
    pub async fn event_buckets(&self, q: &BucketQuery<'_>) -> Result<Vec<BucketRow>> {
        let first_hour = q.from.div_euclid(HOUR_MS);
        let end_hour = (q.to - 1).div_euclid(HOUR_MS) + 1;
        let hourly =
            q.group_by.is_none() && q.interval_ms == HOUR_MS && q.from.rem_euclid(HOUR_MS) == 0;
        if hourly {
            let whole_end = q.to.div_euclid(HOUR_MS);
            let mut out: Vec<BucketRow> = self
                .rollup_hours(q.event_type, first_hour, whole_end)
                .await?
                .into_iter()
                .map(|h| BucketRow {
                    bucket: h.hour - first_hour,
                    group: String::new(),
                    count: h.count,
                    unique_users: h.users,
                })
                .collect();
            if whole_end < end_hour {
                out.extend(
                    self.raw_hours(q, whole_end.max(first_hour), first_hour)
                        .await?,
                );
            }
            return Ok(out);
        }
        let (join, group) = match q.group_by {
            Some(_) => (
                "LEFT JOIN event_properties p ON p.event_id = e.id AND p.key = $7",
                "COALESCE(p.value, '')",
            ),
            None => ("", "''"),
        };
        let sql = format!(
            "SELECT b, g, CAST(SUM(c) AS BIGINT) AS c, CAST(SUM(CASE WHEN u <> 0 THEN 1 ELSE 0 END) AS BIGINT) AS u FROM (\
               SELECT (e.ts - $1) / $2 AS b, {group} AS g, e.user_id AS u, COUNT(*) AS c \
               FROM events e {join} \
               WHERE e.event_type = $3 AND e.hour >= $5 AND e.hour < $6 AND e.ts >= $1 AND e.ts < $4 \
               GROUP BY b, g, u\
             ) t GROUP BY b, g ORDER BY b, g"
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(q.from)
            .bind(q.interval_ms)
            .bind(q.event_type)
            .bind(q.to)
            .bind(first_hour)
            .bind(end_hour);
        let query = match q.group_by {
            Some(key) => query.bind(key),
            None => query,
        };
        bucket_rows(query.fetch_all(&self.pool).await?)
    }

    /// Hourly buckets counted from the events themselves, for the hours from `first` up to
    /// `q.to`; bucket numbers count from `origin`.
    async fn raw_hours(
        &self,
        q: &BucketQuery<'_>,
        first: i64,
        origin: i64,
    ) -> Result<Vec<BucketRow>> {
        let end_hour = (q.to - 1).div_euclid(HOUR_MS) + 1;
        let rows = sqlx::query(
            "SELECT hour - $1 AS b, '' AS g, COUNT(*) AS c, \
               COUNT(DISTINCT CASE WHEN user_id <> 0 THEN user_id END) AS u \
             FROM events WHERE event_type = $2 AND hour >= $5 AND hour < $3 AND ts < $4 \
             GROUP BY hour ORDER BY hour",
        )
        .bind(origin)
        .bind(q.event_type)
        .bind(end_hour)
        .bind(q.to)
        .bind(first)
        .fetch_all(&self.pool)
        .await?;
        bucket_rows(rows)
    }

    /// How many events of `event_type` with property `key` = `value` have a timestamp in
    /// `from..to` (ms); the index on (type, hour, …) narrows the scan to the hours of the range.
    pub async fn count_events_with(
        &self,
        event_type: &str,
        key: &str,
        value: &str,
        from: i64,
        to: i64,
    ) -> Result<i64> {
        if from >= to {
            return Ok(0);
        }
        let row = sqlx::query(
            "SELECT COUNT(*) AS c FROM events e \
             JOIN event_properties p ON p.event_id = e.id AND p.key = $1 AND p.value = $2 \
             WHERE e.event_type = $3 AND e.hour >= $4 AND e.hour < $5 AND e.ts >= $6 AND e.ts < $7",
        )
        .bind(key)
        .bind(value)
        .bind(event_type)
        .bind(from.div_euclid(HOUR_MS))
        .bind((to - 1).div_euclid(HOUR_MS) + 1)
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("c")?)
    }

    /// Deletes up to `limit` events with an id below `before_id` (and their properties); returns
    /// how many events went.
    pub async fn prune_events(&self, before_id: i64, limit: i64) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM (SELECT id FROM events WHERE id < $1 ORDER BY id LIMIT $2) t")
            .bind(before_id)
            .bind(limit)
            .fetch_one(&mut *tx)
            .await?;
        let upto: i64 = row.try_get(0)?;
        if upto == 0 {
            return Ok(0);
        }
        sqlx::query("DELETE FROM event_properties WHERE event_id <= $1")
            .bind(upto)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM events WHERE id <= $1")
            .bind(upto)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}

fn bucket_rows(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<BucketRow>> {
    rows.iter()
        .map(|r| {
            Ok(BucketRow {
                bucket: r.try_get("b")?,
                group: r.try_get("g")?,
                count: r.try_get("c")?,
                unique_users: r.try_get("u")?,
            })
        })
        .collect()
}
