-- Processing attempts (issue 15, decompression bombs).
-- processing_attempts: how many times processing of the track has started, counted before the
--   work begins, so a crash or restart mid-attempt counts too; past `--processing-attempts`
--   the track is failed instead of being handed out again.
ALTER TABLE media ADD COLUMN processing_attempts BIGINT NOT NULL DEFAULT 0;
