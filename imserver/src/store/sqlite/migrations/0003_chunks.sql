-- Messages move from one row each to one row per inbox per transaction: a chunk holds the
-- frames one commit appended to one inbox, consecutive in `seq`. A busy server commits a
-- few hundred messages to a few dozen inboxes at a time; as single rows they were two
-- B-tree inserts each and most of the server's CPU time per message, as chunks they are
-- written nearly as they will be read.
CREATE TABLE chunks (
    owner     TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    -- Each payload exactly as the sender sent it, framed as on the wire: a 4-byte
    -- big-endian length, then the payload. The i-th frame has seq first_seq + i.
    frames    BLOB NOT NULL
);
CREATE UNIQUE INDEX chunks_inbox ON chunks (owner, last_seq);

-- A retried message (same sender, same client id) is stored once; this finds the first
-- copy's seq (in its receiver's inbox).
CREATE TABLE client_ids (
    sender    TEXT NOT NULL,
    client_id TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (sender, client_id)
) WITHOUT ROWID;

INSERT INTO chunks (owner, first_seq, last_seq, frames)
    SELECT owner, seq, seq, unhex(printf('%08X', length(payload))) || payload
    FROM messages ORDER BY owner, seq;
INSERT INTO client_ids (sender, client_id, seq)
    SELECT sender, client_id, seq FROM messages WHERE client_id IS NOT NULL;
DROP TABLE messages;
