-- One stream per user (issue 10): the messages a user received, copies of the messages they
-- sent from any device, and social events, all in one sequence. Owners become integers, one
-- canonical form per user id (see `id.rs`); the Rust half of this migration (`schema.rs`)
-- moves the old inboxes over.

-- Every user's stream in chunks (see `chunk.rs`), replacing `chunks`.
CREATE TABLE stream_chunks (
    id        INTEGER PRIMARY KEY,
    owner     INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    frames    BLOB NOT NULL
);
-- Replay reads a stream in order; the head is the highest last_seq.
CREATE UNIQUE INDEX stream_chunks_position ON stream_chunks (owner, last_seq);

-- Where each conversation is: one row per chunk that holds messages between owner and peer.
-- History pages walk these backwards; the list of conversations reads the newest of each.
CREATE TABLE conversation_chunks (
    owner     INTEGER NOT NULL,
    peer      INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,  -- the conversation's first seq in the chunk
    last_seq  INTEGER NOT NULL,  -- and its last
    received  INTEGER NOT NULL,  -- how many of those came from peer
    chunk     INTEGER NOT NULL,  -- stream_chunks.id
    PRIMARY KEY (owner, peer, first_seq)
) WITHOUT ROWID;

-- How far each user has read each conversation (v2 `Read`), for all of their devices.
CREATE TABLE read_positions (
    owner INTEGER NOT NULL,
    peer  INTEGER NOT NULL,
    seq   INTEGER NOT NULL,
    PRIMARY KEY (owner, peer)
) WITHOUT ROWID;

-- The acknowledged position of each stream, shared by the user's devices (was `inboxes`,
-- whose head is now the stream's highest last_seq).
CREATE TABLE stream_acks (
    owner INTEGER PRIMARY KEY,
    acked INTEGER NOT NULL
);

-- A retried message (same sender, same client id) is stored once; this finds the first
-- copy's seq in the sender's own stream (was `client_ids`, whose seqs were positions in the
-- receiver's inbox; those rows keep their old seq).
CREATE TABLE message_ids (
    sender    INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (sender, client_id)
) WITHOUT ROWID;

CREATE TABLE friend_requests (
    from_id INTEGER NOT NULL REFERENCES users (id),
    to_id   INTEGER NOT NULL REFERENCES users (id),
    message TEXT NOT NULL,
    at      INTEGER NOT NULL,  -- Unix seconds
    PRIMARY KEY (from_id, to_id)
) WITHOUT ROWID;
CREATE INDEX friend_requests_to ON friend_requests (to_id);

CREATE TABLE blocks (
    blocker INTEGER NOT NULL REFERENCES users (id),
    blocked INTEGER NOT NULL REFERENCES users (id),
    PRIMARY KEY (blocker, blocked)
) WITHOUT ROWID;

-- Inboxes of ids that are not canonical ("007", or names a v1 client used in `--auth open`
-- mode): kept as they were, but nothing routes to them or reads them any more.
CREATE TABLE legacy_chunks (
    owner     TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    frames    BLOB NOT NULL
);
