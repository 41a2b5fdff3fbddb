-- Upload fields kept instead of dropped (issue 17).
-- metadata: UploadAudioRequest.metadata, opaque bytes (at most 16 KiB, checked by the server),
--   hex-encoded like messages.metadata; '' = none.
-- claimed_duration: UploadAudioRequest.duration, the client's claim in seconds (0 = none); the
--   measured duration stays in duration_ms.
ALTER TABLE media ADD COLUMN metadata TEXT NOT NULL DEFAULT '';
ALTER TABLE media ADD COLUMN claimed_duration BIGINT NOT NULL DEFAULT 0;
