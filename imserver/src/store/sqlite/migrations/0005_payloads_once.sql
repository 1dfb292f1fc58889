-- Every payload once, every stream as positions in the payloads (see `chunk.rs`), and client
-- message ids that grow in runs (see `ids.rs`). The Rust half of this migration
-- (`schema.rs`) moves the chunks and ids of 0004 over.

-- The payloads one transaction appended, each framed as on the wire.
CREATE TABLE batches (
    id     INTEGER PRIMARY KEY,
    frames BLOB NOT NULL,
    chunks INTEGER NOT NULL  -- how many stream_chunks rows point into it
);

-- Every user's stream: per transaction that appended to it, its new entries as the
-- positions of their payloads in that transaction's batch. Keyed by position, so that
-- replay reads a stream in order and the head is the highest last_seq.
CREATE TABLE new_stream_chunks (
    owner     INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    batch     INTEGER NOT NULL,  -- batches.id
    entries   BLOB NOT NULL,     -- per entry, varints: offset from the previous, length, origin
    PRIMARY KEY (owner, last_seq)
) WITHOUT ROWID;

-- A retried message (same sender, same client id) is stored once; see `ids.rs`. Client ids
-- are kept as 4 bytes of length, then the id (so that shorter ids sort first). Each run
-- holds ids a sender sent above all of its earlier ones, between first_id and last_id, with
-- the seq of each one's copy in the sender's stream; a sender's runs never overlap.
CREATE TABLE message_id_runs (
    sender   INTEGER NOT NULL,
    first_id BLOB NOT NULL,
    last_id  BLOB NOT NULL,
    entries  BLOB NOT NULL,
    PRIMARY KEY (sender, first_id)
) WITHOUT ROWID;

-- Any other id, a row each (was `message_ids`).
CREATE TABLE message_id_singles (
    sender INTEGER NOT NULL,
    id     BLOB NOT NULL,
    seq    INTEGER NOT NULL,
    PRIMARY KEY (sender, id)
) WITHOUT ROWID;
