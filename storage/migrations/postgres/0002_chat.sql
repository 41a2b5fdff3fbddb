-- Chat: rooms, members, messages. Message ids are per room, assigned from rooms.last_message_id
-- inside the inserting transaction, so they grow in commit order.
CREATE TABLE rooms (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    is_private BIGINT NOT NULL DEFAULT 0,
    owner_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    last_message_id BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE room_members (
    room_id BIGINT NOT NULL REFERENCES rooms(id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_user ON room_members(user_id);
CREATE TABLE messages (
    room_id BIGINT NOT NULL REFERENCES rooms(id),
    id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    content TEXT NOT NULL,
    message_type TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '',
    reply_to_id BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, id)
);
