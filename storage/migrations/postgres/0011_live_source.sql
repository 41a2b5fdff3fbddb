-- Icecast sources (issue 19).
-- stream_key_hash: hex SHA-256 of the live stream's source password (StartStreamResponse.
--   stream_key, shown once); '' = none (tracks, and streams started before this migration).
ALTER TABLE media ADD COLUMN stream_key_hash TEXT NOT NULL DEFAULT '';
