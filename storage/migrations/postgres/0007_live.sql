-- Live streams: whether the broadcast is recorded (it becomes a track with the same id when it
-- ends). `updated_at` doubles as the ingest heartbeat of a live stream: the instance holding its
-- producer refreshes it, so streams whose instance died are ended by any other one.
ALTER TABLE media ADD COLUMN live_record BIGINT NOT NULL DEFAULT 0;
