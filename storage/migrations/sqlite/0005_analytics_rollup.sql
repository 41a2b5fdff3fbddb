-- Per-hour rollup of analytics events, maintained by the batch writer in the same transaction
-- as the events: hourly GetAnalytics reads one row per hour instead of every event.
-- `event_hours`: events and distinct non-zero users per (type, hour).
CREATE TABLE event_hours (
    event_type TEXT NOT NULL,
    hour BIGINT NOT NULL,
    n BIGINT NOT NULL,
    users BIGINT NOT NULL,
    PRIMARY KEY (event_type, hour)
) WITHOUT ROWID;
-- The users seen per (type, hour): an insert that is not a conflict is a new distinct user.
CREATE TABLE event_hour_users (
    event_type TEXT NOT NULL,
    hour BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    PRIMARY KEY (event_type, hour, user_id)
) WITHOUT ROWID;
INSERT INTO event_hour_users (event_type, hour, user_id)
    SELECT DISTINCT event_type, hour, user_id FROM events WHERE user_id <> 0;
INSERT INTO event_hours (event_type, hour, n, users)
    SELECT event_type, hour, COUNT(*), COUNT(DISTINCT CASE WHEN user_id <> 0 THEN user_id END)
    FROM events GROUP BY event_type, hour;
