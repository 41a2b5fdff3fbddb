-- Notifications and analytics events.
-- One row per user serialising that user's notification inserts: `last_seq` numbers them 1, 2, 3…
-- so a stream can tell a gap from a skip (see docs/ARCHITECTURE.md).
CREATE TABLE notification_heads (
    user_id BIGINT PRIMARY KEY,
    last_seq BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users(id),
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    is_read BIGINT NOT NULL DEFAULT 0,
    read_at BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE INDEX notifications_user ON notifications(user_id, id);
CREATE INDEX notifications_user_unread ON notifications(user_id, is_read, id);
-- Analytics: ids are assigned by the server (time-ordered, unique per node), so a batch is
-- written without a round trip per row, and retention prunes by id range.
CREATE TABLE analytics_nodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at BIGINT NOT NULL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    event_type TEXT NOT NULL,
    user_id BIGINT NOT NULL DEFAULT 0,
    ts BIGINT NOT NULL,
    -- ts / 3600000: hourly buckets group on this column in index order (no sort).
    hour BIGINT NOT NULL,
    source TEXT NOT NULL DEFAULT ''
);
-- Covers GetAnalytics: the range scan never touches the table.
CREATE INDEX events_type_hour ON events(event_type, hour, user_id, ts);
-- One row per property, for group_by.
CREATE TABLE event_properties (
    event_id BIGINT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (event_id, key)
) WITHOUT ROWID;
