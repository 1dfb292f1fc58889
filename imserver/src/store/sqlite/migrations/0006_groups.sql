-- Groups (issue 11), and when users were last seen. A group's messages are appended to every member's stream (see
-- `writer.rs`); in `conversation_chunks` and `read_positions` a group is the peer `-id`, so
-- that it never meets a user's id.

-- AUTOINCREMENT: a deleted group's id is never given to another (members' streams still name
-- it).
CREATE TABLE groups (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    name  TEXT NOT NULL,
    owner INTEGER NOT NULL REFERENCES users (id)
);

-- Members in the order they joined (`since` grows with each join of the group): when the
-- owner leaves, the longest-standing member owns the group.
CREATE TABLE group_members (
    group_id INTEGER NOT NULL REFERENCES groups (id),
    user_id  INTEGER NOT NULL REFERENCES users (id),
    since    INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
CREATE INDEX group_members_user ON group_members (user_id, group_id);

-- When a user's last connection closed (Unix seconds), for `GET /presence`.
ALTER TABLE users ADD COLUMN last_seen INTEGER;
