-- Media: tracks and live streams, one id space.
-- kind: 'track' | 'live'; status: uploading | processing | ready | failed | live | ended.
-- An upload is stored as one object per chunk (uploads/<id>/<index>); `chunks_received` and
-- `bytes_received` count what is durable, so a broken upload resumes (also after a restart).
CREATE TABLE media (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    owner_id BIGINT NOT NULL REFERENCES users(id),
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    genre TEXT NOT NULL DEFAULT '',
    file_format TEXT NOT NULL DEFAULT '',
    file_size BIGINT NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    error_message TEXT NOT NULL DEFAULT '',
    bytes_received BIGINT NOT NULL DEFAULT 0,
    chunks_received BIGINT NOT NULL DEFAULT 0,
    sha256 TEXT NOT NULL DEFAULT '',
    duration_ms BIGINT NOT NULL DEFAULT 0,
    source_codec TEXT NOT NULL DEFAULT '',
    sample_rate BIGINT NOT NULL DEFAULT 0,
    channels BIGINT NOT NULL DEFAULT 0,
    renditions TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX media_status ON media(status, id);
CREATE INDEX media_owner ON media(owner_id, id);
-- The secret that signs media URLs, shared by every instance (row id 1).
CREATE TABLE media_url_keys (
    id BIGINT PRIMARY KEY,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
