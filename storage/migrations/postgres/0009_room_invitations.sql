-- Invitations to a room: `member_ids` at creation invite, the invitee accepts by joining
-- (nobody is made a member of a room without their consent).
CREATE TABLE room_invitations (
    room_id BIGINT NOT NULL REFERENCES rooms(id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    invited_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_invitations_user ON room_invitations(user_id);
