//! Notifications: created by admins and services (`SendNotification`) or by the server itself
//! (`mention`, `track_ready`, `track_failed`), read and marked by their owner, and streamed live
//! across instances through the bus, gap-free and duplicate-free.
//!
//! Every notification carries a per-user sequence number (1, 2, 3…) assigned under a per-user
//! lock, so for one user ids and sequence numbers grow in commit order. A stream subscribes to the
//! user's bus subject first, then reads the database after the client's last id, then takes live
//! notifications: the next sequence number is delivered straight from the bus message, an id
//! already delivered is skipped, and anything else (a gap: messages published out of order, a
//! lagging subscriber) is settled by reading the database after the last delivered id.

use std::{collections::HashMap, sync::Arc};

use futures::{Stream, StreamExt};
use veza_storage::{Db, NewNotification, NotificationRecord};

use super::error::{DomainError, Result};
use crate::{
    bus::{Bus, BusEvent, Subscription},
    caller::Caller,
    metrics::Metrics,
};

/// Most recipients of one send.
pub const MAX_RECIPIENTS: usize = 1000;
/// Largest page of `GetNotifications`.
pub const MAX_PAGE_SIZE: i32 = 100;
/// Page size when the request names none.
pub const DEFAULT_PAGE_SIZE: i32 = 20;
/// Most ids in one `MarkAsRead`.
pub const MAX_MARK_IDS: usize = 1000;
/// Rows read per database round trip while catching a stream up.
const CATCH_UP_BATCH: i64 = 500;

/// A notification as the domain hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: i64,
    pub user_id: i64,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub data: HashMap<String, String>,
    pub read: bool,
    pub created_at: i64,
    pub read_at: i64,
}

/// One page of a user's notifications.
#[derive(Debug, Clone)]
pub struct NotificationPage {
    pub notifications: Vec<Notification>,
    pub page: i32,
    pub page_size: i32,
    pub total: i64,
    pub total_pages: i64,
    pub unread_count: i64,
}

/// Creates, lists, marks and streams notifications. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    db: Db,
    bus: Bus,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// Notifications over this database and bus.
    pub fn new(db: Db, bus: Bus, metrics: Arc<Metrics>) -> Notifier {
        Notifier { db, bus, metrics }
    }

    /// Stores one notification per user and publishes them; no permission check (for the server's
    /// own producers: `mention`, `track_ready`, `track_failed`…). Repeated ids are notified once;
    /// the ids come back in the order of first appearance.
    pub async fn create(
        &self,
        user_ids: &[i64],
        kind: &str,
        title: &str,
        body: &str,
        data: HashMap<String, String>,
    ) -> Result<Vec<i64>> {
        let users = super::validate::ids("user_ids", user_ids, MAX_RECIPIENTS, "user")?;
        if users.is_empty() {
            return Err(DomainError::invalid(
                "user_ids",
                "at least one recipient is required",
            ));
        }
        let kind = check_kind(kind)?;
        let title = super::validate::text("title", title, 200)?;
        if title.is_empty() {
            return Err(DomainError::invalid("title", "must not be empty"));
        }
        let body = super::validate::body("body", body, 4000)?;
        check_data(&data)?;
        let missing = self.db.missing_users(&users).await?;
        if let Some(first) = missing.first() {
            return Err(DomainError::NotFound(format!("user {first} not found")));
        }
        let data_json = serde_json::to_string(&data).map_err(anyhow::Error::from)?;
        let new = NewNotification {
            kind: &kind,
            title: &title,
            body: &body,
            data_json: &data_json,
        };
        let records = self.db.insert_notifications(&users, &new).await?;
        self.metrics
            .notifications_created
            .inc_by(records.len() as u64);
        for r in &records {
            self.publish(r).await;
        }
        Ok(records.iter().map(|r| r.id).collect())
    }

    /// `SendNotification`: admins and API keys with `notifications:send`.
    pub async fn send(
        &self,
        caller: &Caller,
        user_ids: &[i64],
        kind: &str,
        title: &str,
        body: &str,
        data: HashMap<String, String>,
    ) -> Result<Vec<i64>> {
        if !caller.has_scope("notifications:send") {
            return Err(DomainError::denied(
                "sending notifications needs the admin role or an API key with notifications:send",
            ));
        }
        self.create(user_ids, kind, title, body, data).await
    }

    /// The caller's notifications, newest first. `page` starts at 1 (0 = 1); `page_size` 0 means
    /// 20, above 100 is capped to 100.
    pub async fn list(
        &self,
        caller: &Caller,
        page: i32,
        page_size: i32,
        unread_only: bool,
    ) -> Result<NotificationPage> {
        let user_id = owner(caller)?;
        if page < 0 {
            return Err(DomainError::invalid("pagination.page", "must be 1 or more"));
        }
        if page_size < 0 {
            return Err(DomainError::invalid(
                "pagination.page_size",
                "must be 1 to 100",
            ));
        }
        let page = page.max(1);
        let page_size = if page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            page_size.min(MAX_PAGE_SIZE)
        };
        let counts = self.db.notification_counts(user_id).await?;
        let total = if unread_only {
            counts.unread
        } else {
            counts.total
        };
        let offset = (i64::from(page) - 1) * i64::from(page_size);
        let rows = if offset < total {
            self.db
                .notifications_page(user_id, unread_only, i64::from(page_size), offset)
                .await?
        } else {
            vec![]
        };
        Ok(NotificationPage {
            notifications: rows.into_iter().map(to_notification).collect(),
            page,
            page_size,
            total,
            total_pages: (total + i64::from(page_size) - 1) / i64::from(page_size),
            unread_count: counts.unread,
        })
    }

    /// Marks the caller's notifications read: the listed ids, or every one with `all`. Ids that
    /// are not the caller's (or do not exist) are left alone and not counted, so nothing is
    /// learnt about other users' notifications. Returns (updated, unread left).
    pub async fn mark_read(&self, caller: &Caller, ids: &[i64], all: bool) -> Result<(i64, i64)> {
        let user_id = owner(caller)?;
        let updated = if all {
            self.db.mark_all_notifications_read(user_id).await?
        } else {
            if ids.is_empty() {
                return Err(DomainError::invalid(
                    "notification_ids",
                    "name at least one id, or set all",
                ));
            }
            let mut ids =
                super::validate::ids("notification_ids", ids, MAX_MARK_IDS, "notification")?;
            ids.sort_unstable();
            self.db.mark_notifications_read(user_id, &ids).await?
        };
        let unread = self.db.notification_counts(user_id).await?.unread;
        Ok((updated as i64, unread))
    }

    /// The caller's notifications after `last_id`, then live ones: each exactly once, in order.
    pub async fn stream(
        &self,
        caller: &Caller,
        last_id: i64,
    ) -> Result<impl Stream<Item = Result<Notification>> + Send + 'static + use<>> {
        let user_id = owner(caller)?;
        if last_id < 0 {
            return Err(DomainError::invalid(
                "last_notification_id",
                "must not be negative",
            ));
        }
        // Subscribe first: whatever commits after the catch-up read is on the bus.
        let sub = self
            .bus
            .subscribe(&subject(user_id))
            .await
            .map_err(anyhow::Error::from)?;
        let mut state = StreamState {
            db: self.db.clone(),
            sub,
            user_id,
            last_id,
            last_seq: None,
            pending: Default::default(),
            failed: false,
        };
        state.catch_up().await?;
        Ok(futures::stream::unfold(state, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        }))
    }

    async fn publish(&self, r: &NotificationRecord) {
        match serde_json::to_vec(r) {
            Ok(payload) => {
                if let Err(e) = self.bus.publish(subject(r.user_id), payload.into()).await {
                    tracing::error!(error = %e, "publishing a notification");
                }
            }
            Err(e) => tracing::error!(error = %e, "encoding a notification"),
        }
    }
}

struct StreamState {
    db: Db,
    sub: Subscription,
    user_id: i64,
    /// The last id delivered (or the client's starting point).
    last_id: i64,
    /// The per-user sequence number of `last_id`, once known.
    last_seq: Option<i64>,
    pending: std::collections::VecDeque<NotificationRecord>,
    failed: bool,
}

impl StreamState {
    /// Queues everything stored after `last_id`.
    async fn catch_up(&mut self) -> Result<()> {
        let mut after = self.pending.back().map_or(self.last_id, |r| r.id);
        loop {
            let rows = self
                .db
                .notifications_after(self.user_id, after, CATCH_UP_BATCH)
                .await?;
            let n = rows.len() as i64;
            if let Some(last) = rows.last() {
                after = last.id;
            }
            self.pending.extend(rows);
            if n < CATCH_UP_BATCH {
                return Ok(());
            }
        }
    }

    async fn next(&mut self) -> Option<Result<Notification>> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(r) = self.pending.pop_front() {
                if r.id <= self.last_id {
                    continue;
                }
                self.last_id = r.id;
                self.last_seq = Some(r.seq);
                return Some(Ok(to_notification(r)));
            }
            match self.sub.next().await? {
                BusEvent::Message(m) => {
                    let Ok(r) = serde_json::from_slice::<NotificationRecord>(&m.payload) else {
                        tracing::warn!("ignoring a malformed notification on the bus");
                        continue;
                    };
                    if r.user_id != self.user_id || r.id <= self.last_id {
                        continue;
                    }
                    if self.last_seq.is_some_and(|s| r.seq == s + 1) {
                        self.pending.push_back(r);
                    } else if let Err(e) = self.catch_up().await {
                        self.failed = true;
                        return Some(Err(e));
                    }
                }
                BusEvent::Lagged(n) => {
                    tracing::warn!(
                        lost = n,
                        user_id = self.user_id,
                        "notification stream lagged; reading the database"
                    );
                    if let Err(e) = self.catch_up().await {
                        self.failed = true;
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

/// The bus subject of a user's notifications.
pub fn subject(user_id: i64) -> String {
    format!("veza.notify.user.{user_id}")
}

fn owner(caller: &Caller) -> Result<i64> {
    caller.user_id().ok_or_else(|| {
        DomainError::denied("notifications belong to users: call with a user's access token")
    })
}

fn check_kind(kind: &str) -> Result<String> {
    let k = kind.trim();
    if k.is_empty() || k.len() > 64 {
        return Err(DomainError::invalid("type", "must be 1 to 64 characters"));
    }
    if !k
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
    {
        return Err(DomainError::invalid(
            "type",
            "may contain only letters, digits, '_', '.', ':' and '-'",
        ));
    }
    Ok(k.to_string())
}

fn check_data(data: &HashMap<String, String>) -> Result<()> {
    if data.len() > 64 {
        return Err(DomainError::invalid("data", "at most 64 entries"));
    }
    for (k, v) in data {
        if k.is_empty() || k.len() > 128 {
            return Err(DomainError::invalid("data", "keys must be 1 to 128 bytes"));
        }
        super::validate::no_control("data", k)?;
        super::validate::body_chars("data", v)?;
        if v.len() > 4096 {
            return Err(DomainError::invalid(
                "data",
                format!("value of {k:?} is longer than 4096 bytes"),
            ));
        }
    }
    Ok(())
}

fn to_notification(r: NotificationRecord) -> Notification {
    let data = serde_json::from_str(&r.data_json).unwrap_or_else(|e| {
        tracing::warn!(error = %e, id = r.id, "stored notification data is not a JSON object");
        HashMap::new()
    });
    Notification {
        id: r.id,
        user_id: r.user_id,
        kind: r.kind,
        title: r.title,
        body: r.body,
        data,
        read: r.read,
        created_at: r.created_at,
        read_at: r.read_at,
    }
}
