-- Media claims and privacy.
-- upload_gen: bumped by every upload stream that starts; progress is recorded only by the stream
--   holding the current generation, so a newer stream (a client resuming) supersedes an old one.
-- claimed_by / claim_until: the instance processing a `processing` track and until when (ms);
--   renewed while it works, taken over by any instance once it has expired.
-- is_private: 1 = only the owner (and admins) may see and play the track.
ALTER TABLE media ADD COLUMN upload_gen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE media ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE media ADD COLUMN claim_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE media ADD COLUMN is_private BIGINT NOT NULL DEFAULT 0;
CREATE INDEX media_claims ON media(status, claim_until);
