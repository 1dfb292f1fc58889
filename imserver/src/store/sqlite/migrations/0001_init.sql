-- Accounts. `id` is the user id; new ids are the highest existing one plus one
-- (SQLite's INTEGER PRIMARY KEY does exactly that).
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    sex           TEXT NOT NULL,
    email         TEXT NOT NULL,
    signature     TEXT NOT NULL,
    password_hash TEXT NOT NULL  -- argon2id, PHC string format
);

-- Friendship is mutual: stored as two rows, one per direction.
CREATE TABLE friendships (
    user_id   INTEGER NOT NULL REFERENCES users (id),
    friend_id INTEGER NOT NULL REFERENCES users (id),
    PRIMARY KEY (user_id, friend_id)
) WITHOUT ROWID;

-- One row per inbox. The owner is a user id as on the wire: in `--auth open` mode a relay
-- user need not have an account.
CREATE TABLE inboxes (
    owner TEXT PRIMARY KEY,
    head  INTEGER NOT NULL,  -- highest seq assigned
    acked INTEGER NOT NULL   -- everything <= acked has been delivered and processed
) WITHOUT ROWID;

-- Every relayed message, by inbox and position. `payload` is the frame exactly as sent.
CREATE TABLE messages (
    owner     TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    sender    TEXT NOT NULL,
    client_id TEXT,
    payload   BLOB NOT NULL,
    PRIMARY KEY (owner, seq)
) WITHOUT ROWID;

-- A retried message (same sender, same client id) is stored once.
CREATE UNIQUE INDEX messages_client_id ON messages (sender, client_id)
    WHERE client_id IS NOT NULL;
